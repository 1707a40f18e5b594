"""``msmt adapt RUN_DIR --data FILE --out RUN_DIR2``: a personal block for every group in FILE.

RUN_DIR2 receives the base files of RUN_DIR once (config, schema, weights, metrics, report) and
``blocks/``: one small safetensors file per group holding only its personal parameters
(``meta.personal`` of the run's config), adapted on all of that group's rows in FILE with
``meta.inner_steps`` steps of ``meta.inner_lr`` (overridable with --steps / --lr).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from msmt.commands import app
from msmt.data.io import atomic_write


def copy_base(src: Path, dst: Path) -> None:
    """Copy a run directory's files (and its blocks/plots folders) into ``dst``, each atomically."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        atomic_write(dst / path.relative_to(src), lambda tmp, path=path: shutil.copyfile(path, tmp))


@app.command("adapt")
def adapt(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'msmt train' (the shared base)."),
    data: Path = typer.Option(..., "--data", help="CSV or Parquet with labels and the dataset's group column."),
    out: Path = typer.Option(..., "--out", help="Run directory to write: the base once + blocks/ (may equal RUN_DIR)."),
    steps: int = typer.Option(None, "--steps", min=0, help="Inner steps (default: meta.inner_steps of the run)."),
    lr: float = typer.Option(None, "--lr", min=0.0, help="Inner learning rate (default: meta.inner_lr, or the run's Meta-SGD rates)."),
    context: list[Path] = typer.Option(None, "--context", help="Earlier rows (CSV/Parquet, repeatable) used only to build panel history."),
) -> None:
    """Few-shot adaptation: store each group's personal parameters beside the shared base."""
    from msmt.data.loading import read_data
    from msmt.data.tensorize import encode_frame
    from msmt.meta import adapt_groups, split_parameters
    from msmt.rundir.blocks import save_blocks
    from msmt.rundir.layout import load_meta_rates, load_run, write_json
    from msmt.spec.errors import ConfigError

    run = load_run(run_dir)
    spec = run.schema.spec
    if not spec.group:
        raise ConfigError(f"{run_dir / 'config.yaml'}: dataset.group is not set; msmt adapt needs a group column")
    meta = run.config.meta.model_copy()
    if steps is not None:
        meta.inner_steps = steps
    if lr is not None:
        meta.inner_lr = lr
    frame = read_data(data, spec)
    ctx = None
    if context:
        import pandas as pd

        ctx = pd.concat([read_data(c, spec) for c in context], ignore_index=True)
    encoded = encode_frame(frame, run.schema, with_labels=True, context=ctx)
    split = split_parameters(run.model, meta)
    rates = None if lr is not None else load_meta_rates(run_dir)  # Meta-SGD's learned rates, unless --lr
    blocks, stats = adapt_groups(run.model, split, frame, encoded, spec.group, spec.tasks, meta, rates)

    if out.resolve() != run_dir.resolve():
        copy_base(run_dir, out)
    save_blocks(out, blocks)
    summary = {
        **stats.summary(),
        "data": str(data),
        "personal_parameters": list(split.personal),
        "inner_steps": meta.inner_steps,
        "inner_lr": "meta-sgd rates" if rates is not None else meta.inner_lr,
    }
    write_json(out / "adapt.json", summary)
    typer.echo(
        f"adapted {summary['groups']} groups ({summary['rows']} rows, {len(split.personal)} personal tensors); "
        f"mean support loss {summary['mean_support_loss_before']:.4f} -> {summary['mean_support_loss_after']:.4f}, "
        f"median block displacement {summary['median_block_displacement']:.4f}\n"
        f"wrote {out}/blocks/"
    )
