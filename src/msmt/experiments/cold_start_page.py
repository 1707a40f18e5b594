"""The cold-start page: targets (issue 18, item 6) checked from the numbers, tables and plots.

Every sentence that says met / missed is computed here from :mod:`msmt.experiments.cold_start_stats`;
nothing on the page is typed by hand.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from msmt.data.io import atomic_write
from msmt.evaluation.figures import pyplot
from msmt.experiments.cold_start import META
from msmt.experiments.cold_start_stats import k_gain

# the measure each state is judged by (task, metric, higher is better)
PRIMARY = {
    "warm users": ("click", "auc", True),
    "new users": ("click", "auc", True),
    "new items": ("click", "auc", True),
    "new advertisers": ("clicks", "nmae", False),
    # pooled over the query rows: a new-scenario advertiser has a few days of rows, rarely both classes
    "new scenario": ("active", "auc_pooled", True),
}
ORDER = ("base", "finetune", *META, "idwarmup", "naive_mean", "naive", "oracle")


def _style(method: str) -> dict:
    """Line style of a method in the plots: the oracle (a bound, not a method) black and dashed."""
    return dict(color="black", linestyle="--") if method == "oracle" else dict(color=f"C{ORDER.index(method)}")


def fmt_interval(mean: float, low: float, high: float, digits: int = 4) -> str:
    """``mean [low, high]``; the mean alone without an interval (one seed), "–" without a mean."""
    if not math.isfinite(mean):
        return "–"
    if not math.isfinite(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _row(frame: pd.DataFrame, **where) -> pd.Series | None:
    part = frame
    for k, v in where.items():
        part = part[part[k] == v]
    return part.iloc[0] if len(part) else None


def best_meta(summ: pd.DataFrame, state: str, k: int, metric: str | None = None) -> str | None:
    """The meta method with the best mean primary measure of ``state`` at ``k`` (``metric``: another
    measure of the primary task, e.g. its ``_pooled`` form)."""
    task, primary, higher = PRIMARY[state]
    metric = metric or primary
    part = summ[(summ["state"] == state) & (summ["K"] == k) & (summ["task"] == task) & (summ["metric"] == metric) & summ["method"].isin(META)]
    if part.empty:
        return None
    return str(part.sort_values("mean", ascending=not higher).iloc[0]["method"])


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**met**" if ok else "**missed**")


def targets(summ: pd.DataFrame, diffs: pd.DataFrame, means: pd.DataFrame) -> list[dict]:
    """[{target, verdict, numbers}] of issue 18's targets (item 6)."""
    out = []
    # the measures per group (users, advertisers: averaged over groups), then the same targets read
    # pooled over all query rows (the leaderboard's measure of new users), labelled as such
    for metric, label in (("auc", ""), ("auc_pooled", " (pooled over all query rows, the leaderboard's measure)")):
        best = best_meta(summ, "new users", 10, metric)
        for ref, margin in (("finetune", 0.005), ("base", 0.01)):
            d = _row(diffs, state="new users", K=10, task="click", metric=metric, method=best, reference=ref) if best else None
            ok = None if d is None or not math.isfinite(d["low"]) else bool(d["mean"] >= margin and d["low"] > 0)
            per = f", {d['groups']:.0f} users/seed" if d is not None and metric == "auc" else ""
            nums = "" if d is None else f"{best} − {ref} = {fmt_interval(d['mean'], d['low'], d['high'])} over {d['seeds']} seeds{per}"
            out.append(dict(target=f"MovieLens new users, click AUC{label} at K = 10: best meta ≥ {ref} + {margin}, interval > 0",
                            verdict=_verdict(ok), numbers=nums))
    for metric, label in (("nmae", ""), ("nmae_pooled", " (pooled over all query rows)")):
        for k in (5, 10):
            out.append(_advertiser_target(summ, k, metric, label))
    ks = sorted(summ.loc[(summ["state"] == "new scenario") & (summ["task"] == "active") & (summ["metric"] == "auc_pooled"), "K"].unique())
    best = best_meta(summ, "new scenario", ks[-1]) if ks else None
    if best is not None and len(ks) > 1:
        mean, low, high, n = k_gain(means, "new scenario", best, "active", "auc_pooled", ks[0], ks[-1])
        ok = None if not math.isfinite(low) else bool(low > 0)
        curve = ", ".join(f"K={k}: {r['mean']:.4f}" for k in ks if (r := _row(summ, state="new scenario", K=k, task="active", metric="auc_pooled", method=best)) is not None)
        out.append(dict(target="new scenario, `active` AUC rises with K (best meta method)", verdict=_verdict(ok),
                        numbers=f"{best}: {curve}; K={ks[-1]} − K={ks[0]} = {fmt_interval(mean, low, high)} over {n} seeds"))
    else:
        out.append(dict(target="new scenario, `active` AUC rises with K", verdict=_verdict(None), numbers=""))
    for state in ("new users", "new items"):
        d = _row(diffs, state=state, K=0, task="click", metric="auc", method="idwarmup", reference="base")
        ok = None if d is None or not math.isfinite(d["low"]) else bool(d["low"] > 0)
        nums = "" if d is None else f"ID warm-up − OOV row = {fmt_interval(d['mean'], d['low'], d['high'])} over {d['seeds']} seeds"
        out.append(dict(target=f"ID warm-up, MovieLens {state}: click AUC at K = 0 above the OOV-row baseline", verdict=_verdict(ok), numbers=nums))
    return out


def _advertiser_target(summ: pd.DataFrame, k: int, metric: str, label: str) -> dict:
    """New advertisers at ``k``: the best meta method's clicks ``metric`` ≤ 0.95 × fine-tuning's and ≤ the best naive forecast's."""
    target = f"new advertisers, clicks NMAE{label} at K = {k}: best meta ≤ 0.95 × fine-tuning and ≤ the naive forecast"
    best = best_meta(summ, "new advertisers", k, metric)
    row = {m: _row(summ, state="new advertisers", K=k, task="clicks", metric=metric, method=m) for m in (best, "finetune", "naive", "naive_mean", "oracle")}
    if best is None or row["finetune"] is None:
        return dict(target=target, verdict=_verdict(None), numbers="")
    naive = min((row[m]["mean"] for m in ("naive", "naive_mean") if row[m] is not None), default=math.nan)
    ratio = row[best]["mean"] / row["finetune"]["mean"]
    ok = bool(ratio <= 0.95 and (not math.isfinite(naive) or row[best]["mean"] <= naive))
    base = row_base["mean"] if (row_base := _row(summ, state="new advertisers", K=k, task="clicks", metric=metric, method="base")) is not None else math.nan
    nums = (f"{best} {row[best]['mean']:.4f}, fine-tuning {row['finetune']['mean']:.4f} (ratio {ratio:.3f}), "
            f"best naive forecast {naive:.4f}, base (no adaptation) {base:.4f}"
            + (f", oracle {row['oracle']['mean']:.4f}" if row["oracle"] is not None else ""))
    return dict(target=target, verdict=_verdict(ok), numbers=nums)


def state_tables(state: str, summ: pd.DataFrame, diffs: pd.DataFrame) -> list[str]:
    """Markdown: the primary measure per method × K, and its paired differences."""
    task, metric, higher = PRIMARY[state]
    part = summ[(summ["state"] == state) & (summ["task"] == task) & (summ["metric"] == metric)]
    if part.empty:
        return [f"No group of this state has a defined {task} {metric.upper()} at any K (too few rows, or one class only)."]
    ks = sorted(part["K"].unique())
    methods = [m for m in ORDER if m in set(part["method"])]
    counted = summ[(summ["state"] == state) & (summ["metric"] == "displacement")]  # every group adapted at K > 0
    groups = ", ".join(f"K={k}: {counted[counted['K'] == k]['groups'].max():.0f}" for k in ks if k and (counted["K"] == k).any())
    unit = "over all query rows of the state" if metric.endswith("_pooled") else "per group, averaged over groups"
    out = [f"**{task} {metric.upper()}** ({unit}; {'higher' if higher else 'lower'} is better); mean over seeds [95% t-interval]; "
           f"groups adapted per seed: {groups or '–'}", "",
           "| method | " + " | ".join(f"K={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for m in methods:
        cells = [_row(part, K=k, method=m) for k in ks]
        out.append(f"| {m} | " + " | ".join("–" if c is None else fmt_interval(c["mean"], c["low"], c["high"]) for c in cells) + " |")
    for ref in ("finetune", "base"):
        d = diffs[(diffs["state"] == state) & (diffs["task"] == task) & (diffs["metric"] == metric) & (diffs["reference"] == ref)]
        if d.empty:
            continue
        out += ["", f"Paired per group, method − {ref}:", "", "| method | " + " | ".join(f"K={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for m in [m for m in methods if m in set(d["method"])]:
            cells = [_row(d, K=k, method=m) for k in ks]
            out.append(f"| {m} | " + " | ".join("–" if c is None else fmt_interval(c["mean"], c["low"], c["high"]) for c in cells) + " |")
    disp = summ[(summ["state"] == state) & (summ["metric"] == "displacement")]
    if not disp.empty:
        out += ["", "Block displacement ‖φ_g − φ‖₂ (mean over groups and seeds):", "", "| method | " + " | ".join(f"K={k}" for k in ks if k) + " |",
                "|---|" + "---|" * len([k for k in ks if k])]
        for m in [m for m in methods if m in set(disp["method"])]:
            out.append(f"| {m} | " + " | ".join(f"{c['mean']:.3f}" if (c := _row(disp, K=k, method=m)) is not None else "–" for k in ks if k) + " |")
    return out


def curve_plot(state: str, summ: pd.DataFrame, diffs: pd.DataFrame, path: Path) -> None:
    """Left: the primary measure against K, one line per method; right: each method minus
    fine-tuning, paired per group. Error bars: the 95% t-interval over seeds."""
    plt = pyplot()

    task, metric, _ = PRIMARY[state]
    pick = lambda f: f[(f["state"] == state) & (f["task"] == task) & (f["metric"] == metric)]  # noqa: E731
    part = pick(summ)
    rel = pick(diffs)
    rel = rel[rel["reference"] == "finetune"] if "reference" in rel else rel
    ks = sorted(part["K"].unique())
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, frame, ylabel in ((axes[0], part, f"query {task} {metric.upper()}"), (axes[1], rel, "method − fine-tuning (paired)")):
        for i, m in enumerate(m for m in ORDER if m in set(frame["method"])):
            rows = frame[frame["method"] == m].set_index("K").reindex(ks)
            x = [j + (i - 4) * 0.03 for j in range(len(ks))]  # dodge, so the bars do not overlap
            err = [(rows["mean"] - rows["low"]).fillna(0).clip(lower=0), (rows["high"] - rows["mean"]).fillna(0).clip(lower=0)]
            ax.errorbar(x, rows["mean"], yerr=err, marker="o", ms=3, capsize=2, label=m, **_style(m))
        ax.set_xticks(range(len(ks)), [str(k) for k in ks])
        ax.set_xlabel("K support rows per group")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[1].axhline(0, color="grey", linewidth=1)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"{state} (95% t-intervals over seeds)")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def scale_note(seeds: int, groups: int, ks, worlds, smoke: bool) -> str:
    """One line saying whether the page is at the targets' scale (≥ 5 seeds, ≥ 100 groups, every K),
    and for which worlds (a world not run has no section, and its targets read "not measured")."""
    from msmt.experiments.cold_start import KS, WORLDS

    at_scale = not smoke and seeds >= 5 and groups >= 100 and set(KS) <= set(ks)
    missing = [w for w in WORLDS if w not in worlds]
    if at_scale and not missing:
        return f"Scale: {seeds} seeds, up to {groups} held-out groups per state and seed, K ∈ {list(ks)}: the targets' scale."
    if at_scale:
        return (f"**The targets' scale ({seeds} seeds, up to {groups} held-out groups per state and seed, K ∈ {list(ks)}) for the "
                f"worlds run, {list(worlds)}; not run: {missing}**, so their sections are absent and their targets read "
                "\"not measured\" (run them with `--worlds`).")
    what = "SMOKE SCALE" if smoke else "REDUCED SCALE"
    return (f"**{what}, not the targets' scale** ({seeds} seeds, up to {groups} groups per state, K ∈ {list(ks)}, worlds {list(worlds)}): "
            "the verdicts below only show that the protocol runs; rerun with the full command.")


def meta_curve_section(curves: pd.DataFrame, path: Path) -> list[str]:
    """Meta-training's learning curves (issue 18, item 1) from :func:`msmt.experiments.cold_start.meta_curves`:
    per world and meta method the query loss after adaptation and its gain over plain fine-tuning from the
    block before meta-training on the same episodes, at the first and last tenth of the episodes (median
    over seeds), and the worst tenth of any seed; the plot of the gain beside it."""
    if curves.empty:
        return []
    gain = curves.assign(gain=curves["query_loss"] - curves["finetune_query_loss"])
    out = ["", "## Meta-training curves", "",
           "Meta-training is a phase after the base's training (not joint). On the training groups' episodes, per tenth "
           "of the episodes: the query loss after each method's adaptation (the training objective: each task's loss over "
           "its label scale) and, on the same episodes, after plain fine-tuning from the block as it was before "
           "meta-training. Their difference (negative: meta-training helps) is free of how hard each episode's groups are. "
           "Median over seeds; the worst tenth of any seed shows a heavy tail. Passes: the support and query rows the "
           "episodes drew, over the world's training rows (median over seeds).",
           "", "| world | method | passes | query loss, first tenth | last tenth | − fine-tuning, first tenth | − fine-tuning, last tenth "
           "| worst tenth (any seed) |", "|---|---|---|---|---|---|---|---|"]
    for (world, method), part in gain.groupby(["world", "method"], sort=False):
        med = part.groupby("episode")[["query_loss", "gain", "passes"]].median().sort_index()
        first, last = med.iloc[0], med.iloc[-1]
        passes = "–" if pd.isna(last["passes"]) else f"{last['passes']:.1f}"
        out.append(f"| {world} | {method} | {passes} | {first['query_loss']:.4f} | {last['query_loss']:.4f} | {first['gain']:+.4f} "
                   f"| {last['gain']:+.4f} | {part['query_loss'].max():.4g} |")
    _curve_figure(gain, path)
    return [*out, "", f"![meta-training curves]({path.parent.name}/{path.name})"]


def _curve_figure(gain: pd.DataFrame, path: Path) -> None:
    plt = pyplot()

    worlds = list(dict.fromkeys(gain["world"]))
    fig, axes = plt.subplots(1, len(worlds), figsize=(4.2 * len(worlds), 3.4), squeeze=False)
    for ax, world in zip(axes[0], worlds):
        part = gain[gain["world"] == world]
        for method in [m for m in META if m in set(part["method"])]:
            med = part[part["method"] == method].groupby("episode")["gain"].median()
            ax.plot(med.index, med.values, marker="o", ms=3, label=method, color=f"C{ORDER.index(method)}")
        ax.axhline(0, color="grey", linewidth=1)
        ax.set_title(world, fontsize=9)
        ax.set_xlabel("episode")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("query loss − fine-tuning's (median over seeds)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("meta-training on the training groups' episodes (below 0: better than fine-tuning)", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def render(header: list[str], summ: pd.DataFrame, diffs: pd.DataFrame, means: pd.DataFrame, out: Path,
           curves: pd.DataFrame | None = None) -> str:
    """The page's Markdown (plots written beside it, under ``img/``); ``curves``: :func:`msmt.experiments.cold_start.meta_curves`."""
    lines = [*header, "", "## Targets (issue 18, item 6)", "", "| target | verdict | numbers |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['verdict']} | {t['numbers']} |" for t in targets(summ, diffs, means)]
    for state in PRIMARY:
        if state not in set(summ["state"]):
            continue
        slug = state.replace(" ", "_")
        plot = out.parent / "img" / f"cold_start_{slug}.png"
        lines += ["", f"## {state}", "", *state_tables(state, summ, diffs)]
        task, metric, _ = PRIMARY[state]
        if ((summ["state"] == state) & (summ["task"] == task) & (summ["metric"] == metric)).any():
            curve_plot(state, summ, diffs, plot)
            lines += ["", f"![{state}]({plot.relative_to(out.parent).as_posix()})"]
    if curves is not None:
        lines += meta_curve_section(curves, out.parent / "img" / "cold_start_meta_curves.png")
    return "\n".join(lines) + "\n"
