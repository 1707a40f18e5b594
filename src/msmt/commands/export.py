"""``msmt export RUN_DIR --format onnx|torchscript --out FILE``."""

from pathlib import Path

import typer

from msmt.commands import FORMAT_CHOICES, app


def export_run(run_dir: str | Path, fmt: str, out: str | Path, rows: int = 512, tolerance: float = 1e-5):
    """Load a run, export its model, check parity on its first ``rows`` validation rows."""
    from msmt.rundir.layout import load_run
    from msmt.scoring.export import export_model, validation_batch

    run = load_run(run_dir)
    return export_model(run.model, validation_batch(run, rows), fmt, out, tolerance)


@app.command("export")
def export(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'msmt train'."),
    fmt: str = typer.Option(..., "--format", metavar=FORMAT_CHOICES, help="onnx or torchscript."),
    out: Path = typer.Option(..., "--out", help="The file to write (only after the parity check passes)."),
    data: Path = typer.Option(None, "--data", help="Rows for the parity check (default: the run's validation split)."),
    rows: int = typer.Option(512, "--rows", min=6, help="How many rows the parity check scores."),
    tolerance: float = typer.Option(1e-5, "--tolerance", min=0.0, help="Max abs difference allowed vs eager."),
) -> None:
    """Export the model with dynamic batch (and history length); fail unless it matches eager PyTorch."""
    from msmt.commands.paths import check_not_in_run, check_output_file
    from msmt.rundir.layout import load_run
    from msmt.scoring.export import FORMATS, export_model, validation_batch
    from msmt.spec.errors import ConfigError

    if fmt not in FORMATS:
        raise ConfigError(f"--format: unknown format '{fmt}' (expected one of {list(FORMATS)})")
    check_output_file(out, "--out", [("--data", data)])
    check_not_in_run(out, run_dir)
    run = load_run(run_dir)
    if data is not None:
        from msmt.data.io import source_of
        from msmt.data.loading import read_data
        from msmt.data.tensorize import encode_frame

        frame = read_data(data, run.schema.spec)
        sample = frame.iloc[:rows]
        sample.attrs["source"] = source_of(frame)
        batch = encode_frame(sample, run.schema, with_labels=False)
    else:
        batch = validation_batch(run, rows)
    result = export_model(run.model, batch, fmt, out, tolerance)
    typer.echo(
        f"wrote {result.path} ({fmt}; inputs {', '.join(result.inputs)}); parity on {result.rows_checked} rows: "
        f"max abs diff {result.max_abs_diff:.2e} <= {tolerance:g}"
    )
