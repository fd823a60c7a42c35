"""build_datamodule: a fit config's data section, as ``describe`` and the sweeps read it."""

from __future__ import annotations

import pytest

from dcgd.data.config import build_datamodule
from dcgd.data.datamodule import InpaintingDataModule
from dcgd.errors import ConfigError, DataError

DATA = {
    "class_path": "dcgd.data.datamodule.InpaintingDataModule",
    "init_args": {"size": 32, "val_per_bucket": 2},
}


def test_overrides_replace_init_args_and_nested_classes_are_built():
    describer = {"class_path": "dcgd.describe.base.LabelDescriber", "init_args": {}}
    dm = build_datamodule(DATA, {"val_per_bucket": 1, "describer": describer})
    assert isinstance(dm, InpaintingDataModule)
    assert dm.size == 32 and dm.per_bucket["val"] == 1
    assert type(dm.describer).__name__ == "LabelDescriber"
    assert DATA["init_args"] == {"size": 32, "val_per_bucket": 2}  # the caller's dict unchanged


def test_an_invalid_section_is_one_line_starting_with_where():
    with pytest.raises(ConfigError) as err:
        build_datamodule(DATA, {"sizee": 32}, where="the data config of x.yaml is invalid")
    message = str(err.value)
    assert message.startswith("the data config of x.yaml is invalid: ") and "sizee" in message
    assert "\n" not in message


def test_an_error_the_data_module_raises_for_the_user_is_that_error(tmp_path):
    with pytest.raises(DataError, match="does not exist; point data.root"):
        build_datamodule(DATA, {"dataset": "folder", "root": str(tmp_path / "nowhere")})
