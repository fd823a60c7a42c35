"""User-facing errors.

Anything a user can cause (a bad file, a wrong config key, a missing dataset root) raises a
``DCGDError`` whose message says what is wrong and what to do. The CLI prints it as one line
and exits non-zero; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class DCGDError(Exception):
    """An error caused by input or environment, with a message meant for the user."""


class ConfigError(DCGDError):
    """A config file, key or value is wrong."""


class DataError(DCGDError):
    """A dataset root, image, mask or file list is missing or unusable."""


class ModelLoadError(DCGDError):
    """A model, tokenizer or checkpoint could not be loaded as the real thing."""


class TrackingError(DCGDError):
    """The experiment tracker (MLflow) or study storage (Optuna) is unreachable or refused."""


def user_error_behind(err: BaseException | None) -> DCGDError | None:
    """The DCGDError that caused ``err``, if any: jsonargparse and Lightning wrap what a class
    raises while it is instantiated, and the user should see the original message."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, DCGDError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def one_line(err: object) -> str:
    """An error message on one line (library messages often span several)."""
    return " ".join(str(err).split())
