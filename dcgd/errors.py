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
