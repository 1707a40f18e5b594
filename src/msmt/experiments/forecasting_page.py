"""The forecasting study's page: tables with the naive forecasts beside every model, the target
checks of the forecasting issue computed from the numbers, and the curves' plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from msmt.data.io import atomic_write
from msmt.evaluation.figures import pyplot
from msmt.experiments.cold_start_stats import t_interval
from msmt.experiments.forecasting import MEDIAN_ORACLE, NAIVE, ZERO_SHOT
from msmt.experiments.tables import MISSING, pm
from msmt.spec.task_kinds import higher_is_better

Key = tuple[str, str, str, str, str]  # variant, split, scenario, task, metric


def values(summary: pd.DataFrame) -> dict[Key, tuple[float, float, int]]:
    return {(r.variant, r.split, r.scenario, r.task, r.metric): (r.mean, r.std, r.seeds) for r in summary.itertuples()}


def cell(v: dict, key: Key) -> str:
    if key not in v:
        return MISSING
    mean, std, seeds = v[key]
    return pm(mean, std) if seeds > 1 else f"{mean:.4f}"


def table(v: dict, variants: Sequence[str], split: str, scenario: str, cols: Sequence[tuple[str, str]],
          bounds: Sequence[str] = ("oracle",)) -> list[str]:
    """Markdown rows: one per variant (the best of each column in bold), then the ``bounds``
    (the oracles: never bold) where they have numbers."""
    rows = [*variants, *bounds]
    best = {}
    for task, metric in cols:
        scored = [(v[(r, split, scenario, task, metric)][0], r) for r in variants if (r, split, scenario, task, metric) in v]
        if scored:
            best[(task, metric)] = (max if higher_is_better(metric) else min)(scored)[1]
    lines = ["| model | " + " | ".join(f"{t} {m.upper()}" for t, m in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in rows:
        cells = []
        for task, metric in cols:
            text = cell(v, (r, split, scenario, task, metric))
            cells.append(f"**{text}**" if best.get((task, metric)) == r else text)
        if any(c != MISSING for c in cells):
            lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return lines


def paired_differences(records: pd.DataFrame, scenario: str, rows: Sequence[tuple[str, str, str]],
                       cols: Sequence[tuple[str, str]], title: str = "M2M −", split: str = "test") -> list[str]:
    """A table of one variant − another on ``split``: per (task, metric) the differences paired by training
    seed (the same seed's two runs), their mean and 95% Student-t interval over seeds, * where it excludes 0.
    ``rows``: (label, the first variant, the one subtracted)."""
    test = records[(records["split"] == split) & (records["scenario"] == scenario)]

    def per_seed(variant: str, task: str, metric: str) -> pd.Series:
        part = test[(test["variant"] == variant) & (test["task"] == task) & (test["metric"] == metric)]
        return part.set_index("seed")["value"]

    def cell(diff: pd.Series) -> str:
        mean, low, high, n = t_interval(diff.dropna().to_numpy())
        if n == 0:
            return "–"
        if n == 1:  # no interval from one seed
            return f"{mean:+.4f}"
        return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]" + (" *" if high < 0 or low > 0 else "")

    unit = {"nmae": "NMAE", "auc": "AUC"}
    lines = [f"| {title} | " + " | ".join(f"{t} {unit.get(m, m)}" for t, m in cols) + " |", "|---|" + "---:|" * len(cols)]
    for label, ours, theirs in rows:
        cells = [cell(per_seed(ours, task, metric) - per_seed(theirs, task, metric)) for task, metric in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def best_naive(v: dict, split: str, scenario: str, task: str, metric: str) -> tuple[str, float] | None:
    scored = [(v[(n, split, scenario, task, metric)][0], n) for n in NAIVE if (n, split, scenario, task, metric) in v]
    if not scored:
        return None
    value, name = (max if higher_is_better(metric) else min)(scored)
    return name, value


def check(label: str, ok: bool | None, detail: str) -> str:
    mark = "–" if ok is None else ("✓" if ok else "✗")
    return f"| {mark} | {label} | {detail} |"


def curve_plot(summary: pd.DataFrame, group_variants: dict[str, list[tuple[float, str]]], task: str, metric: str, path: Path) -> None:
    """One panel per curve: the overall test ``task metric`` (mean ± std) against the parameter."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(group_variants), figsize=(4.2 * len(group_variants), 3.2), squeeze=False)
    v = values(summary)
    for ax, (name, points) in zip(axes[0], group_variants.items()):
        series: dict[str, list[tuple[float, float, float]]] = {}
        for x, variant in points:
            key = (variant, "test", "overall", task, metric)
            if key in v:
                series.setdefault(variant.split(" ")[0], []).append((x, v[key][0], v[key][1]))
        for label, pts in series.items():
            pts.sort()
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3, label=label)
        ax.set_xscale("log", base=2)
        xs = sorted({x for x, _ in points})
        ax.set_xticks(xs, [str(int(x)) for x in xs])
        ax.set_xlabel(name)
        ax.set_ylabel(f"{task} {metric} (test, overall)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


WORLD_COLS = [("impressions", "nmae"), ("clicks", "nmae"), ("cost", "nmae"), ("active", "auc")]
COUNTS = ("impressions", "clicks", "cost")
MINOR = "splash"


def world_targets(v: dict, main: Sequence[str]) -> list[str]:
    """The forecasting issue's targets on the simulator world, each with its numbers."""
    lines = ["| | target | measured (test, mean over seeds) |", "|---|---|---|"]
    for task in COUNTS:
        naive = best_naive(v, "test", "overall", task, "nmae")
        m2m, oracle = v.get(("m2m", "test", "overall", task, "nmae")), v.get(("oracle", "test", "overall", task, "nmae"))
        if naive and m2m:
            r = m2m[0] / naive[1]
            lines.append(check(f"{task}: M2M NMAE ≤ 0.95 × best naive", r <= 0.95, f"{m2m[0]:.4f} / {naive[1]:.4f} ({naive[0]}) = {r:.3f}"))
        if oracle and m2m:
            r = m2m[0] / oracle[0]
            lines.append(check(f"{task}: M2M NMAE ≤ 1.10 × oracle", r <= 1.10, f"{m2m[0]:.4f} / {oracle[0]:.4f} = {r:.3f}"
                               + _median_bound(v, "test", task, m2m[0])))
    auc, oracle_auc = v.get(("m2m", "test", "overall", "active", "auc")), v.get(("oracle", "test", "overall", "active", "auc"))
    if auc:
        extra = f" (the oracle's: {oracle_auc[0]:.4f}; M2M at {auc[0] / oracle_auc[0]:.1%} of it)" if oracle_auc else ""
        bounds = [(k[0], x[0]) for k, x in v.items() if k[0].startswith("oracle (history") and k[1:] == ("test", "overall", "active", "auc")]
        if bounds:
            extra += "; from the unit's observed past at best: " + ", ".join(f"{x:.4f} ({name})" for name, x in bounds)
        lines.append(check("active: M2M AUC ≥ 0.93", auc[0] >= 0.93, f"{auc[0]:.4f}{extra}"))
    for task in ("impressions", "cost"):
        naive = best_naive(v, "test", MINOR, task, "nmae")
        m2m = v.get(("m2m", "test", MINOR, task, "nmae"))
        if naive and m2m:
            lines.append(check(f"minor scenario `{MINOR}`, {task}: M2M ≤ best naive", m2m[0] <= naive[1],
                               f"{m2m[0]:.4f} vs {naive[1]:.4f} ({naive[0]})"))
    for k in (3, 7):
        for task in COUNTS:
            naive = best_naive(v, f"new K={k}", "overall", task, "nmae")
            m2m = v.get(("m2m", f"new K={k}", "overall", task, "nmae"))
            if naive and m2m:
                lines.append(check(f"new scenario, K = {k}, {task}: M2M ≤ best naive", m2m[0] <= naive[1],
                                   f"{m2m[0]:.4f} vs {naive[1]:.4f} ({naive[0]})"))
    for task in COUNTS:
        m2m, oracle = v.get(("m2m", "new K=0", "overall", task, "nmae")), v.get(("oracle", "new K=0", "overall", task, "nmae"))
        bound = v.get((ZERO_SHOT, "new K=0", "overall", task, "nmae"))
        if m2m and oracle:
            r = m2m[0] / oracle[0]
            detail = f"{m2m[0]:.4f} / {oracle[0]:.4f} = {r:.3f}"
            if bound:
                detail += (f"; the zero-shot oracle: {bound[0]:.4f} = {bound[0] / oracle[0]:.3f} × oracle, "
                           f"M2M at {m2m[0] / bound[0]:.3f} × it")
            detail += _median_bound(v, "new K=0", task, m2m[0])
            lines.append(check(f"new scenario zero-shot, {task}: M2M ≤ 1.3 × oracle", r <= 1.3, detail))
    others = [m for m in main if m.endswith("+history")]
    for scenario in ("overall", MINOR):
        for task, metric in WORLD_COLS:
            m2m = v.get(("m2m", "test", scenario, task, metric))
            rivals = [(v[(m, "test", scenario, task, metric)][0], m) for m in others if (m, "test", scenario, task, metric) in v]
            if m2m and rivals:
                best = (max if higher_is_better(metric) else min)(rivals)
                ok = m2m[0] >= best[0] if higher_is_better(metric) else m2m[0] <= best[0]
                lines.append(check(f"{scenario}, {task} {metric.upper()}: M2M ahead of every +history model", ok,
                                   f"{m2m[0]:.4f} vs {best[0]:.4f} ({best[1]})"))
    return lines


def _median_bound(v: dict, split: str, task: str, m2m: float) -> str:
    """The target line's note of NMAE's own bound (:data:`MEDIAN_ORACLE`), where the page has it."""
    median = v.get((MEDIAN_ORACLE, split, "overall", task, "nmae"))
    return f"; NMAE's bound, the {MEDIAN_ORACLE}: {median[0]:.4f}, M2M at {m2m / median[0]:.3f} × it" if median else ""


def online_targets(v: dict, main: Sequence[str], tasks: Sequence[str]) -> list[str]:
    lines = ["| | target | measured (test, mean over seeds) |", "|---|---|---|"]
    for task in tasks:
        m2m = v.get(("m2m", "test", "overall", task, "nmae"))
        trailing = v.get(("naive_mean", "test", "overall", task, "nmae"))
        if m2m and trailing:
            lines.append(check(f"{task}: M2M NMAE ≤ trailing mean's", m2m[0] <= trailing[0], f"{m2m[0]:.4f} vs {trailing[0]:.4f}"))
        rivals = [(v[(m, "test", "overall", task, "nmae")][0], m) for m in main if m.endswith("+history") and (m, "test", "overall", task, "nmae") in v]
        if m2m and rivals:
            best = min(rivals)
            lines.append(check(f"{task}: M2M NMAE ≤ every +history model's", m2m[0] <= best[0], f"{m2m[0]:.4f} vs {best[0]:.4f} ({best[1]})"))
    return lines


def naive_checks(v: dict, tasks: Sequence[str]) -> list[str]:
    """Target-table rows: M2M against the best naive forecast of each task (test, overall)."""
    lines = []
    for task in tasks:
        m2m, naive = v.get(("m2m", "test", "overall", task, "nmae")), best_naive(v, "test", "overall", task, "nmae")
        if m2m and naive:
            lines.append(check(f"{task}: M2M NMAE ≤ the best naive forecast's", m2m[0] <= naive[1], f"{m2m[0]:.4f} vs {naive[1]:.4f} ({naive[0]})"))
    return lines


def offset_wins(v: dict, models: Sequence[str], tasks: Sequence[str], offsets: dict[str, str], split: str) -> dict[str, int]:
    """Per offset, in how many (model, task) pairs its overall NMAE on ``split`` is the lowest of the offsets.

    ``offsets``: {offset: the suffix its runs' names carry after the model's, e.g. ``{"auto": "",
    "blend": " offset=blend"}``}; a pair counts only where every offset has a number, and a tie goes to
    the offset listed first."""
    wins = dict.fromkeys(offsets, 0)
    for model in models:
        for task in tasks:
            keys = {o: (model + suffix, split, "overall", task, "nmae") for o, suffix in offsets.items()}
            if all(k in v for k in keys.values()):
                wins[min(offsets, key=lambda o: v[keys[o]][0])] += 1
    return wins


def with_offset_chosen(v: dict, models: Sequence[str], offsets: dict[str, str], chosen: str) -> dict:
    """``v`` with the ``chosen`` offset's rows of ``models`` under the models' own names and every other
    offset's under ``<model> offset=<offset>`` (rows of other variants unchanged)."""
    names = {m + suffix: m if o == chosen else f"{m} offset={o}" for m in models for o, suffix in offsets.items()}
    return {(names.get(name, name), *rest): cell for (name, *rest), cell in v.items()}
