"""Hand-set against tuned: what ``msmt tune`` buys each model on a dataset, and what it costs.

For each (dataset config, model):

1. the dataset's search space (``<config stem>.tune.yaml``) restricted to the keys that model
   reads (:func:`model_space`: another model's section, e.g. ``model.mmoe.num_experts`` for PLE,
   and the shared options the model declares it ignores, e.g. ``model.hidden_dims`` for logistic
   regression, are dropped, so no trial is spent on a key without effect);
2. :func:`msmt.experiments.tune.tune` with ``model.name`` set: Optuna's TPE over the validation
   value of ``train.monitor`` (``seed`` 0), writing ``STUDY/best.yaml``;
3. the hand-set config and ``best.yaml`` both trained over the seeds by :func:`msmt.experiments.bench.bench`
   and measured on the *test* split (the split no trial saw), mean ± std over seeds, overall and
   on the cohort of IDs unseen in training where the dataset declares ``dataset.group``.

:func:`render` writes one table per dataset: hand-set and tuned rows per model, the budget of the
search (trials × mean seconds) and the best values. Command: ``benchmarks/tuned.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from msmt.evaluation.metrics import COHORTS
from msmt.experiments.bench import bench, not_applicable, task_kinds
from msmt.experiments.results_page import PAGE_METRIC
from msmt.experiments.tables import pm
from msmt.experiments.tune import TuneResult, default_space, tune
from msmt.models.registry import model_class
from msmt.runtime.host import describe_cpu
from msmt.spec.config import dump_yaml, load_experiment, read_yaml_mapping
from msmt.spec.sections import model_names
from msmt.spec.task_kinds import higher_is_better

COMMON = ["train.num_threads=1"]
UNSEEN = COHORTS[1]  # "∉ train": the cohort of IDs with no training row of their own
NOTHING_TO_SEARCH = ("naive_last", "naive_mean", "naive_weekday", "popularity")  # no optimiser, no layers
REFERENCE = "reference"  # the bench dataset label of the references' runs


@dataclass(frozen=True)
class Pair:
    """One (dataset, model): the search and the test numbers of both configs."""

    dataset: str
    model: str
    study: TuneResult
    summary: pd.DataFrame  # bench summary rows of datasets "hand" and "tuned"


@dataclass(frozen=True)
class References:
    """The models with nothing to search that apply to one dataset, and their test numbers."""

    dataset: str
    models: tuple[str, ...]
    summary: pd.DataFrame  # bench summary rows of dataset :data:`REFERENCE`


def model_space(space: Path, model: str, out: Path) -> Path:
    """``space`` without the keys of other models' sections (``model.<other>.*``) and the shared
    options ``model`` ignores (``MultiTaskModel.ignored_options``), written to ``out``."""
    ignored = {f"model.{option}" for option in model_class(model).ignored_options}
    keep = {}
    for key, decl in read_yaml_mapping(space, "no such search-space file").items():
        section = re.match(r"model\.([a-z0-9_]+)\.", key)
        if (section and section.group(1) in model_names() and section.group(1) != model) or key in ignored:
            continue
        keep[key] = decl
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dump_yaml(keep))
    return out


def pair_not_applicable(config: Path, model: str, extra: Sequence[str] = ()) -> str | None:
    """Why ``model`` cannot run on ``config`` with the settings ``extra`` (None: it can), before any search."""
    return not_applicable(load_experiment(config, [f"model.name={model}", *extra]))


def tuned_pair(name: str, config: Path, model: str, trials: int, seeds: Sequence[int], work: Path,
               log=print, extra: Sequence[str] = ()) -> Pair:
    """Search, then train the hand-set and the tuned config over ``seeds`` (runs under ``work``).
    ``extra``: ``--set`` strings the model needs on this dataset (e.g. ESMM's funnel declaration),
    applied to every trial and to the hand-set runs (the tuned ``best.yaml`` already holds them)."""
    space = model_space(default_space(config), model, work / "spaces" / name / f"{model}.tune.yaml")
    study = tune(config, trials, work / "studies" / name / model, space=space, seed=0,
                 overrides=[f"model.name={model}", *COMMON, *extra], log=log)  # one thread per trial, as per run
    summary = bench([f"hand={config}", f"tuned={study.best_config}"], [model], list(seeds), work / "bench" / name / model, COMMON,
                    log=log, cell_overrides={"hand": {model: tuple(extra)}})
    return Pair(name, model, study, summary)


def reference_runs(name: str, config: Path, seeds: Sequence[int], work: Path, log=print,
                   models: Sequence[str] = NOTHING_TO_SEARCH) -> References:
    """Train the ``models`` that apply to ``config`` (:func:`pair_not_applicable`) over ``seeds``, as the
    pairs are trained (one thread per run; runs under ``work``); none applies: no runs, no rows."""
    applicable = tuple(m for m in models if pair_not_applicable(config, m) is None)
    if not applicable:
        return References(name, (), pd.DataFrame())
    summary = bench([f"{REFERENCE}={config}"], list(applicable), list(seeds), work / "bench" / name / "_references", COMMON, log=log)
    return References(name, applicable, summary)


def _value(summary: pd.DataFrame, dataset: str, model: str, task: str, metric: str, scenario: str = "overall") -> tuple[float, float] | None:
    row = summary[(summary["dataset"] == dataset) & (summary["model"] == model) & (summary["scenario"] == scenario)
                  & (summary["task"] == task) & (summary["metric"] == metric)]
    return (float(row["mean"].iloc[0]), float(row["std"].iloc[0])) if len(row) else None


def _params(study: TuneResult) -> str:
    return ", ".join(f"`{k}={v:.3g}`" if isinstance(v, float) else f"`{k}={v}`" for k, v in study.best_params.items())


def unseen_cohorts(pairs: list[Pair]) -> list[str]:
    """The cohorts of IDs never seen in training (``user_id ∉ train``) that the runs report, sorted."""
    names = set()
    for pair in pairs:
        names |= {str(c) for c in pair.summary["scenario"].unique() if str(c).endswith(UNSEEN)}
    return sorted(names)


def dataset_table(pairs: list[Pair], kinds: dict[str, str], references: References | None = None) -> list[str]:
    """Rows: the references first (nothing to search), then per model hand-set and tuned (test
    metrics overall and on each cohort of IDs unseen in training; the better of the two configs in
    bold), with the search budget."""
    cols = [(task, PAGE_METRIC[kind], scenario) for scenario in ["overall", *unseen_cohorts(pairs)] for task, kind in kinds.items()]
    arrow = {True: "↑", False: "↓"}

    def header(task: str, metric: str, scenario: str) -> str:
        where = "" if scenario == "overall" else f", {scenario}"
        return f"{task} {metric.upper()}{where} {arrow[higher_is_better(metric)]}"

    lines = ["| model | config | " + " | ".join(header(*c) for c in cols) + " | search budget |",
             "|---|---|" + "---|" * (len(cols) + 1)]
    for model in references.models if references else ():
        cells = [pm(*v) if (v := _value(references.summary, REFERENCE, model, *c)) else "–" for c in cols]
        lines.append(f"| {model} | nothing to search | " + " | ".join(cells) + " | – |")
    for pair in pairs:
        values = {which: [_value(pair.summary, which, pair.model, *c) for c in cols] for which in ("hand", "tuned")}
        for which, budget in (("hand", "–"), ("tuned", pair.study.budget())):
            cells = []
            for j, (_, metric, _) in enumerate(cols):
                mine, other = values[which][j], values["tuned" if which == "hand" else "hand"][j]
                if mine is None:
                    cells.append("–")
                    continue
                better = other is None or (mine[0] > other[0] if higher_is_better(metric) else mine[0] < other[0])
                cells.append(f"**{pm(*mine)}**" if better else pm(*mine))
            label = "hand-set" if which == "hand" else "tuned"
            lines.append(f"| {pair.model} | {label} | " + " | ".join(cells) + f" | {budget} |")
    lines.append("")
    lines += [f"* `{p.model}` tuned: {_params(p.study)} (validation {p.study.monitor} {p.study.best_value:.4f})." for p in pairs]
    return [*lines, ""]


def render(pairs: list[Pair], configs: dict[str, Path], seeds: Sequence[int], trials: int, command: str,
           skipped: Mapping[tuple[str, str], str] | None = None, extras: Mapping[tuple[str, str], Sequence[str]] | None = None,
           host: str | None = None, references: Mapping[str, References] | None = None) -> str:
    """The page: the command, how to read it, one table per dataset. ``skipped``: {(dataset, model):
    why the model does not apply}, listed as n/a under the table; ``extras``: {(dataset, model): the
    settings the model needs there}, listed so each row can be rerun; ``host``: the machine the
    searches were timed on (default: this one, :func:`msmt.runtime.host.describe_cpu`);
    ``references``: {dataset: :func:`reference_runs`}, the first rows of its table."""
    skipped, extras, references = dict(skipped or {}), dict(extras or {}), dict(references or {})
    kinds = task_kinds(configs)
    lines = [
        "# Hand-set against tuned hyper-parameters (issue 21)", "",
        f"```bash\n{command}\n```", "",
        f"Per dataset and model: `msmt tune CONFIG --trials {trials} --set model.name=MODEL` over the dataset's search space "
        "(`configs/<name>.tune.yaml`, without the keys of other models' sections), Optuna TPE with median pruning on the "
        "validation value of `train.monitor`; then the hand-set config and the study's `best.yaml` each trained with seeds "
        f"{', '.join(map(str, seeds))} (`msmt bench`, one thread per run) and measured on the **test** split, which no trial "
        "saw: mean ± std over seeds (population std), the better of the two configs in bold; columns marked `∉ train` are the "
        "test rows whose `dataset.group` ID (the user on MovieLens) has no training row, the cold-start number. The budget is the search alone "
        "(finished trials × mean seconds per trial, pruned trials included; one thread per trial, `--jobs` searches at once), "
        f"on {host or describe_cpu()}. The rows `nothing to search` come first: what a practitioner tries before any "
        "network and that has no hyper-parameter to tune (the naive forecasts on panel data: yesterday's value, the trailing "
        "mean, the same weekday; item popularity where the data has an item or group ID), trained over the same seeds; "
        "logistic regression is searched like the networks.", "",
    ]
    for name, config in configs.items():
        mine = [p for p in pairs if p.dataset == name]
        notes = [f"* `{m}` here (both configs): " + ", ".join(f"`--set {o}`" for o in sets)
                 for (d, m), sets in extras.items() if d == name and sets and any(p.model == m for p in mine)]
        notes += [f"* n/a `{m}`: {why}" for (d, m), why in skipped.items() if d == name]
        refs = references.get(name)
        if mine or notes or (refs and refs.models):
            lines += [f"## {name} (`{Path(*Path(config).parts[-2:])}`)", ""]
            lines += dataset_table(mine, kinds[name], refs) if mine or (refs and refs.models) else []
            lines += [*notes, ""] if notes else []
    return "\n".join(lines)
