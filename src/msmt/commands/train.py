"""``msmt train CONFIG [--out RUN_DIR] [--set key=value ...]`` and ``msmt train --resume RUN_DIR``.

Under ``torchrun --nproc-per-node N -m msmt train CONFIG`` each process trains on its shard
(see :mod:`msmt.training.distributed`); only rank 0 prints and writes.
"""

import os
from pathlib import Path

import typer

from msmt.commands import SET_METAVAR, app


@app.command("train")
def train(
    config: Path = typer.Argument(None, help="Experiment YAML (dataset inline or by path)."),
    out: Path = typer.Option(None, "--out", help="Run directory (default: runs/<config name>)."),
    overrides: list[str] = typer.Option(None, "--set", metavar=SET_METAVAR, help="Override a config key: --set model.name=mmoe"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar or per-epoch lines."),
    resume: Path = typer.Option(None, "--resume", help="Continue the interrupted run in this directory from its checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run already in --out (its blocks, checkpoint and plots too)."),
) -> None:
    """Train a model and write a run directory (config, schema, weights, metrics, report)."""
    from msmt.commands.paths import check_output_dir
    from msmt.evaluation.report import NAIVE_CAPTION, baseline_table, metrics_table
    from msmt.experiments.run import run_experiment
    from msmt.spec.config import load_experiment
    from msmt.spec.errors import ConfigError

    if resume is not None:
        if config is not None or out is not None or overrides or overwrite:
            raise ConfigError("--resume RUN_DIR takes no CONFIG, --out, --set or --overwrite: the run directory's config.yaml is used")
        if not (resume / "config.yaml").exists():
            raise ConfigError(f"{resume}: not a run directory (no config.yaml)")
        cfg, run_dir = load_experiment(resume / "config.yaml"), resume
    elif config is None:
        raise ConfigError("missing CONFIG (or --resume RUN_DIR)")
    else:
        cfg, run_dir = load_experiment(config, overrides or []), out or Path("runs") / config.stem
        check_output_dir(run_dir)
    if quiet:
        cfg.train.progress = False
    naive: dict = {}
    metrics = run_experiment(cfg, run_dir, resume=resume is not None, overwrite=overwrite, naive=naive)
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports
        return
    point = "" if cfg.train.point_forecast == "mean" else (
        f" — count tasks' smape / nmae / mape of the point forecast (train.point_forecast: {cfg.train.point_forecast})"
    )
    for split, M in metrics.items():
        typer.echo(f"\n{split} ({M['rows']} rows) — model (oracle where known){point}\n")
        typer.echo(metrics_table(M, cfg.dataset.tasks))
        if naive.get(split):  # panel data: the naive forecasts before any fitting, as in report.md
            typer.echo(f"\n{NAIVE_CAPTION}\n\n{baseline_table(M, naive[split], cfg.dataset.tasks)}")
    typer.echo(f"\nrun directory: {run_dir}")
