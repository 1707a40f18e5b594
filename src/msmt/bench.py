"""``msmt bench``: models × datasets × seeds, one leaderboard.

Every cell is an ordinary ``msmt train`` run (``--set model.name=M --set train.seed=S``) in
``OUT/runs/<dataset>/<model>/seed<S>``; a cell whose ``metrics.json`` exists is reused, so an
interrupted or extended grid only runs what is missing. The leaderboard reports the *test*
split when the runs have one (else validation): mean ± std over seeds per scenario × task and
overall, plus the oracle where the data carry ``true_<task>`` columns.

Outputs: ``OUT/leaderboard.csv`` (long form), ``OUT/leaderboard.md``, ``OUT/plots/*.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from msmt.config import load_experiment  # noqa: E402
from msmt.data.io import atomic_write_text, write_table  # noqa: E402
from msmt.errors import ConfigError  # noqa: E402
from msmt.experiment import run_experiment  # noqa: E402

PRIMARY = {"binary": ["auc", "logloss"], "count": ["smape", "nmae"], "regression": ["smape", "nmae"]}
ORACLE = "oracle"


@dataclass(frozen=True)
class Cell:
    dataset: str
    config: Path
    model: str
    seed: int

    def run_dir(self, out: Path) -> Path:
        return out / "runs" / self.dataset / self.model / f"seed{self.seed}"


def resolve_dataset(name: str, configs_dir: Path = Path("configs")) -> Path:
    """A config path, or a name meaning ``configs/<name>.yaml``."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(f"{path}: no such config file")
        return path
    candidate = configs_dir / f"{name}.yaml"
    if not candidate.exists():
        raise ConfigError(f"dataset '{name}': no config {candidate}")
    return candidate


def run_cells(cells: list[Cell], out: Path, overrides: list[str], log=print) -> None:
    for i, cell in enumerate(cells, 1):
        run_dir = cell.run_dir(out)
        if (run_dir / "metrics.json").exists():
            log(f"[{i}/{len(cells)}] {cell.dataset} {cell.model} seed {cell.seed}: done, reused")
            continue
        log(f"[{i}/{len(cells)}] {cell.dataset} {cell.model} seed {cell.seed}: training")
        cfg = load_experiment(
            cell.config, [f"model.name={cell.model}", f"train.seed={cell.seed}", "train.progress=false", *overrides]
        )
        run_experiment(cfg, run_dir)


def _records(cell: Cell, metrics: dict) -> list[dict]:
    split = "test" if "test" in metrics else "val"
    M = metrics[split]
    rows = []
    for source, block in ((cell.model, M), (ORACLE, M.get(ORACLE))):
        if block is None:
            continue
        groups = {"overall": block["overall"], **block["scenarios"]}
        for scen, tasks in groups.items():
            for task, values in tasks.items():
                for metric, value in values.items():
                    if metric == "rows" or value is None:
                        continue
                    rows.append(
                        dict(dataset=cell.dataset, model=source, seed=cell.seed, split=split, scenario=scen,
                             task=task, metric=metric, value=float(value), rows=values["rows"])
                    )
    return rows


def collect(cells: list[Cell], out: Path) -> pd.DataFrame:
    """Long-form per-seed records; the oracle appears once per seed as model ``oracle``."""
    records = []
    for cell in cells:
        metrics = json.loads((cell.run_dir(out) / "metrics.json").read_text())
        records += _records(cell, metrics)
    frame = pd.DataFrame(records)
    oracle = frame["model"] == ORACLE
    return pd.concat([frame[~oracle], frame[oracle].drop_duplicates(["dataset", "seed", "scenario", "task", "metric"])])


def summarise(per_seed: pd.DataFrame) -> pd.DataFrame:
    keys = ["dataset", "split", "model", "scenario", "task", "metric"]
    agg = per_seed.groupby(keys, sort=False).agg(
        mean=("value", "mean"), std=("value", lambda v: float(np.std(v))), seeds=("seed", "nunique"), rows=("rows", "first")
    )
    return agg.reset_index()


def markdown(summary: pd.DataFrame, kinds: dict[str, dict[str, str]], models: list[str]) -> str:
    lines = ["# Leaderboard", "", "Mean ± std over seeds; split = test when the dataset has one. "
             "`oracle` = the data's true expected values used as predictions (the best achievable).", ""]
    for dataset, part in summary.groupby("dataset", sort=False):
        seeds = int(part["seeds"].max())
        lines += [f"## {dataset} ({part['split'].iloc[0]} split, {seeds} seed(s))", ""]
        scenarios = ["overall", *[s for s in part["scenario"].unique() if s != "overall"]]
        for task, kind in kinds[dataset].items():
            for metric in PRIMARY[kind]:
                sub = part[(part["task"] == task) & (part["metric"] == metric)]
                if sub.empty:
                    continue
                lines += [f"**{task} — {metric}**", "", "| model | " + " | ".join(scenarios) + " |",
                          "|" + "---|" * (len(scenarios) + 1)]
                for model in [*models, ORACLE]:
                    msub = sub[sub["model"] == model].set_index("scenario")
                    if msub.empty:
                        continue
                    cells = [f"{msub.loc[s, 'mean']:.4f} ± {msub.loc[s, 'std']:.4f}" if s in msub.index else "–" for s in scenarios]
                    lines.append(f"| {model} | " + " | ".join(cells) + " |")
                lines.append("")
    return "\n".join(lines)


def plot(summary: pd.DataFrame, kinds: dict[str, dict[str, str]], out: Path) -> list[Path]:
    paths = []
    for dataset, part in summary.groupby("dataset", sort=False):
        for task, kind in kinds[dataset].items():
            metric = PRIMARY[kind][0]
            sub = part[(part["task"] == task) & (part["metric"] == metric) & (part["scenario"] == "overall")]
            if sub.empty:
                continue
            fig, ax = plt.subplots(figsize=(6, 3.2))
            ax.bar(sub["model"], sub["mean"], yerr=sub["std"], capsize=4, color="#4c72b0")
            lo = (sub["mean"] - sub["std"]).min()
            hi = (sub["mean"] + sub["std"]).max()
            pad = max((hi - lo) * 0.3, 1e-3)
            ax.set_ylim(lo - pad, hi + pad)
            ax.set_title(f"{dataset}: {task} {metric} (overall, mean ± std)")
            ax.tick_params(axis="x", rotation=20)
            ax.grid(axis="y", alpha=0.3)
            fig.tight_layout()
            path = out / "plots" / f"{dataset}_{task}_{metric}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=100)
            plt.close(fig)
            paths.append(path)
    return paths


def bench(datasets: list[str], models: list[str], seeds: list[int], out: Path, overrides: list[str] | None = None, log=print) -> pd.DataFrame:
    """Run (or reuse) the grid and write the leaderboard files; returns the summary table."""
    overrides = list(overrides or [])
    configs = {Path(d).stem if Path(d).suffix else d: resolve_dataset(d) for d in datasets}
    cells = [Cell(name, cfg, m, s) for name, cfg in configs.items() for m in models for s in seeds]
    run_cells(cells, out, overrides, log)
    summary = summarise(collect(cells, out))
    kinds = {name: {t.name: t.kind.value for t in load_experiment(cfg).dataset.tasks} for name, cfg in configs.items()}
    write_table(summary, out / "leaderboard.csv")
    plots = plot(summary, kinds, out)
    text = markdown(summary, kinds, models)
    text += "\n## Plots\n\n" + "\n".join(f"![{p.stem}](plots/{p.name})" for p in plots) + "\n"
    atomic_write_text(out / "leaderboard.md", text)
    return summary
