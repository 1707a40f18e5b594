"""``msmt synth simple``."""

from pathlib import Path

import typer

from msmt.commands import synth_app


@synth_app.command("simple")
def synth_simple(
    out: Path = typer.Option(..., "--out", help="Output folder (created)."),
    rows: int = typer.Option(30000, "--rows", min=100, help="Rows in total (80/10/10 time split)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed, identical files."),
) -> None:
    """A small 4-scenario x 3-task world (click, purchase, dwell) with true_<task> columns."""
    from msmt.commands.paths import check_output_dir
    from msmt.synth.simple import write_simple

    check_output_dir(out)
    write_simple(out, rows=rows, seed=seed)
    typer.echo(f"wrote {out}/{{train,validation,test}}.csv, dataset.yaml, experiment.yaml")


@synth_app.command("advertiser")
def synth_advertiser(
    out: Path = typer.Option(..., "--out", help="Output folder (created)."),
    advertisers: int = typer.Option(300, "--advertisers", min=10, help="Number of advertisers."),
    days: int = typer.Option(60, "--days", min=20, help="Days of data (70/15/15 split by day)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed, identical files."),
) -> None:
    """Advertisers x 6 scenarios (+ a new one) x days: impressions, clicks, cost, active, with true_<task>."""
    import pandas as pd

    from msmt.commands.paths import check_output_dir
    from msmt.evaluation.correlation import plot_correlation_heatmaps
    from msmt.synth.advertiser import TASKS, write_advertiser

    check_output_dir(out)
    write_advertiser(out, advertisers=advertisers, days=days, seed=seed)
    known = pd.concat([pd.read_csv(out / f"{split}.csv") for split in ("train", "validation", "test")], ignore_index=True)
    plot_correlation_heatmaps(
        known, "advertiser_id", "scenario", [f"true_{t}" for t in TASKS], out / "plots" / "scenario_correlation.png",
        title="advertiser simulator: cross-scenario Pearson correlation of true_<task>",
    )
    typer.echo(
        f"wrote {out}/{{train,validation,test,new_scenario}}.csv, dataset.yaml, experiment.yaml, "
        "plots/scenario_correlation.png"
    )

@synth_app.command("funnel")
def synth_funnel(
    out: Path = typer.Option(..., "--out", help="Output folder (created)."),
    rows: int = typer.Option(100000, "--rows", min=100, help="Impressions in total (80/10/10 time split)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed, identical files."),
) -> None:
    """Impression -> click -> conversion (ESMM's world) with the true pCTR and pCVR of every impression."""
    from msmt.commands.paths import check_output_dir
    from msmt.synth.funnel import write_funnel

    check_output_dir(out)
    write_funnel(out, rows=rows, seed=seed)
    typer.echo(f"wrote {out}/{{train,validation,test}}.csv, dataset.yaml, experiment.yaml")
