"""``remove --prompts FILE``: per-image descriptions for a folder run, without CLIP."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dcgd.cli import main
from dcgd.data.prompt_file import read_prompt_file
from dcgd.errors import DataError
from dcgd.sampling.pipeline import DCGDPipeline
from tests.training.tiny import fit_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return fit_tiny_checkpoint(tmp_path_factory.mktemp("prompts-ckpt"))


@pytest.fixture
def folders(tmp_path):
    """Three images (one in a subfolder, one a JPEG) and their masks."""
    rng = np.random.default_rng(0)
    images, masks = tmp_path / "images", tmp_path / "masks"
    hole = np.zeros((24, 30), np.uint8)
    hole[6:15, 8:20] = 255
    for name, suffix in (("a", ".png"), ("sub/b", ".jpg"), ("c", ".png")):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        (masks / name).parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (24, 30, 3), dtype=np.uint8)
        Image.fromarray(pixels).save((images / name).with_suffix(suffix))
        Image.fromarray(hole).save((masks / name).with_suffix(".png"))
    return images, masks


@pytest.fixture
def seen(monkeypatch):
    """The descriptions each pipeline call received, by image id."""
    calls: dict[str, tuple[str, str]] = {}
    original = DCGDPipeline.__call__

    def spy(self, source, mask, t_info, t_mask, ids=None, **kwargs):
        calls[ids[0]] = (t_info[0], t_mask[0])
        return original(self, source, mask, t_info, t_mask, ids=ids, **kwargs)

    monkeypatch.setattr(DCGDPipeline, "__call__", spy)
    return calls


def _remove(checkpoint, folders, out, *extra):
    images, masks = folders
    return main(
        ["remove", "--checkpoint", str(checkpoint), "--image", str(images), "--mask", str(masks),
         "--out", str(out), "--steps", "2", "--prompt-mode", "dual", *extra]
    )  # fmt: skip


CSV = (
    "name,t_info,t_mask\n"
    'a,"a kitchen, bright",a cat\n'
    "sub/b.jpg,,a red car\n"  # with its extension; no t_info: --t-info gives it
)
JSONL = (
    '{"name": "a", "t_info": "a kitchen, bright", "t_mask": "a cat"}\n'
    "\n"
    '{"name": "sub/b", "t_mask": "a red car"}\n'
)


@pytest.mark.parametrize("kind, text", [("csv", CSV), ("jsonl", JSONL)])
def test_each_image_gets_its_own_descriptions_and_the_rest_fall_back(
    checkpoint, folders, tmp_path, seen, capsys, kind, text
):
    prompts = tmp_path / f"prompts.{kind}"
    prompts.write_text(text)
    out = tmp_path / "out"
    assert _remove(checkpoint, folders, out, "--prompts", str(prompts), "--t-info", "a room") == 0
    assert seen == {
        "a": ("a kitchen, bright", "a cat"),
        "sub/b": ("a room", "a red car"),
        "c": ("a room", ""),
    }
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "a.png", "c.png", "sub/b.png"
    ]  # fmt: skip
    # c has no t_mask from anywhere: the warning still says so.
    assert "uses t_mask but none was given" in capsys.readouterr().err


def test_a_file_that_describes_every_image_needs_no_warning(checkpoint, folders, tmp_path, capsys):
    prompts = tmp_path / "all.csv"
    prompts.write_text("name,t_info,t_mask\na,x,y\nsub/b,x,y\nc,x,y\nd,x,y\n")
    assert _remove(checkpoint, folders, tmp_path / "out", "--prompts", str(prompts)) == 0
    err = capsys.readouterr().err
    assert "warning" not in err
    assert "1 name(s) in" in err and "e.g. d;" in err


@pytest.mark.parametrize(
    "text, expected",
    [
        ("file,t_info\na,x\n", "CSV header must name the columns"),
        ("name,t_info,t_mask\na,x,y\na.png,x,z\n", "'a.png' is described twice"),
        ("name,t_info,t_mask\na,x,y,z\n", "line 2: more cells than columns"),
        ("name,t_info,t_mask\n,x,y\n", "line 2: no image name"),
        ('{"name": "a", "t_info": 3}\n', "line 1: t_info must be text"),
        ('{"name": "a"}\n{"name": "b", "t_mask": "x"\n', "line 2: not JSON"),
        ('{"name": "a", "prompt": "x"}\n', "unknown field(s) prompt"),
    ],
)
def test_a_bad_prompt_file_is_refused_in_one_line_before_the_model_runs(
    checkpoint, folders, tmp_path, seen, capsys, text, expected
):
    prompts = tmp_path / "bad.txt"
    prompts.write_text(text)
    out = tmp_path / "out"
    assert _remove(checkpoint, folders, out, "--prompts", str(prompts)) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0]
    assert seen == {} and not list(out.rglob("*.png"))


def test_the_reader_normalises_names_and_whitespace(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('name,t_mask\nx/y.JPG,"  a\n cat "\n')
    assert read_prompt_file(path) == {"x/y": {"t_mask": "a cat"}}
    (tmp_path / "latin1.csv").write_bytes("name,t_mask\na,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_prompt_file(tmp_path / "latin1.csv")
    with pytest.raises(DataError, match="does not exist"):
        read_prompt_file(tmp_path / "nope.csv")
