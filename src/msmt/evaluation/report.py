"""Tables and plots: the per-scenario x per-task table, training curves, ``report.md``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from msmt.data.io import atomic_write, atomic_write_text
from msmt.evaluation.figures import integer_ticks, pyplot
from msmt.spec.task_kinds import rules


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}"


def _columns(M: dict, tasks) -> list[tuple[str, str]]:
    """(task, metric) of each table column: every task's primary measures that ``M`` holds."""
    return [(t.name, m) for t in tasks for m in rules(t).primary if m in M["overall"].get(t.name, {})]


def metrics_table(M: dict, tasks, with_oracle: bool = True) -> str:
    """Markdown table: one row per scenario (and overall), columns task/metric.

    With an oracle block, each cell reads ``model (oracle)``.
    """
    cols = _columns(M, tasks)
    oracle = M.get("oracle") if with_oracle else None
    header = "| scenario | rows | " + " | ".join(f"{t} {m}" for t, m in cols) + " |"
    lines = [header, "|" + "---|" * (len(cols) + 2)]

    def row(name: str, block: dict, oblock: dict | None) -> str:
        rows = max(v["rows"] for v in block.values())
        cells = []
        for t, m in cols:
            if t not in block:  # the task does not exist in this scenario
                cells.append("–")
                continue
            cell = _fmt(block[t].get(m))
            if oblock and t in oblock:
                cell += f" ({_fmt(oblock[t].get(m))})"
            cells.append(cell)
        return f"| {name} | {rows} | " + " | ".join(cells) + " |"

    for scen, block in M["scenarios"].items():
        lines.append(row(str(scen), block, oracle["scenarios"].get(scen) if oracle else None))
    lines.append(row("**overall**", M["overall"], oracle["overall"] if oracle else None))
    return "\n".join(lines)


def plot_history(history: pd.DataFrame, path: Path, tasks=(), best_epoch: int | None = None) -> None:
    """Training and validation loss per epoch: the weighted total, then one panel per task; a
    dashed line marks ``best_epoch``, the epoch whose weights the run keeps."""
    panels = [("weighted total", "train_loss", "val_loss")]
    panels += [(t.name, f"train_{t.name}_loss", f"val_{t.name}_loss") for t in tasks if f"train_{t.name}_loss" in history.columns]
    cols = min(len(panels), 3)
    rows = -(-len(panels) // cols)
    plt = pyplot()
    width, height = 4.2 * cols, 3.0 * rows
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
    # fixed margins in inches instead of tight_layout, which measures every label and costs
    # more than the drawing itself (about 0.4 of ~0.9 s per run on an AVX2 core)
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.2 / width, bottom=0.55 / height, top=1 - 0.65 / height,
                        wspace=0.35, hspace=0.55)
    for ax, (title, train_col, val_col) in zip(axes.flat, panels):
        for col, label in ((train_col, "train"), (val_col, "validation")):
            if col in history.columns:
                ax.plot(history["epoch"], history[col], marker="o", label=label)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"kept: epoch {best_epoch}")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        integer_ticks(ax.xaxis)
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="small")
    fig.suptitle("training curves")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


POINT_NOTES = {  # train.point_forecast -> what the report says its absolute errors score
    "scaled": "c·μ (`train.point_forecast: scaled`: c per task and scenario fitted on the validation split, 1 where a "
              "holdout check rejected them",
    "median": "median Poisson(c·μ) (`train.point_forecast: median`: c per task and scenario fitted on the validation "
              "split; the mean μ where a holdout check rejected it",
}
NAIVE_CAPTION = ("Beside the naive forecasts, before any fitting (`naive_last`: yesterday's value; `naive_mean`: the "
                 "trailing window mean; each row's own history), overall:")


def baseline_table(M: dict, baselines: dict[str, dict], tasks) -> str:
    """Markdown table, overall only: the run's model, each naive forecaster of ``baselines``
    ({name: M block}) and the oracle (where the data has one), columns task/metric as in :func:`metrics_table`."""
    cols = _columns(M, tasks)
    lines = ["| forecaster | " + " | ".join(f"{t} {m}" for t, m in cols) + " |", "|" + "---|" * (len(cols) + 1)]
    rows = [("**this model**", M), *baselines.items()]
    if M.get("oracle"):
        rows.append(("oracle", M["oracle"]))
    for name, block in rows:
        overall = block["overall"]
        lines.append(f"| {name} | " + " | ".join(_fmt(overall.get(t, {}).get(m)) for t, m in cols) + " |")
    return "\n".join(lines)


def write_report(
    run_dir: Path, cfg, metrics: dict, history: pd.DataFrame, best_epoch: int | None = None, baselines: dict | None = None,
    refit_epochs: int | None = None,
) -> None:
    """``run_dir/report.md`` and its training-curves plot; ``baselines``: {split: {forecaster: M block}}
    (:func:`msmt.evaluation.baselines.naive_baselines`), shown under each split's table; ``refit_epochs``:
    the stored model is a refit on training + validation rows (``train.refit``) of that many epochs."""
    tasks = cfg.dataset.tasks
    plot_history(history, run_dir / "plots" / "training_curves.png", tasks, best_epoch)
    kept = f" The weights are those of epoch {best_epoch}, the best by `{cfg.train.monitor}`." if best_epoch else ""
    if refit_epochs:
        kept = (f" Epoch {best_epoch} was the best by `{cfg.train.monitor}`; the stored weights are a refit (`train.refit`): "
                f"a fresh model trained {refit_epochs} epochs on the training and validation rows together "
                "(`refit_history.csv`). The validation metrics are the first fit's, out of sample; the test metrics the refit's.")
    parts = [
        f"# Run report: {cfg.model.name} on {cfg.dataset.name}",
        "",
        f"Seed {cfg.train.seed}, {len(history)} epoch(s) run, monitor `{cfg.train.monitor}`.{kept}",
        "Cells read `model (oracle)` where the data carry true expected values.",
    ]
    if cfg.train.point_forecast in POINT_NOTES:
        parts.append(f"Count tasks' smape, nmae and mape score the point forecast {POINT_NOTES[cfg.train.point_forecast]}, "
                     "`point_forecast.json`); their rmse and deviance the mean μ.")
    for split, M in metrics.items():
        parts += ["", f"## {split} ({M['rows']} rows)", "", metrics_table(M, tasks)]
        if (baselines or {}).get(split):
            parts += ["", NAIVE_CAPTION, "", baseline_table(M, baselines[split], tasks)]
    parts += ["", "## Training curves", "", "Loss per epoch, weighted total and per task; dashed: the epoch kept.", "",
              "![training curves](plots/training_curves.png)", ""]
    atomic_write_text(run_dir / "report.md", "\n".join(parts))
