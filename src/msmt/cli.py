"""Entry point: ``msmt ...`` / ``python -m msmt ...``.

Exit codes: 0 success; 2 bad input, bad config or bad usage (one line on stderr, no
traceback; this includes a file msmt cannot read or write); 130 interrupted; anything else is a
bug and shows its traceback.

Usage errors are click's exceptions: the ``click`` package that typer (bounded in
``pyproject.toml``) raises them from. ``tests/commands/test_bad_input.py`` runs usage errors in
a fresh process, so a typer or click release that raises something else fails a test.
"""

from __future__ import annotations

import re
import sys

import click

from msmt.commands import adapt, app, bench, export, history, init, score, serve, synth, train, tune  # noqa: F401  (register commands)
from msmt.runtime.allocator import tune_allocator
from msmt.spec.errors import MsmtError


def _fail(message: str, code: int = 2) -> None:
    print(f"msmt: error: {' '.join(str(message).split())}", file=sys.stderr)  # one line, whatever the message holds
    sys.exit(code)


def usage_message(exc: click.ClickException) -> str:
    """Click's usage error as one line: the command, the problem, where help is."""
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "msmt"
    sentences = [s.strip() for s in re.split(r"(?<=[.?!])\s+", exc.format_message()) if s.strip()]
    message = " ".join(dict.fromkeys(sentences)) or "missing command"  # typer and click may both suggest a name
    where = path.partition(" ")[2]
    text = f"{where}: {message}" if where else message
    return f"{text} (see '{path} --help')" if isinstance(exc, click.UsageError) else text


def os_message(exc: OSError) -> str:
    """A file msmt could not read or write: its name and the system's reason."""
    where = exc.filename if exc.filename is not None else ""
    reason = exc.strerror or str(exc)
    return f"{where}: {reason}" if where else reason


def main(argv: list[str] | None = None) -> None:
    tune_allocator()  # glibc keeps freed tensor memory for the next step (msmt.runtime.allocator)
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="msmt")
    except MsmtError as exc:
        _fail(str(exc), exc.exit_code)
    except click.exceptions.Abort:
        print("msmt: interrupted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as exc:
        _fail(usage_message(exc), 2)
    except OSError as exc:  # a path the user gave: unreadable, unwritable, a folder, /proc...
        _fail(os_message(exc), 2)
    sys.exit(rv if isinstance(rv, int) else 0)
