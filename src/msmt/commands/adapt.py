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
    """Copy a run directory's files (and its blocks/plots folders) into ``dst``, each atomically;
    the block index after the block files (it is what publishes them), the manifest last."""
    dst.mkdir(parents=True, exist_ok=True)
    files = [p for p in sorted(src.rglob("*")) if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts)]
    last = {"index.json": 1, "manifest.json": 2}
    for path in sorted(files, key=lambda p: last.get(p.name, 0)):
        atomic_write(dst / path.relative_to(src), lambda tmp, path=path: shutil.copyfile(path, tmp))


@app.command("adapt")
def adapt(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'msmt train' (the shared base)."),
    data: Path = typer.Option(..., "--data", help="CSV or Parquet with labels and the dataset's group column."),
    out: Path = typer.Option(..., "--out", help="Run directory to write: the base once + blocks/ (may equal RUN_DIR)."),
    steps: int = typer.Option(None, "--steps", min=0, help="Inner steps (default: meta.inner_steps of the run)."),
    lr: float = typer.Option(None, "--lr", min=0.0, help="Inner learning rate (default: meta.inner_lr)."),
) -> None:
    """Few-shot adaptation: store each group's personal parameters beside the shared base."""
    import math

    from msmt.commands.paths import check_output_dir
    from msmt.data.loading import read_data
    from msmt.data.tensorize import encode_frame
    from msmt.data.validate import check_scenarios, require_columns
    from msmt.meta import adapt_groups, split_parameters
    from msmt.rundir.blocks import open_blocks, save_blocks
    from msmt.rundir.layout import WEIGHTS, load_run, write_json
    from msmt.rundir.manifest import sha256_file
    from msmt.spec.errors import ConfigError

    if lr is not None and (not math.isfinite(lr) or lr <= 0):
        raise ConfigError(f"--lr: must be a finite number > 0, got {lr}")
    same = out.exists() and out.resolve() == run_dir.resolve()
    check_output_dir(out)
    if not same and out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: not empty; adapt writes a new run directory (or RUN_DIR itself)")
    run = load_run(run_dir)  # checked against its manifest
    open_blocks(run)  # its current block set too: it is carried into the new one
    spec = run.schema.spec
    if not spec.group:
        raise ConfigError(f"{run_dir / 'config.yaml'}: dataset.group is not set; msmt adapt needs a group column")
    meta = run.config.meta.model_copy()
    if steps is not None:
        meta.inner_steps = steps
    if lr is not None:
        meta.inner_lr = lr
    frame = read_data(data, spec)
    require_columns(frame, [spec.group])
    encoded = encode_frame(frame, run.schema, with_labels=True)
    check_scenarios(frame, run.schema)
    split = split_parameters(run.model, meta)
    blocks, stats = adapt_groups(run.model, split, frame, encoded, spec.group, spec.tasks, meta)  # every block checked finite

    if not same:
        copy_base(run_dir, out)
    save_blocks(out, blocks, sha256_file(run_dir / WEIGHTS))
    summary = {
        **stats.summary(),
        "data": str(data),
        "personal_parameters": list(split.personal),
        "inner_steps": meta.inner_steps,
        "inner_lr": meta.inner_lr,
    }
    write_json(out / "adapt.json", summary)
    typer.echo(
        f"adapted {summary['groups']} groups ({summary['rows']} rows, {len(split.personal)} personal tensors); "
        f"mean support loss {summary['mean_support_loss_before']:.4f} -> {summary['mean_support_loss_after']:.4f}\n"
        f"wrote {out}/blocks/"
    )
