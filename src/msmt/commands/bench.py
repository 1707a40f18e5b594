"""``msmt bench --datasets ... --models ... --seeds N --out DIR``."""

from pathlib import Path

import typer

from msmt.commands import SET_METAVAR, app


@app.command("bench")
def bench(
    datasets: list[str] = typer.Option(..., "--datasets", help="Experiment configs, names of configs/<name>.yaml, or NAME=CONFIG."),
    models: list[str] = typer.Option(None, "--models", help="Registry names, or lightgbm (trees on the same features and splits; needs msmt[bench]). Default: every registered model."),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Seeds 0..N-1 per cell."),
    out: Path = typer.Option(..., "--out", help="Folder for runs/, leaderboard.md/.csv and plots/."),
    overrides: list[str] = typer.Option(None, "--set", metavar=SET_METAVAR, help="Override applied to every cell."),
    model_overrides: list[str] = typer.Option(
        None, "--model-set", metavar="MODEL:KEY=VALUE",
        help="Override applied to that model's cells only (e.g. logistic_regression:model.history_summary=true)."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Cells trained at once (worker processes)."),
) -> None:
    """Run the models × datasets × seeds grid (reusing finished cells) and write a leaderboard."""
    from msmt.commands.paths import check_output_dir
    from msmt.experiments.bench import bench as run_bench
    from msmt.experiments.bench import bench_models, model_cell_overrides, resolve_datasets
    from msmt.models import model_names

    check_output_dir(out)

    chosen = models or model_names()
    unknown = sorted(set(chosen) - set(bench_models()))
    if unknown:
        from msmt.spec.errors import ConfigError

        raise ConfigError(f"--models: unknown model(s) {unknown} (known: {bench_models()})")
    per_model = model_cell_overrides(model_overrides or [], chosen)
    cell_overrides = {name: per_model for name in resolve_datasets(datasets)} if per_model else None
    run_bench(datasets, chosen, list(range(seeds)), out, overrides or [], log=typer.echo, cell_overrides=cell_overrides, jobs=jobs)
    typer.echo(f"wrote {out}/leaderboard.md, leaderboard.csv, not_applicable.csv and plots/")
