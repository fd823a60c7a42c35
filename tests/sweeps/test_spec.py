"""A bad sweep spec fails before any trial, with one line that names what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dcgd.cli import main
from dcgd.errors import ConfigError
from dcgd.sweeps.spec import load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]

BASE = {
    "study": "s",
    "kind": "inference",
    "n_trials": 4,
    "search_space": {"w": {"low": 1.0, "high": 8.0, "log": True}},
    "objective": {"metric": "lpips_alex", "bucket": "0.3-0.4", "direction": "minimize"},
}


def _spec(**changes):
    spec = {**BASE, **changes}
    return {k: v for k, v in spec.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"search_space": {"wee": [1.0, 2.0]}}, "unknown key search_space.wee"),
        ({"search_space": {"w": {"low": 2.0, "high": 2.0}}}, "empty range [2, 2]"),
        ({"search_space": {"w": {"low": 3.0, "high": 1.0}}}, "empty range [3, 1]"),
        ({"search_space": {"w": {"low": 0.0, "high": 1.0, "log": True}}}, "log range needs low"),
        ({"search_space": {"prompt_mode": []}}, "choices is empty"),
        ({"search_space": {"prompt_mode": ["dual", "both"]}}, "['both'] not among"),
        ({"search_space": {}}, "search_space is missing or empty"),
        ({"objective": {"metric": "psnr", "direction": "up"}}, "must be minimize or maximize"),
        ({"objective": {"metric": "psnr"}}, "objective.direction must be"),
        ({"sampler": "annealing"}, "sampler must be one of tpe, grid, random"),
        ({"sampler": "grid"}, "grid sampler needs discrete values"),
        ({"n_trials": 0}, "n_trials must be a positive integer"),
        ({"n_trials": None}, "n_trials is missing"),
        ({"kind": "magic"}, "kind must be one of"),
        ({"serach_space": {}}, "unknown spec key(s) ['serach_space']"),
        ({"pruning": {"pruner": "median", "monitor": "val/loss"}}, "kind: training only"),
        ({"storage": {"heartbeat_interval": 10, "grace_period": 5}}, "must exceed"),
    ],
)
def test_bad_specs_are_refused_with_the_reason(changes, message):
    with pytest.raises(ConfigError) as err:
        parse_spec(_spec(**changes))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_good_spec_parses_with_grid_defaults():
    spec = parse_spec(
        _spec(
            sampler="grid",
            n_trials=None,
            search_space={"prompt_mode": ["none", "dual"], "w": {"low": 1, "high": 3, "step": 1}},
        )
    )
    assert spec.grid() == {"prompt_mode": ["none", "dual"], "w": [1.0, 2.0, 3.0]}
    assert spec.n_trials == 6
    assert spec.objective.describe() == "minimize lpips_alex/0.3-0.4"


def test_weighted_objective_mixes_buckets():
    spec = parse_spec(
        _spec(
            objective={
                "direction": "minimize",
                "terms": [
                    {"metric": "lpips_alex", "bucket": "0.3-0.4"},
                    {"metric": "psnr", "bucket": "all", "weight": -0.01},
                ],
            }
        )
    )
    metrics = {"lpips_alex": {"0.3-0.4": 0.25, "all": 0.2}, "psnr": {"all": 20.0}}
    assert spec.objective.value(metrics) == pytest.approx(0.25 - 0.2)


def _run_bad(tmp_path, capsys, spec: dict, *extra: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    code = main(["sweep", "--config", str(path), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1  # one line, no traceback
    return err


def test_cli_bad_space_exits_2_before_any_study_exists(workdir, capsys):
    err = _run_bad(workdir, capsys, _spec(search_space={"w": {"low": 5.0, "high": 1.0}}))
    assert "search_space.w: empty range" in err
    assert not (workdir / "sweeps").exists()  # no storage touched, no trial
    assert not (workdir / "mlflow.db").exists()


def test_cli_missing_checkpoint_and_missing_spec_are_one_line(workdir, capsys):
    err = _run_bad(workdir, capsys, _spec(), "--checkpoint", "nowhere.ckpt")
    assert "nowhere.ckpt does not exist" in err
    assert not (workdir / "sweeps").exists()
    assert main(["sweep", "--config", "missing.yaml"]) == 2
    assert "sweep spec missing.yaml does not exist" in capsys.readouterr().err


TOY = {
    "study": "s",
    "kind": "function",
    "n_trials": 1,
    "search_space": {"x": [1.0]},
    "objective": {"metric": "value", "direction": "minimize"},
    "function": {"target": "tests.sweeps.toy:objective", "args": {"markers": "m"}},
}


def test_unreachable_tracking_server_fails_before_the_study(workdir, capsys):
    err = _run_bad(workdir, capsys, TOY, "--tracking-uri", "http://127.0.0.1:9")
    assert "cannot reach the MLflow tracking server at http://127.0.0.1:9" in err
    assert not (workdir / "sweeps").exists()
    assert not (workdir / "m").exists()


def test_unreachable_storage_is_a_tracking_error(workdir, capsys):
    storage = "postgresql://nobody:secret@127.0.0.1:9/none"  # port 9: nothing listens
    err = _run_bad(workdir, capsys, TOY, "--storage", storage)
    assert "cannot open the Optuna storage" in err
    assert "secret" not in err  # the password is not printed
    assert not (workdir / "markers").exists()


def test_training_spec_with_an_unknown_config_key_fails_before_training(workdir, capsys):
    spec = {
        "study": "t",
        "kind": "training",
        "n_trials": 2,
        "search_space": {"model.init_args.learning_rat": {"low": 1e-4, "high": 1e-3}},
        "objective": {"metric": "mae", "direction": "minimize"},
        "training": {"config": [str(REPO / "experiments" / "quickstart.yaml")]},
    }
    err = _run_bad(workdir, capsys, spec)
    assert "learning_rat" in err
    assert not (workdir / "sweeps").exists()
    assert not (workdir / "runs").exists()


def test_shipped_specs_parse():
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        spec = load_spec(path)
        assert spec.n_trials >= 1, path
