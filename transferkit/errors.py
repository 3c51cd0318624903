"""Exceptions a user can cause. Each message names the file or value at fault and how to fix it."""

from __future__ import annotations


class TransferkitError(Exception):
    """Base class of every error transferkit raises on purpose."""


class ConfigError(TransferkitError, ValueError):
    """An unknown option or a value out of range."""


class DataError(TransferkitError, ValueError):
    """Input data that cannot be used: missing paths, bad labels, corrupt files, bad columns."""


class UnknownNameError(TransferkitError, KeyError):
    """A name (task, backbone, head) that no registry knows; the message lists the closest valid names."""

    def __str__(self) -> str:  # KeyError would repr() the message and add quotes
        return str(self.args[0]) if self.args else ""


class WeightsError(TransferkitError, ValueError):
    """Weights that are missing, unreadable, or do not fit the model."""


class ArtifactError(TransferkitError, ValueError):
    """An output folder that cannot be loaded."""


class TrainingError(TransferkitError, RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message names the step and the last good checkpoint."""
