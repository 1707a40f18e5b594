"""The command-line app; each command lives in its own module and registers on ``app``."""

import typer
from typer.core import TyperGroup

from msmt import __version__

# `msmt -h` lists the commands in the order a user meets them (`history load` before `serve --history`)
WORKFLOW = ("synth", "init", "train", "evaluate", "predict", "adapt", "export", "history", "serve", "bench", "tune")


class WorkflowGroup(TyperGroup):
    def list_commands(self, ctx) -> list[str]:
        names = super().list_commands(ctx)
        return [n for n in WORKFLOW if n in names] + [n for n in names if n not in WORKFLOW]


app = typer.Typer(
    name="msmt",
    cls=WorkflowGroup,
    help="Multi-scenario, multi-task prediction: synth or init, train, evaluate, predict, adapt, export, serve, bench, tune.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
synth_app = typer.Typer(help="Write synthetic datasets with ground truth (and their configs).", no_args_is_help=True)
app.add_typer(synth_app, name="synth")
history_app = typer.Typer(help="The history store a service reads panel history from (msmt serve --history).", no_args_is_help=True)
app.add_typer(history_app, name="history")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"msmt {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print msmt's version and exit."),
) -> None:
    """Multi-scenario, multi-task prediction: synth or init, train, evaluate, predict, adapt, export, serve, bench, tune."""


# metavars of the options that take one of a few values: the choices, shown in --help
# (tests/commands/test_cli_help.py checks them against the values the code accepts)
PRECISION_CHOICES = "[fp32|bf16]"
FORMAT_CHOICES = "[onnx|torchscript]"
BACKEND_CHOICES = "[torch|onnx]"
SET_METAVAR = "KEY=VALUE"
