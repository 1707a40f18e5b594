"""The command-line app; each command lives in its own module and registers on ``app``."""

import typer

app = typer.Typer(
    name="msmt",
    help="Multi-scenario, multi-task prediction: synth, train, evaluate, predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
synth_app = typer.Typer(help="Write synthetic datasets with ground truth (and their configs).", no_args_is_help=True)
app.add_typer(synth_app, name="synth")
history_app = typer.Typer(help="The history store a service reads panel history from (msmt serve --history).", no_args_is_help=True)
app.add_typer(history_app, name="history")
