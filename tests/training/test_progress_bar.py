"""The training bar says what a step-limited run is doing (issue 16: not "Epoch 0/-2")."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dcgd.training.progress_bar import StepsRichProgressBar, StepsTQDMProgressBar, progress_bar


def _bar_on(max_epochs: int | None) -> StepsRichProgressBar:
    bar = StepsRichProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=max_epochs)  # what Lightning's attach sets
    return bar


def test_a_step_limited_run_shows_no_negative_epoch_count():
    # Lightning sets max_epochs = -1 when only max_steps limits the run.
    assert _bar_on(-1)._get_train_description(0).strip() == "Epoch 0"


def test_an_epoch_limited_run_keeps_lightnings_count():
    assert _bar_on(3)._get_train_description(1).strip() == "Epoch 1/2"


@pytest.mark.parametrize("cls", [StepsRichProgressBar, StepsTQDMProgressBar])
def test_the_mlflow_run_id_tail_is_not_shown(cls, monkeypatch):
    parent = cls.__mro__[1]
    monkeypatch.setattr(parent, "get_metrics", lambda self, t, m: {"v_num": "3ed5", "loss": 0.2})
    assert cls().get_metrics(None, None) == {"loss": 0.2}


def test_the_default_bar_is_one_of_ours():
    assert isinstance(progress_bar(), StepsRichProgressBar | StepsTQDMProgressBar)
