"""``msmt train CONFIG [--out RUN_DIR] [--set key=value ...]``."""

from pathlib import Path

import typer

from msmt.commands import app


@app.command("train")
def train(
    config: Path = typer.Argument(..., help="Experiment YAML (dataset inline or by path)."),
    out: Path = typer.Option(None, "--out", help="Run directory (default: runs/<config name>)."),
    overrides: list[str] = typer.Option(None, "--set", help="Override a config key: --set model.name=mmoe"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar or per-epoch lines."),
) -> None:
    """Train a model and write a run directory (config, schema, weights, metrics, report)."""
    from msmt.config import load_experiment
    from msmt.experiment import run_experiment
    from msmt.report import metrics_table

    cfg = load_experiment(config, overrides or [])
    if quiet:
        cfg.train.progress = False
    run_dir = out or Path("runs") / config.stem
    metrics = run_experiment(cfg, run_dir)
    for split, M in metrics.items():
        typer.echo(f"\n{split} ({M['rows']} rows) — model (oracle where known)\n")
        typer.echo(metrics_table(M, cfg.dataset.tasks))
    typer.echo(f"\nrun directory: {run_dir}")
