"""M2M results (issue 4, item 8): models × seeds, the paper's ablations and its three
sensitivity curves, on any experiment config (the advertiser simulator, online-ads, ...).

Every number comes from ``msmt.experiments.run.run_experiment`` (the same code as ``msmt train``),
one run directory per (variant, seed); the report gives mean ± std over seeds per scenario ×
task next to the oracle (when the data has ``true_<task>`` columns), the ablation table and the
curves for sequence length T, size of S̃ and meta-unit depth K (Zhang et al., WSDM 2022, §4).

    python benchmarks/m2m_results.py EXPERIMENT.yaml --seeds 0 1 2 --out docs/results/m2m.md \\
        --set train.epochs=10 --set "model.m2m.profile_features=[industry,size_tier,region,account_age,budget_level]"

``--set`` overrides apply to every run; ``--m2m-set`` only to M2M runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from msmt.data.io import atomic_write_text  # noqa: E402
from msmt.experiments.bench import run_or_reuse  # noqa: E402
from msmt.experiments.tables import mean_std, pm  # noqa: E402
from msmt.models.m2m import M2MParams  # noqa: E402
from msmt.models.registry import model_names  # noqa: E402
from msmt.rundir.layout import load_run  # noqa: E402
from msmt.spec.config import load_experiment  # noqa: E402
from msmt.spec.task_kinds import rules  # noqa: E402

BASELINES = ["single_task", "shared_bottom", "mmoe", "ple", "star"]
ABLATIONS = {
    "m2m": [],
    "m2m w/o meta tower": ["model.m2m.use_meta_tower=false"],
    "m2m w/o meta attention": ["model.m2m.use_meta_attention=false"],
    "m2m w/o transformer": ["model.m2m.use_transformer=false"],
}
CURVES = {"seq_len": [3, 7, 14, 28], "scenario_dim": [8, 16, 32, 64], "meta_layers": [1, 2, 3]}
NEW_SCENARIO_SUPPORT_DAYS = 3  # the new scenario's first days are the few labelled rows for fine-tuning


def fmt(values: list[float | None]) -> str:
    """``mean ± std`` (sample std) over seeds."""
    return mean_std(values, ddof=1)


class Runner:
    """Run directories of one config, ``RUNS/<label>/seed<seed>``, trained once and reused
    (``msmt.experiments.bench.run_or_reuse``: same overrides, same code)."""

    def __init__(self, config: Path, runs: Path, split: str, common: list[str], m2m_common: list[str]):
        self.config, self.runs, self.split = config, runs, split
        self.common, self.m2m_common = common, m2m_common
        self.kinds = {t.name: t.kind for t in load_experiment(config, common).dataset.tasks}
        self.metrics: dict[tuple[str, int], dict] = {}

    def run_dir(self, label: str, seed: int) -> Path:
        return self.runs / label.replace(" ", "_").replace("/", "") / f"seed{seed}"

    def run(self, label: str, model: str, seed: int, extra: list[str]) -> dict:
        """The metrics block of ``self.split`` (else validation) of one run."""
        key = (label, seed)
        if key not in self.metrics:
            overrides = [*self.common, f"model.name={model}", f"train.seed={seed}", *extra]
            if model == "m2m":
                overrides += self.m2m_common
            log = lambda _: print(f"[m2m_results] {label} seed {seed}", file=sys.stderr)  # noqa: E731
            self.metrics[key] = run_or_reuse(self.config, overrides, self.run_dir(label, seed), log=log)
        m = self.metrics[key]
        return m.get(self.split) or m["val"]


def main_metric(block: dict) -> tuple[str, str]:
    """(task, metric) for the curves: the first count/regression task's SMAPE, else the first AUC."""
    for task, values in block["overall"].items():
        if "smape" in values:
            return task, "smape"
    return next(iter(block["overall"])), "auc"


def scenario_table(labels: list[str], runner: Runner, seeds: list[int], models: dict[str, tuple[str, list[str]]]) -> str:
    first = runner.run(labels[0], *models[labels[0]][:1], seeds[0], models[labels[0]][1])
    scenarios = sorted(first["scenarios"])
    tasks = list(first["overall"])
    lines = []
    for task in tasks:
        for metric in rules(runner.kinds[task]).primary:
            head = "| model | overall | " + " | ".join(scenarios) + " |"
            lines += [f"\n**{task} — {metric}**\n", head, "|---" * (len(scenarios) + 2) + "|"]
            for label in labels:
                model, extra = models[label]
                blocks = [runner.run(label, model, s, extra) for s in seeds]
                cells = [fmt([b["overall"][task][metric] for b in blocks])]
                cells += [fmt([b["scenarios"].get(sc, {}).get(task, {}).get(metric) for b in blocks]) for sc in scenarios]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            if "oracle" in first and task in first["oracle"]["overall"]:
                o = first["oracle"]
                cells = [fmt([o["overall"][task][metric]])] + [
                    fmt([o["scenarios"].get(sc, {}).get(task, {}).get(metric)]) for sc in scenarios
                ]
                lines.append("| oracle (true values) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def new_scenario_section(csv: Path, runner: Runner, seeds: list[int], models: dict, labels: list[str]) -> str:
    """The unseen scenario: zero-shot, then fine-tuned (``msmt.meta.finetune``) on its first days.

    Rows of ``csv`` from its first ``NEW_SCENARIO_SUPPORT_DAYS`` days are the labelled support
    rows; every model is scored on the later rows, zero-shot and after 50 AdamW steps (lr 1e-3) on
    the support rows; M2M also with only its scenario-knowledge path moved (``which="scenario"``).
    """
    from msmt.data.loading import read_data
    from msmt.data.tensorize import encode_frame
    from msmt.evaluation.evaluate import evaluate_model
    from msmt.meta.finetune import finetune

    rows: dict[str, dict[str, list[float]]] = {}
    oracle: dict[str, list[float]] = {}
    tasks: list[str] = []
    n_support = n_query = 0
    for label in labels:
        for seed in seeds:
            runner.run(label, models[label][0], seed, models[label][1])
            run = load_run(runner.run_dir(label, seed))
            frame = read_data(csv, run.schema.spec)
            time_col = run.schema.spec.panel.time if run.schema.spec.panel else "day"
            first = sorted(frame[time_col].unique())[:NEW_SCENARIO_SUPPORT_DAYS]
            frame = frame.reset_index(drop=True)
            encoded = encode_frame(frame, run.schema, with_labels=True)  # whole frame: query rows keep their history
            is_support = frame[time_col].isin(first).to_numpy()
            n_support, n_query = int(is_support.sum()), int((~is_support).sum())
            sup = {k: v[torch.as_tensor(is_support)] for k, v in encoded.items()}
            qry = {k: v[torch.as_tensor(~is_support)] for k, v in encoded.items()}
            qry_frame = frame[~is_support].reset_index(drop=True)
            variants = {"zero-shot": run.model, "fine-tuned (all)": finetune(run.model, sup, steps=50, lr=1e-3, seed=seed)}
            if hasattr(run.model, "scenario_parameters"):
                variants["fine-tuned (S̃ path only)"] = finetune(run.model, sup, steps=50, lr=1e-3, which="scenario", seed=seed)
            for name, model in variants.items():
                block = evaluate_model(model.eval(), qry_frame, qry)
                tasks = [t for t in block["overall"] if "smape" in block["overall"][t]]
                for t in tasks:
                    rows.setdefault(f"{label} — {name}", {}).setdefault(t, []).append(block["overall"][t]["smape"])
                    if "oracle" in block:
                        oracle.setdefault(t, [block["oracle"]["overall"][t]["smape"]])
    lines = [
        f"\n## New scenario (`{csv.name}`, never in training)\n",
        f"Support: its first {NEW_SCENARIO_SUPPORT_DAYS} days ({n_support} rows); scored on the later {n_query} rows; SMAPE, mean ± std over seeds {seeds}.\n",
        "| model — variant | " + " | ".join(tasks) + " |",
        "|---" * (len(tasks) + 1) + "|",
    ]
    for name, per_task in [*rows.items(), ("oracle (true values)", oracle)]:
        lines.append(f"| {name} | " + " | ".join(fmt(per_task.get(t, [])) for t in tasks) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path, help="experiment YAML")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("docs/results/m2m.md"))
    ap.add_argument("--runs", type=Path, default=Path("runs/m2m_results"))
    ap.add_argument("--split", default="test", help="metrics block to report (falls back to val)")
    ap.add_argument("--set", dest="common", action="append", default=[])
    ap.add_argument("--m2m-set", dest="m2m_common", action="append", default=[])
    ap.add_argument("--skip-curves", action="store_true")
    ap.add_argument(
        "--with-history", action="store_true",
        help="also run '<baseline>+history' (model.history_summary=true): baselines that read the panel history too",
    )
    return ap.parse_args(argv)


def model_grid(with_history: bool) -> dict[str, tuple[str, list[str]]]:
    """label -> (registry name, overrides): the baselines (+history), then M2M and its ablations."""
    registered = set(model_names())
    models = {name: (name, []) for name in BASELINES if name in registered}
    if with_history:
        models.update({f"{name}+history": (name, ["model.history_summary=true"]) for name in BASELINES if name != "single_task"})
    models.update({label: ("m2m", extra) for label, extra in ABLATIONS.items()})
    return models


def curve(runner: Runner, name: str, values: list, seeds: list[int], task: str, metric: str, m2m_common: list[str]) -> tuple[list[float], list[float]]:
    """(means, sample stds over seeds) of the overall ``task`` ``metric`` along one sensitivity curve."""
    means, stds = [], []
    default = getattr(M2MParams(), name)
    overridden = any(o.startswith(f"model.m2m.{name}=") for o in m2m_common)
    for v in values:
        label, extra = (f"m2m {name}={v}", [f"model.m2m.{name}={v}"])
        if v == default and not overridden:
            label, extra = "m2m", []  # the default model is this curve point: reuse its runs
        got = [runner.run(label, "m2m", s, extra)["overall"][task][metric] for s in seeds]
        means.append(statistics.mean(got))
        stds.append(statistics.stdev(got) if len(got) > 1 else 0.0)
    return means, stds


def plot_curve(name: str, values: list, means: list[float], stds: list[float], ylabel: str, png: Path) -> None:
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.errorbar(values, means, yerr=stds, marker="o", capsize=3)
    ax.set_xlabel(name)
    ax.set_ylabel(ylabel)
    ax.set_title(f"M2M: {name}")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def sensitivity_section(args, runner: Runner, panel) -> list[str]:
    """The three curves of the paper's §4 (seq_len only with a panel), each a table and a plot."""
    task, metric = main_metric(runner.run("m2m", "m2m", args.seeds[0], []))
    plots = args.out.parent / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    parts = [f"\n## Sensitivity (overall {task} {metric})\n"]
    for name, values in CURVES.items():
        if name == "seq_len" and not panel:
            parts.append("* `seq_len`: skipped — this dataset has no panel history.")
            continue
        if name == "seq_len":
            values = [v for v in values if v <= panel.window]
        means, stds = curve(runner, name, values, args.seeds, task, metric, args.m2m_common)
        png = plots / f"m2m_{name}.png"
        plot_curve(name, values, means, stds, f"{task} {metric}", png)
        row = " | ".join(pm(m, s) for m, s in zip(means, stds))
        parts += [f"\n**{name}** ![{name}](plots/{png.name})\n", "| " + " | ".join(map(str, values)) + " |", "|---" * len(values) + "|", f"| {row} |"]
    return parts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runner = Runner(args.config, args.runs, args.split, args.common, args.m2m_common)
    models = model_grid(args.with_history)
    labels = list(models)
    for label in labels:
        for seed in args.seeds:
            runner.run(label, *models[label][:1], seed, models[label][1])

    panel = load_run(runner.run_dir("m2m", args.seeds[0])).schema.panel
    baseline_labels = [lab for lab in labels if not lab.startswith("m2m ")]
    ablation_labels = [lab for lab in labels if lab.startswith("m2m")]
    if not panel:
        ablation_labels.remove("m2m w/o transformer")  # nothing to ablate without a panel history
    cmd = "python benchmarks/m2m_results.py " + " ".join(argv if argv is not None else sys.argv[1:])
    parts = [
        "# M2M results\n",
        f"Command: `{cmd}`; split `{args.split}`; mean ± std over seeds {args.seeds}.\n",
        "## Models\n", scenario_table(baseline_labels, runner, args.seeds, models),
        "\n## Ablations (Zhang et al., WSDM 2022)\n", scenario_table(ablation_labels, runner, args.seeds, models),
    ]
    if not args.skip_curves:
        parts += sensitivity_section(args, runner, panel)
    new_csv = args.config.parent / "new_scenario.csv"
    if new_csv.exists():
        parts.append(new_scenario_section(new_csv, runner, args.seeds, models, baseline_labels))
    atomic_write_text(args.out, "\n".join(parts) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
