"""``msmt adapt RUN_DIR --data FILE --out RUN_DIR2``: a personal block for every group in FILE.

RUN_DIR2 receives the base files of RUN_DIR once (config, schema, weights, metrics, report) and
``blocks/``: one small safetensors file per group holding only its personal parameters
(``meta.personal`` of the run's config), adapted on all of that group's rows in FILE with
``meta.inner_steps`` steps of ``meta.inner_lr`` with ``meta.inner_backtrack`` (overridable with --steps / --lr /
--backtrack).
"""

from __future__ import annotations

from pathlib import Path

import typer

from msmt.commands import app


@app.command("adapt")
def adapt(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'msmt train' (the shared base)."),
    data: Path = typer.Option(..., "--data", help="CSV or Parquet with labels and the dataset's group column."),
    out: Path = typer.Option(..., "--out", help="Run directory to write: the base once + blocks/ (may equal RUN_DIR)."),
    steps: int = typer.Option(None, "--steps", min=0, help="Inner steps (default: meta.inner_steps of the run)."),
    lr: float = typer.Option(None, "--lr", min=0.0, help="Inner learning rate (default: meta.inner_lr, or the run's Meta-SGD rates)."),
    context: list[Path] = typer.Option(None, "--context", help="Earlier rows (CSV/Parquet, repeatable) used only to build panel history."),
    backtrack: int = typer.Option(None, "--backtrack", min=0, help="Halvings of a step that would raise the support loss (default: meta.inner_backtrack of the run; 0: plain steps)."),
) -> None:
    """Few-shot adaptation: store each group's personal parameters beside the shared base."""
    from msmt.api import adapt_run
    from msmt.commands.paths import check_output_dir
    from msmt.rundir.layout import load_run

    check_output_dir(out)
    summary = adapt_run(load_run(run_dir), data, out, steps, lr, context=context or None, backtrack=backtrack)  # checked against its manifest
    typer.echo(
        f"adapted {summary['groups']} groups ({summary['rows']} rows, {len(summary['personal_parameters'])} personal tensors); "
        f"mean support loss {summary['mean_support_loss_before']:.4f} -> {summary['mean_support_loss_after']:.4f}, "
        f"median block displacement {summary['median_block_displacement']:.4f}\n"
        f"wrote {out}/blocks/"
    )
