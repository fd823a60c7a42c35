"""What several command tests read the same way: a command's help, its one error line."""

from __future__ import annotations

import pytest

from dcgd.cli import main


def help_text(capsys: pytest.CaptureFixture[str], command: str) -> str:
    """``python -m dcgd COMMAND --help`` (which exits 0), white space folded to single spaces."""
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line the command wrote to stderr."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]
