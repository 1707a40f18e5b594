"""Errors that the command line turns into a one-line message and a non-zero exit code."""

from __future__ import annotations


class MsmtError(Exception):
    """A problem the user can fix (bad input, bad config). Exit code 2, no traceback."""

    exit_code = 2


class ConfigError(MsmtError):
    """An experiment or dataset config is invalid; the message names the key."""


class DataError(MsmtError):
    """A data file is invalid; the message names the file, the column and the problem.

    ``row``: the 0-based position of the offending row, when there is one; the message then ends
    with ``in data row {row + 1}`` (a file's count) and the service names ``rows[{row}]`` instead."""

    def __init__(self, file: str, column: str | None, problem: str, row: int | None = None):
        self.file, self.column, self.problem, self.row = str(file), column, problem, row
        where = f"{self.file}: column '{column}'" if column else self.file
        at = f" in data row {row + 1}" if row is not None else ""
        super().__init__(f"{where}: {problem}{at}")

    def __reduce__(self):
        """Pickled by its fields, not its message: a worker process of ``msmt bench --jobs`` or a
        study raises it to the parent, which must rebuild it to answer with its one line."""
        return type(self), (self.file, self.column, self.problem, self.row)


class RunDirError(MsmtError):
    """A run directory is incomplete, damaged or inconsistent; the message names the file."""


class DivergedError(MsmtError):
    """Training or adaptation produced a non-finite loss, gradient or parameter; nothing of that
    step is kept (the message names where it happened and what to change)."""
