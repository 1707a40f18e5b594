"""``msmt evaluate`` and ``msmt predict``: score new data with a finished run."""

from pathlib import Path

import typer

from msmt.commands import app


def _load(run_dir: Path, data: Path, with_labels: bool, context: Path | None = None):
    """The run (checked against its manifest), the rows to score (checked: columns, numbers,
    labels, scenarios by the one rule of :func:`msmt.data.validate.check_scenarios`), encoded."""
    from msmt.data.loading import read_data
    from msmt.data.tensorize import encode_frame
    from msmt.data.validate import check_scenarios
    from msmt.rundir.layout import load_run

    run = load_run(run_dir)
    frame = read_data(data, run.schema.spec)
    ctx = read_data(context, run.schema.spec) if context else None
    encoded = encode_frame(frame, run.schema, with_labels=with_labels, context=ctx)
    check_scenarios(frame, run.schema)
    return run, frame, encoded


CONTEXT_HELP = "Earlier rows (CSV/Parquet) used only to build panel history; never scored."
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
    """Predictions of the run: base + each row's group block when the run has blocks (eager, fp32),
    else the base model, eager or compiled."""
    from msmt.meta.episodes import group_values
    from msmt.rundir.blocks import open_blocks
    from msmt.scoring.predict import predict

    blocks, groups, group = open_blocks(run), None, run.schema.spec.group
    if blocks.orphans:
        typer.echo(f"note: {len(blocks.orphans)} block file(s) in {run.path / 'blocks'} are not in its index (an interrupted msmt adapt); not used", err=True)
    if group and len(blocks):
        if group in frame.columns:
            groups = group_values(frame, group, allow_missing=True)
            if compiled or precision != "fp32":
                typer.echo("note: personal blocks are scored eagerly in fp32 (--precision/--compile apply to the base only)", err=True)
        else:
            typer.echo(f"note: no group column '{group}' in the data: every row is scored by the base", err=True)
    scores = predict(run.model, encoded, batch_size, precision=precision, compiled=compiled, autotune=autotune, groups=groups, blocks=blocks)
    if groups is not None:
        typer.echo(f"{scores.personal_rows} of {len(frame)} rows scored with their group's block, the rest by the base", err=True)
    check_predictions(scores.values, frame)
    return scores.values


def check_predictions(values: dict, frame) -> None:
    """Never a silent NaN or inf in the output: such a row's inputs are beyond what the model scores."""
    import numpy as np

    from msmt.data.io import source_of
    from msmt.spec.errors import DataError

    for task, column in values.items():
        bad = ~np.isfinite(np.asarray(column, dtype=np.float64))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                source_of(frame), None,
                f"{int(bad.sum())} row(s) get a non-finite prediction of '{task}' (first: data row {row + 1}); "
                "their inputs are beyond what the model can score",
            )


@app.command("evaluate")
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'msmt train'."),
    data: Path = typer.Option(..., "--data", help="CSV or Parquet with labels."),
    out: Path = typer.Option(None, "--out", help="Write the metrics JSON here."),
    batch_size: int = typer.Option(8192, "--batch-size", min=1),
    context: Path = typer.Option(None, "--context", help=CONTEXT_HELP),
    precision: str = typer.Option("fp32", "--precision", help=PRECISION_HELP),
    compiled: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
    autotune: bool = typer.Option(False, "--autotune", help=AUTOTUNE_HELP),
) -> None:
    """Per-scenario x per-task metrics on a labelled file (oracle too when true_<task> exist)."""
    from msmt.commands.paths import check_not_in_run, check_output_file
    from msmt.evaluation.evaluate import evaluate_model
    from msmt.evaluation.report import metrics_table
    from msmt.rundir.layout import write_json

    _check_options(precision, compiled, autotune)
    if out:
        check_output_file(out, "--out", [("--data", data), ("--context", context)])
        check_not_in_run(out, run_dir)
    run, frame, encoded = _load(run_dir, data, with_labels=True, context=context)
    preds = _scores(run, frame, encoded, batch_size, precision, compiled, autotune)
    M = evaluate_model(run.model, frame, encoded, batch_size, preds=preds)
    typer.echo(metrics_table(M, run.schema.spec.tasks))
    if out:
        write_json(out, M)
        typer.echo(f"wrote {out}")


@app.command("predict")
def predict(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'msmt train'."),
    data: Path = typer.Option(..., "--data", help="CSV or Parquet; labels not needed."),
    out: Path = typer.Option(..., "--out", help="CSV or Parquet: the input columns plus pred_<task>."),
    batch_size: int = typer.Option(8192, "--batch-size", min=1),
    context: Path = typer.Option(None, "--context", help=CONTEXT_HELP),
    precision: str = typer.Option("fp32", "--precision", help=PRECISION_HELP),
    compiled: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
    autotune: bool = typer.Option(False, "--autotune", help=AUTOTUNE_HELP),
) -> None:
    """Per-row predictions: probability for binary tasks, expected value for count tasks."""
    from msmt.commands.paths import check_not_in_run, check_output_file
    from msmt.data.io import write_table

    _check_options(precision, compiled, autotune)
    check_output_file(out, "--out", [("--data", data), ("--context", context)])
    check_not_in_run(out, run_dir)
    run, frame, encoded = _load(run_dir, data, with_labels=False, context=context)
    preds = _scores(run, frame, encoded, batch_size, precision, compiled, autotune)
    result = frame.copy()
    for task, values in preds.items():
        result[f"pred_{task}"] = values
    write_table(result, out)
    typer.echo(f"wrote {len(result)} rows to {out}")
