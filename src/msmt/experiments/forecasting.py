"""The forecasting study: does M2M beat the naive forecast and close on the oracle?

World: the advertiser simulator (``msmt synth advertiser``) at a size and seed of the caller's
choice; every variant below is an ordinary run (``msmt train`` with overrides, reused through
:func:`msmt.experiments.bench.train_missing` when the same code already trained it), one per seed.

* **Variants**: the naive forecasters (``naive_last``, ``naive_mean``, ``naive_weekday``: a scale
  to fit, 2 epochs), logistic regression (the practitioner's GLM: a linear log-rate / logit) and the
  multi-task models with the panel history summary (``+history``: ``model.history_summary=true``;
  like every model on panel data they forecast relative to the trailing mean, ``model.forecast``),
  and M2M as the simulator's experiment config declares it.
* **The cross-section channel** (:func:`cross_section_variants`, ``benchmarks/cross_section.py``):
  every trained variant again with ``panel.cross_section_keys: [scenario]``, M2M also with
  ``model.m2m.scenario_dropout``.
* **The refit** (:func:`refit_variants`, ``benchmarks/refit.py``): a trained variant again with
  ``train.refit``, trained once more on the training and validation rows before the test split.
  Other twins likewise (:func:`twin_variants`; ``benchmarks/weight_average.py``: ``train.ema_epochs``).
* **Ablations** (the paper's): M2M without the meta tower, the meta attention, the Transformer.
* **Curves**: the history window T (``dataset.panel.window``, M2M and the trailing mean),
  the size of S̃ (``model.m2m.scenario_dim``) and the meta units' depth (``model.m2m.meta_layers``).
* **The new scenario** (never in training; ``new_scenario.csv``): scored on its days from
  launch + :data:`NEW_SCENARIO_FROM` on, with its units' history limited to their first K days
  (K = 0: zero-shot, none of its rows as history), K ∈ :data:`NEW_SCENARIO_K`; the naive
  forecasts exist only for K > 0. With :attr:`Study.unseen_correction` w < 1 the M2M runs keep w of
  their correction on its rows with history (``model.unseen_scenario_correction``) and are scored
  with the whole one too (:data:`WHOLE_CORRECTION`).

Every number comes back as a long table (:func:`study_records`): variant, seed, split (``test``
or ``new K=k``), scenario, task, metric, value; :mod:`msmt.experiments.forecasting_page` renders it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from msmt.data.loading import read_data
from msmt.data.tensorize import encode_frame
from msmt.evaluation.evaluate import evaluate_model, scenario_names
from msmt.evaluation.metrics import compute_metrics
from msmt.experiments.bench import read_metrics, train_missing
from msmt.rundir.layout import load_run
from msmt.spec.model_params import M2MParams
from msmt.synth.advertiser import HISTORY_ACTIVE, MEDIAN_PREFIX, ZERO_SHOT_PREFIX, history_oracle_active, median_oracle, zero_shot_oracle

NAIVE = ("naive_last", "naive_mean", "naive_weekday")
HISTORY_MODELS = ("logistic_regression", "single_task", "shared_bottom", "mmoe", "ple")  # the practitioner's GLM first
NEW_SCENARIO_K = (0, 3, 7)
NEW_SCENARIO_FROM = 7  # scored days: launch + 7 onward (the same rows for every K)
COMMON = ("train.progress=false",)
ZERO_SHOT = "oracle (zero-shot)"  # the best K = 0 forecast: knows the world, not the unit's state
HISTORY_ORACLE = "oracle (history{})"  # the best `active` forecast from the unit's observed live days
MEDIAN_ORACLE = "oracle (median)"  # NMAE's bound: the median of the day's outcomes given the oracle's knowledge
WHOLE_CORRECTION = " (w = 1)"  # an M2M variant's new-scenario rows scored with its whole correction (Study.unseen_correction)


@dataclass(frozen=True)
class Variant:
    """One trained configuration: a display name and the overrides that make it."""

    name: str
    overrides: tuple[str, ...]
    group: str = "main"  # main | ablation | curve:<parameter>
    value: float | None = None  # the curve's x

    def run_dir(self, runs: Path, seed: int) -> Path:
        return runs / self.name.replace(" ", "_").replace("/", "-") / f"seed{seed}"


def main_variants() -> list[Variant]:
    out = [Variant(n, (f"model.name={n}", "train.epochs=2")) for n in NAIVE]
    out += [Variant(f"{n}+history", (f"model.name={n}", "model.history_summary=true")) for n in HISTORY_MODELS]
    out.append(Variant("m2m", ("model.name=m2m",)))
    return out


CROSS_SECTION = " +cross-section"  # the variant's name suffix: panel.cross_section_keys: [scenario]


def cross_section_variants(scenario_dropout: float = 0.2) -> list[Variant]:
    """Every trained main variant again with the cross-section channel (``panel.cross_section_keys:
    [scenario]``: per past day the scenario's other advertisers), M2M also with
    ``model.m2m.scenario_dropout`` (its S̃ sometimes built from the "unknown scenario" S, so it
    learns to read a scenario's level off the channel, as it must for a new scenario)."""
    out = []
    for v in main_variants():
        if v.name.startswith("naive_"):
            continue
        extra = ["dataset.panel.cross_section_keys=[scenario]"]
        if v.name == "m2m" and scenario_dropout > 0:
            extra.append(f"model.m2m.scenario_dropout={scenario_dropout}")
        out.append(Variant(v.name + CROSS_SECTION, (*v.overrides, *extra), "cross-section"))
    return out


REFIT = " +refit"  # the variant's name suffix: train.refit (trained again on training + validation rows)


def twin_variants(variants: Sequence[Variant], suffix: str, setting: str, group: str,
                  requires: Sequence[str] = ()) -> list[Variant]:
    """Each trained variant of ``variants`` again with one more override ``setting`` (its name +
    ``suffix``, in ``group``), after those of ``requires`` (settings the option needs, e.g.
    ``model.history_summary=true`` for ``model.history_live``) that the variant does not set already;
    the naive forecasters are left out (they read the history as it is)."""
    return [Variant(v.name + suffix, (*v.overrides, *(r for r in requires if r not in v.overrides), setting), group)
            for v in variants if not v.name.startswith("naive_")]


def refit_variants(variants: Sequence[Variant]) -> list[Variant]:
    """Each trained variant of ``variants`` again with ``train.refit=true`` (after early stopping, a
    fresh model trained on the training and validation rows for the best epoch count and stored;
    :mod:`msmt.training.refit`)."""
    return twin_variants(variants, REFIT, "train.refit=true", "refit")


def add_world_arguments(ap: argparse.ArgumentParser) -> None:
    """The simulator world's and the training seeds' command-line arguments, as every forecasting
    benchmark names them (``benchmarks/forecasting.py``, ``cross_section.py``, ``refit.py``)."""
    ap.add_argument("--advertisers", type=int, default=1200)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--seed", type=int, default=2026, help="the simulator world's seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")


def add_study_arguments(ap: argparse.ArgumentParser, work: Path, out: Path, threads: int = 1) -> None:
    """Where a forecasting benchmark keeps its runs and writes its page, and what every run is given:
    ``--threads``, ``--jobs`` (:attr:`Study.jobs`), ``--work``, ``--out``, ``--set`` (an override for
    every run) and ``--default`` (an override every run starts from, :attr:`Study.defaults`)."""
    ap.add_argument("--threads", type=int, default=threads, help="train.num_threads of every run")
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process (jobs × threads ≤ cores)")
    ap.add_argument("--work", type=Path, default=work)
    ap.add_argument("--out", type=Path, default=out)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="an override for every run (e.g. train.epochs=1 for a smoke run)")
    ap.add_argument("--default", dest="defaults", action="append", default=[], metavar="KEY=VALUE",
                    help="an override every run starts from, which a variant's own setting of the key replaces (e.g. "
                         "train.epochs=60: every model until early stopping, the naive forecasters' 2-epoch scale fit kept)")


def ablation_variants() -> list[Variant]:
    return [
        Variant(f"m2m w/o {what}", ("model.name=m2m", f"model.m2m.{key}=false"), "ablation")
        for what, key in (("meta tower", "use_meta_tower"), ("meta attention", "use_meta_attention"), ("Transformer", "use_transformer"))
    ]


DEFAULT_WINDOW = 14  # the simulator's dataset.panel.window (msmt.synth.advertiser.dataset_config)


def curve_variants(windows: Sequence[int] = (7, 14, 28, 56), scenario_dims: Sequence[int] = (4, 16, 64),
                   meta_layers: Sequence[int] = (1, 2, 3)) -> list[Variant]:
    """The curves' points. A point at the default value (T = 14, S̃ = 16, K = 2) *is* the main
    study's ``m2m`` / ``naive_mean`` run, so it carries that name and is not trained again."""
    defaults = M2MParams()
    out = []
    for w in windows:
        is_default = w == DEFAULT_WINDOW
        out.append(Variant("m2m" if is_default else f"m2m T={w}", ("model.name=m2m", f"dataset.panel.window={w}"), "curve:window", w))
        out.append(Variant("naive_mean" if is_default else f"naive_mean T={w}",
                           ("model.name=naive_mean", "train.epochs=2", f"dataset.panel.window={w}"), "curve:window", w))
    out += [Variant("m2m" if s == defaults.scenario_dim else f"m2m s={s}", ("model.name=m2m", f"model.m2m.scenario_dim={s}"),
                    "curve:scenario_dim", s) for s in scenario_dims]
    out += [Variant("m2m" if k == defaults.meta_layers else f"m2m K={k}", ("model.name=m2m", f"model.m2m.meta_layers={k}"),
                    "curve:meta_layers", k) for k in meta_layers]
    return out


def trained_by_curves(variants: Sequence[Variant]) -> list[Variant]:
    """The variants a curve study trains: those the main study has not (its names are reused)."""
    main = {v.name for v in main_variants()}
    return [v for v in variants if v.name not in main]


@dataclass
class Study:
    """Where a study's runs live and what it trains. ``config``: the experiment YAML."""

    config: Path
    runs: Path
    seeds: Sequence[int]
    variants: list[Variant]
    extra: tuple[str, ...] = ()  # overrides for every run (e.g. train.num_threads=2)
    new_scenario: Path | None = None  # the simulator's new_scenario.csv, when there is one
    log: Callable[[str], None] = field(default=print)
    # overrides every run starts from, before its variant's own: a variant that sets the same key wins
    # (``train.epochs=60`` trains every model until early stopping; the naive forecasters keep their 2 epochs)
    defaults: tuple[str, ...] = ()
    jobs: int = 1  # runs trained at once (worker processes); the runs are the same whatever its value
    # ``model.unseen_scenario_correction`` of every M2M run (1: the whole correction, no override: the runs as before);
    # scoring only, so the runs train the same whatever its value. With w < 1 :func:`study_records` also scores each
    # M2M run's new scenario with w = 1 (the variant's name + :data:`WHOLE_CORRECTION`).
    unseen_correction: float = 1.0

    def overrides(self, variant: Variant, seed: int) -> list[str]:
        unseen = [f"model.unseen_scenario_correction={self.unseen_correction:g}"] if self._shrinks(variant.overrides) else []
        return [*self.defaults, *variant.overrides, *unseen, f"train.seed={seed}", *COMMON, *self.extra]

    def _shrinks(self, overrides: Sequence[str]) -> bool:
        return self.unseen_correction != 1.0 and "model.name=m2m" in overrides

    def train(self) -> dict[tuple[str, int], Path]:
        """Train (or reuse) every variant × seed, seed-major so a stopped study is usable."""
        runs = {(v.name, seed): (self.overrides(v, seed), v.run_dir(self.runs, seed)) for seed in self.seeds for v in self.variants}
        train_missing(self.config, list(runs.values()), self.jobs, self.log)
        return {key: run_dir for key, (_, run_dir) in runs.items()}


def _flatten(block: dict, variant: str, seed: int, split: str, source: str | None = None) -> list[dict]:
    rows = []
    for scenario, tasks in {"overall": block["overall"], **block["scenarios"]}.items():
        for task, values in tasks.items():
            for metric, value in values.items():
                if metric != "rows" and value is not None:
                    rows.append(dict(variant=source or variant, seed=seed, split=split, scenario=scenario, task=task,
                                     metric=metric, value=float(value), rows=values["rows"]))
    return rows


def new_scenario_rows(spec, new_scenario: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[pd.DataFrame]]:
    """(every row of the new scenario, the scored ones: launch + :data:`NEW_SCENARIO_FROM` on, and with
    ``panel.group_keys`` the other scenarios' rows: the dataset's validation and test files)."""
    frame = read_data(new_scenario, spec)
    others = [read_data(p, spec) for p in (spec.files.validation, spec.files.test) if spec.panel.group_keys and p]
    time = spec.panel.time
    scored = frame[frame[time] >= frame[time].min() + NEW_SCENARIO_FROM].reset_index(drop=True)
    scored.attrs["source"] = f"{new_scenario} (days >= launch + {NEW_SCENARIO_FROM})"
    return frame, scored, others


def new_scenario_context(spec, frame: pd.DataFrame, others: list[pd.DataFrame], k: int) -> pd.DataFrame | None:
    """The history the scored rows may read with K = ``k``: the new scenario's first k days and the other scenarios' rows."""
    time = spec.panel.time
    context = pd.concat([*others, frame[frame[time] < frame[time].min() + k]], ignore_index=True)
    return context if len(context) else None


def new_scenario_blocks(run_dir: Path, new_scenario: Path, unseen_correction: float | None = None) -> dict[int, dict]:
    """{K: the ``M`` block of the new scenario's rows from launch + 7 on, history from its first K days}.

    A unit's own history is its (advertiser, scenario) rows: K = 0 leaves every scored row without
    any (zero-shot). With ``panel.group_keys`` the rows of the advertiser's other scenarios
    (the dataset's validation and test files, never a row of the new scenario) are context too,
    as a service's history store would hold them: they feed only the group channel.
    ``unseen_correction``: score with that ``model.unseen_scenario_correction`` instead of the run's
    own (:func:`score_with_unseen_correction`); None: the run as it is."""
    return new_scenario_blocks_by_correction(run_dir, new_scenario, [unseen_correction])[unseen_correction]


def new_scenario_blocks_by_correction(run_dir: Path, new_scenario: Path, corrections: Sequence[float | None]) -> dict:
    """{w: :func:`new_scenario_blocks` with ``unseen_correction=w``} for every w of ``corrections``,
    the run loaded and each K's rows encoded once for all of them."""
    run = load_run(run_dir)
    own = run.model.forecast.unseen_correction if run.model.forecast is not None else None
    spec = run.schema.spec
    frame, scored, others = new_scenario_rows(spec, new_scenario)
    out: dict = {w: {} for w in corrections}
    if scored.empty:  # a test period shorter than NEW_SCENARIO_FROM days
        return out
    for k in NEW_SCENARIO_K:
        data = encode_frame(scored, run.schema, context=new_scenario_context(spec, frame, others, k), own_history=False)
        for w in corrections:
            if w is not None or own is not None:
                score_with_unseen_correction(run.model, own if w is None else w, run_dir)
            out[w][k] = evaluate_model(run.model, scored, data, point=run.point)
    return out


def score_with_unseen_correction(model, w: float, where: Path | str) -> None:
    """Make ``model`` keep ``w`` of its correction on the rows of a scenario training never saw that
    have their own history (``model.unseen_scenario_correction``,
    :class:`msmt.layers.naive.ForecastOffset`). It only acts where no training row is, so a run
    trained with any value scores with this one as if trained with it. ValueError naming ``where``
    when ``w`` is outside [0, 1] or the model has no forecast offset."""
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"{where}: unseen_correction {w:g} is outside [0, 1]")
    if getattr(model, "forecast", None) is None:
        raise ValueError(f"{where}: the model has no forecast offset (model.forecast), so no correction to shrink")
    model.forecast.unseen_correction = float(w)


def _bound_on_rows(spec, frame: pd.DataFrame, bound: pd.DataFrame, columns: list[str], where: str) -> pd.DataFrame:
    """``bound`` (the simulator's per-row forecasts, keyed by the panel keys and ``day``) aligned 1:1 onto
    ``frame``'s rows; a ValueError naming ``where`` and the first column some row of ``frame`` lacks."""
    keys = [*spec.panel.keys, spec.panel.time]
    bound = bound.assign(day=bound["day"].astype(frame[spec.panel.time].dtype))
    rows = frame[keys].merge(bound, on=keys, how="left", validate="1:1")
    missing = [c for c in columns if rows[c].isna().any()]
    if missing:
        raise ValueError(f"{where} does not hold ({missing[0]})")
    return rows


def zero_shot_records(spec, new_scenario: Path, advertisers: int, days: int, seed: int) -> pd.DataFrame:
    """Long-form records (variant :data:`ZERO_SHOT`, split ``new K=0``) of the simulator's zero-shot
    oracle (:func:`msmt.synth.advertiser.zero_shot_oracle` of the world ``advertisers × days, seed``)
    on the new scenario's scored rows: the bound of any forecast made before the scenario's units
    have rows of their own, as the oracle is the bound of one made with them."""
    _, scored, _ = new_scenario_rows(spec, new_scenario)
    world = f"advertisers={advertisers} days={days} seed={seed}"
    rows = _bound_on_rows(spec, scored, zero_shot_oracle(advertisers, days, seed),
                          [f"{ZERO_SHOT_PREFIX}{t}" for t in spec.task_names], f"{new_scenario}: rows the world {world}")
    labels = {t.name: scored[t.label].to_numpy(float) for t in spec.tasks}
    preds = {t: rows[f"{ZERO_SHOT_PREFIX}{t}"].to_numpy(float) for t in spec.task_names}
    block = compute_metrics(spec.tasks, labels, preds, scenario_names(scored, spec.scenario.column))
    return pd.DataFrame(_flatten(block, ZERO_SHOT, seed, "new K=0"))


def history_oracle_name(window: int | None) -> str:
    return HISTORY_ORACLE.format(f", T={window}" if window else ", all days")


def history_oracle_records(spec, advertisers: int, days: int, seed: int, windows=(None,)) -> pd.DataFrame:
    """Long-form records (split ``test``) of the simulator's ``active`` forecast from each unit's
    observed live days (:func:`msmt.synth.advertiser.history_oracle_active`), one variant per
    window (None: every day since the first): the bound of a model that reads that history."""
    test = read_data(spec.files.test, spec)
    task = spec.task("active")
    world = f"advertisers={advertisers} days={days} seed={seed}"
    records = []
    for window in windows:
        rows = _bound_on_rows(spec, test, history_oracle_active(advertisers, days, seed, window), [HISTORY_ACTIVE],
                              f"{spec.files.test}: rows the world {world}")
        block = compute_metrics([task], {task.name: test[task.label].to_numpy(float)}, {task.name: rows[HISTORY_ACTIVE].to_numpy(float)},
                                scenario_names(test, spec.scenario.column))
        records += _flatten(block, history_oracle_name(window), seed, "test")
    return pd.DataFrame(records)


def median_oracle_records(spec, advertisers: int, days: int, seed: int, new_scenario: Path | None = None) -> pd.DataFrame:
    """Long-form records (variant :data:`MEDIAN_ORACLE`) of the simulator's median forecast of each
    count (:func:`msmt.synth.advertiser.median_oracle`): on the test split, and with ``new_scenario``
    on its scored rows under every ``new K=k`` split (the same rows whatever K). It knows what the
    oracle knows; on NMAE it is the bound, which the oracle's expected value is not."""
    world = f"advertisers={advertisers} days={days} seed={seed}"
    bound = median_oracle(advertisers, days, seed)
    counts = [t for t in spec.tasks if f"{MEDIAN_PREFIX}{t.name}" in bound]
    parts = [(read_data(spec.files.test, spec), spec.files.test, ("test",))]
    if new_scenario is not None:
        parts.append((new_scenario_rows(spec, new_scenario)[1], new_scenario, tuple(f"new K={k}" for k in NEW_SCENARIO_K)))
    records = []
    for frame, path, splits in parts:
        rows = _bound_on_rows(spec, frame, bound, [f"{MEDIAN_PREFIX}{t.name}" for t in counts], f"{path}: rows the world {world}")
        block = compute_metrics(counts, {t.name: frame[t.label].to_numpy(float) for t in counts},
                                {t.name: rows[f"{MEDIAN_PREFIX}{t.name}"].to_numpy(float) for t in counts},
                                scenario_names(frame, spec.scenario.column))
        for split in splits:
            records += _flatten(block, MEDIAN_ORACLE, seed, split)
    return pd.DataFrame(records)


def study_records(study: Study, runs: dict[tuple[str, int], Path]) -> pd.DataFrame:
    """Long-form records of every run: its test split (and its validation split, ``val``: the data
    a configuration is chosen on), and the new scenario with K days of history."""
    records = []
    for (name, seed), run_dir in runs.items():
        metrics = read_metrics(run_dir)
        split = "test" if "test" in metrics else "val"
        records += _flatten(metrics[split], name, seed, split)
        if split == "test" and "val" in metrics:
            records += _flatten(metrics["val"], name, seed, "val")
        if seed == study.seeds[0] and "oracle" in metrics[split]:
            records += _flatten(metrics[split]["oracle"], name, seed, split, source="oracle")
        base = name.split(" +")[0]  # a twin (" +cross-section", " +ema3"...) is scored where its variant is
        if study.new_scenario is not None and (name.startswith("naive_") or base in ("m2m", *(f"{m}+history" for m in HISTORY_MODELS))):
            whole = base == "m2m" and study.unseen_correction != 1.0  # also scored with the whole correction
            scored = cached_new_scenario_blocks(run_dir, study.new_scenario, (None, 1.0) if whole else (None,))
            for k, block in scored[None].items():
                if k == 0 and name.startswith("naive_"):
                    continue  # no history: no naive forecast exists (it would be the training mean)
                records += _flatten(block, name, seed, f"new K={k}")
                if seed == study.seeds[0] and "oracle" in block:
                    records += _flatten(block["oracle"], name, seed, f"new K={k}", source="oracle")
            if whole:
                for k, block in scored[1.0].items():
                    records += _flatten(block, name + WHOLE_CORRECTION, seed, f"new K={k}")
    frame = pd.DataFrame(records)
    oracle = frame["variant"] == "oracle"
    return pd.concat([frame[~oracle], frame[oracle].drop_duplicates(["split", "scenario", "task", "metric"])], ignore_index=True)


def cached_new_scenario_blocks(run_dir: Path, new_scenario: Path, corrections: Sequence[float | None] = (None,)) -> dict:
    """:func:`new_scenario_blocks_by_correction`, each w kept in the run folder (``new_scenario.json``;
    a w, ``new_scenario_w<w>.json``) and read back while it is newer than the run's metrics; the
    missing ones are scored together."""
    def cache(w: float | None) -> Path:
        return run_dir / ("new_scenario.json" if w is None else f"new_scenario_w{w:g}.json")

    fresh = {w for w in corrections if cache(w).exists() and cache(w).stat().st_mtime >= (run_dir / "metrics.json").stat().st_mtime}
    out = {w: {int(k): v for k, v in json.loads(cache(w).read_text()).items()} for w in fresh}
    missing = [w for w in corrections if w not in fresh]
    if missing:
        for w, blocks in new_scenario_blocks_by_correction(run_dir, new_scenario, missing).items():
            cache(w).write_text(json.dumps(blocks))
            out[w] = blocks
    return out


def summarise(records: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (variant, split, scenario, task, metric)."""
    keys = ["variant", "split", "scenario", "task", "metric"]
    return records.groupby(keys, sort=False).agg(
        mean=("value", "mean"), std=("value", lambda v: float(v.std(ddof=0))), seeds=("seed", "nunique"), rows=("rows", "first")
    ).reset_index()
