"""Errors that mean "the input or the environment is wrong", not "kgengine has a bug".

The ``kge`` command prints these on one line (naming the file, line, field or flag)
and exits with code 2; any other exception is a bug and keeps its traceback. Each
class also derives from the built-in type a library caller would expect.
"""
from __future__ import annotations

__all__ = ["KGEError", "ConfigError", "DataError", "ModelFolderError", "SavePathError", "RunLockedError",
           "DeviceError", "MemoryPlanError", "UnknownNameError"]


class KGEError(Exception):
    """Base class: a problem with what the user gave kgengine, or with the machine."""


class ConfigError(KGEError, ValueError):
    """A hyperparameter or option out of range; the message names the field."""


class DataError(KGEError, ValueError):
    """Bad input data; the message names the file and line where it can (re-exported by kgengine.data)."""


class ModelFolderError(KGEError, ValueError):
    """A saved model or checkpoint that is incomplete, corrupt, tampered with or inconsistent."""


class SavePathError(KGEError, ValueError):
    """A save path that cannot be used as asked (a file, non-empty without --overwrite, ...)."""


class RunLockedError(KGEError, RuntimeError):
    """Another live process is training into the same save path."""


class DeviceError(KGEError, RuntimeError):
    """A device was asked for that this machine does not have."""


class MemoryPlanError(KGEError, MemoryError):
    """The run would not fit in memory; the message gives the numbers and the flag to change."""


class UnknownNameError(KGEError, KeyError):
    """An entity or relation name that the vocabulary does not hold."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""
