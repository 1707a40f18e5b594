"""Entry point: ``msmt ...`` / ``python -m msmt ...``.

Exit codes: 0 success; 2 bad input, bad config or bad usage (one line on stderr, no
traceback); 130 interrupted; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import sys

import click

from msmt.commands import adapt, app, bench, export, history, init, score, serve, synth, train  # noqa: F401  (register commands)
from msmt.runtime.allocator import tune_allocator
from msmt.spec.errors import MsmtError


def main(argv: list[str] | None = None) -> None:
    tune_allocator()  # glibc keeps freed tensor memory for the next step (msmt.runtime.allocator)
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="msmt")
    except MsmtError as exc:
        print(f"msmt: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        print("msmt: interrupted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)
