"""The error types meant for users: bad config values, bad data, unusable files.

Every error caused by the user's input derives from `UserError`; `train.py` and the command-line
tools print those as one line (no traceback) and exit with code 1. Anything else is a bug of ours
(or of a library) and keeps its traceback. Each class also derives from the built-in type a
Python caller would catch (`ValueError`, `FileNotFoundError`, ...), so `except ValueError` keeps
working.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of the errors caused by user input; shown as one line by the command-line tools."""


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work; raised before any model or dataset is built."""


class DataError(UserError, ValueError):
    """A dataset, image or mask that cannot be used as it is (names the file or value)."""


class UnreadableFileError(DataError):
    """A file exists but cannot be decoded (what `data.skip_corrupt` may skip)."""

    @classmethod
    def from_error(cls, path: object, what: str, err: BaseException) -> UnreadableFileError:
        """The one line naming the file, what it was read as and the decoder's complaint."""
        return cls(f"Cannot read {what} '{path}': {type(err).__name__}: {err}")


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class MissingDependencyError(UserError, ImportError):
    """An optional package a feature needs is not installed (says what to install)."""


class DownloadError(UserError, OSError):
    """A file (e.g. pretrained weights) could not be downloaded; says where to put it by hand."""


class ModelFileError(UserError, ValueError):
    """A saved model that cannot be loaded or does not fit the task (names the file)."""


class OutputError(UserError, OSError):
    """An output location that cannot be written, or would overwrite something it must not."""


class EvaluationError(UserError, ValueError):
    """An evaluation that has nothing to score (no validation data, no pixels)."""


class BackupError(UserError, RuntimeError):
    """No usable backup where one was required, or a backup that does not fit the run."""


class NonFiniteError(UserError, FloatingPointError):
    """The loss or a weight became NaN/Inf; nothing was saved after it."""
