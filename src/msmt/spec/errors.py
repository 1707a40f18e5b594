"""Errors that the command line turns into a one-line message and a non-zero exit code."""

from __future__ import annotations


class MsmtError(Exception):
    """A problem the user can fix (bad input, bad config). Exit code 2, no traceback."""

    exit_code = 2


class ConfigError(MsmtError):
    """An experiment or dataset config is invalid; the message names the key."""


class DataError(MsmtError):
    """A data file is invalid; the message names the file, the column and the problem."""

    def __init__(self, file: str, column: str | None, problem: str):
        self.file, self.column, self.problem = str(file), column, problem
        where = f"{self.file}: column '{column}'" if column else self.file
        super().__init__(f"{where}: {problem}")


class RunDirError(MsmtError):
    """A run directory is incomplete, damaged or inconsistent; the message names the file."""


class DivergedError(MsmtError):
    """Training or adaptation produced a non-finite loss, gradient or parameter; nothing of that
    step is kept (the message names where it happened and what to change)."""
