"""``msmt evaluate`` and ``msmt predict``: score new data with a finished run."""

from pathlib import Path

import typer

from msmt.commands import PRECISION_CHOICES, app


def _load(run_dir: Path, data: Path, with_labels: bool, context: list[Path] | None = None):
    from msmt.api import encode_for_scoring
    from msmt.rundir.layout import load_run

    run = load_run(run_dir)
    frame, encoded = encode_for_scoring(run, data, context, with_labels=with_labels, note=_note)
    return run, frame, encoded


def _note(message: str) -> None:
    typer.echo(message, err=True)


CONTEXT_HELP = "Earlier rows (CSV/Parquet) used only to build panel history; never scored. Repeat for several files."
PRECISION_HELP = "fp32, or bf16: matmuls in bfloat16 (faster on CPUs with bf16 support; docs/speed.md)."
COMPILE_HELP = "Score through TorchInductor (weights frozen, one graph per batch shape; needs a C++ compiler)."
AUTOTUNE_HELP = (
    "With --compile: let Inductor pick, per matmul, its own C++ GEMM kernels or oneDNN by timing them "
    "(longer compile, faster scoring, most with bf16; docs/speed.md)."
)


def _check_options(precision: str, compiled: bool, autotune: bool) -> None:
    """Before any data is read."""
    from msmt.runtime.device import check_precision
    from msmt.spec.errors import ConfigError

    check_precision(precision, "--precision")
    if autotune and not compiled:
        raise ConfigError("--autotune tunes the compiled graph: add --compile")


def _scores(run, frame, encoded, batch_size: int, precision: str, compiled: bool, autotune: bool = False):
    """Predictions of the run (:func:`msmt.api.score`: personal blocks, eager or compiled)."""
    from msmt.api import score

    return score(run, frame, encoded, batch_size, precision, compiled, autotune, note=_note)


@app.command("evaluate")
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'msmt train'."),
    data: Path = typer.Option(..., "--data", help="CSV or Parquet with labels."),
    out: Path = typer.Option(None, "--out", help="Write the metrics JSON here."),
    batch_size: int = typer.Option(8192, "--batch-size", min=1),
    context: list[Path] = typer.Option(None, "--context", metavar="FILE", help=CONTEXT_HELP),
    precision: str = typer.Option("fp32", "--precision", metavar=PRECISION_CHOICES, help=PRECISION_HELP),
    compiled: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
    autotune: bool = typer.Option(False, "--autotune", help=AUTOTUNE_HELP),
) -> None:
    """Per-scenario x per-task metrics on a labelled file (oracle too when true_<task> exist)."""
    from msmt.commands.paths import check_not_in_run, check_output_file
    from msmt.evaluation.baselines import naive_blocks
    from msmt.evaluation.evaluate import evaluate_model
    from msmt.evaluation.report import NAIVE_CAPTION, baseline_table, metrics_table
    from msmt.rundir.layout import write_json

    _check_options(precision, compiled, autotune)
    if out:
        check_output_file(out, "--out", [("--data", data), *[("--context", c) for c in context or []]])
        check_not_in_run(out, run_dir)
    run, frame, encoded = _load(run_dir, data, with_labels=True, context=context)
    preds = _scores(run, frame, encoded, batch_size, precision, compiled, autotune)
    M = evaluate_model(run.model, frame, encoded, batch_size, preds=preds, point=run.point)
    typer.echo(metrics_table(M, run.schema.spec.tasks))
    baselines = naive_blocks(run.schema, run.config.model, frame, encoded, batch_size)
    if baselines:  # panel data: what a practitioner tries first, on the same rows and history
        typer.echo(f"\n{NAIVE_CAPTION}\n\n{baseline_table(M, baselines, run.schema.spec.tasks)}")
    if out:
        write_json(out, M)
        typer.echo(f"wrote {out}")


@app.command("predict")
def predict(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'msmt train'."),
    data: Path = typer.Option(..., "--data", help="CSV or Parquet; labels not needed."),
    out: Path = typer.Option(..., "--out", help="CSV or Parquet: the input columns plus pred_<task> (and point_<task>, see train.point_forecast)."),
    batch_size: int = typer.Option(8192, "--batch-size", min=1),
    context: list[Path] = typer.Option(None, "--context", metavar="FILE", help=CONTEXT_HELP),
    precision: str = typer.Option("fp32", "--precision", metavar=PRECISION_CHOICES, help=PRECISION_HELP),
    compiled: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
    autotune: bool = typer.Option(False, "--autotune", help=AUTOTUNE_HELP),
) -> None:
    """Per-row predictions: probability for binary tasks, expected value for count tasks."""
    from msmt.api import prediction_columns
    from msmt.commands.paths import check_not_in_run, check_output_file
    from msmt.data.io import write_table

    _check_options(precision, compiled, autotune)
    check_output_file(out, "--out", [("--data", data), *[("--context", c) for c in context or []]])
    check_not_in_run(out, run_dir)
    run, frame, encoded = _load(run_dir, data, with_labels=False, context=context)
    preds = _scores(run, frame, encoded, batch_size, precision, compiled, autotune)
    result = frame.copy()
    for name, values in prediction_columns(run, frame, preds).items():
        result[name] = values
    write_table(result, out)
    typer.echo(f"wrote {len(result)} rows to {out}")
