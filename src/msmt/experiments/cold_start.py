"""The cold-start protocol (issue 18, item 5): worlds, held-out groups and the runs trained on them.

A *world* is one base training set with groups held out of it whole; the *states* scored on it:

* ``movielens_users`` (group ``user_id``): **warm users** (training users, their rows of the
  time split's test period) and **new users** (``--groups`` users whose every row is removed
  from training);
* ``movielens_items`` (group ``item_id``, meta-learned per item): **new items**, held out whole;
* ``advertisers`` (the advertiser simulator, group ``advertiser_id``): **new advertisers**, held
  out whole from train/validation/test, and the **new scenario** (``new_scenario.csv``, never in
  training) of the training advertisers.

Per world and seed every method is an ordinary run directory (``msmt train`` with overrides,
reused through :func:`msmt.experiments.bench.run_or_reuse` when the same code already trained it):
``base`` (conventional training; fine-tuning adapts its personal block), one run per meta
algorithm (``meta.algorithm``: the same base training, then meta-training; Finn et al. 2017 MAML
and first-order MAML, Nichol et al. 2018 Reptile, Li et al. 2017 Meta-SGD), ``idwarmup``
(``model.id_warmup``: the base plus Meta-Embedding's ID generator, Pan et al. 2019) on MovieLens,
and ``naive_mean`` (the trailing-mean forecaster) on the simulator. :mod:`msmt.experiments.cold_start_score`
scores them; :mod:`msmt.experiments.cold_start_page` writes the page.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from msmt.data.io import write_table
from msmt.data.loading import read_data
from msmt.data.split import split_frame
from msmt.experiments.bench import run_or_reuse
from msmt.meta.episodes import group_values
from msmt.rundir.layout import META_HISTORY
from msmt.spec.config import load_experiment

KS = (0, 1, 5, 10, 20, 50)
META = ("maml", "fomaml", "reptile", "metasgd")
WORLDS = ("movielens_users", "movielens_items", "advertisers")
# Meta-Embedding's attributes: the features a new ID is generated from (other sparse/dense features of its row)
WARMUP = {"user_id": ["gender", "occupation", "zip_code", "age"], "item_id": ["release_year"]}


@dataclass(frozen=True)
class World:
    """One base training set: ``config`` (experiment YAML), the group column, whether its runs
    include ID warm-up (the group column is then an ID feature) and the trailing-mean forecaster."""

    name: str
    config: Path
    group: str
    id_warmup: bool
    naive: bool = False


@dataclass
class Held:
    """One world × seed: where its training tables are, the overrides pointing runs at them, and the
    tables of each state to score ({state name: rows in time order of the file})."""

    files: dict[str, Path]
    states: dict[str, pd.DataFrame]
    held: list[str]


def pick_groups(groups: np.ndarray, n: int, need: int, rng: np.random.Generator) -> list[str]:
    """Up to ``n`` groups, at random among those with more than ``need`` rows; filled with the
    largest others when too few have that many (those then count only at the K below their size)."""
    counts = pd.Series(groups).value_counts()
    names = np.array(sorted(counts.index))
    sizes = np.minimum(counts[names].to_numpy(), need + 1)
    order = np.lexsort((rng.random(len(names)), -sizes))
    return sorted(names[order[:n]].tolist())


def _digest(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:10]


def hold_out(world: World, seed: int, groups: int, need: int, data_dir: Path, movielens: Path | None = None,
             new_scenario: Path | None = None) -> Held:
    """Hold ``groups`` groups of ``world`` out of training (seeded), write the training tables under
    ``data_dir`` and return the states' rows."""
    cfg = load_experiment(world.config)
    spec = cfg.dataset
    rng = np.random.default_rng(seed)
    if world.name.startswith("movielens"):
        frame = read_data(movielens or spec.files.train, spec)
        held = pick_groups(group_values(frame, world.group), groups, need, rng)
        out = data_dir / f"seed{seed}-{_digest(held, str(movielens or spec.files.train), len(frame))}"
        is_held = np.isin(group_values(frame, world.group), held)
        train = frame[~is_held].reset_index(drop=True)
        files = {"train": out / "train.csv"}
        if not files["train"].exists():
            write_table(train, files["train"])
        states = {("new users" if world.group == "user_id" else "new items"): frame[is_held].reset_index(drop=True)}
        if world.group == "user_id":  # warm users: training users in the test period (never a fitted row)
            parts = split_frame(train, spec.split)
            seen = set(group_values(parts["train"], world.group))
            test = parts["test"][np.isin(group_values(parts["test"], world.group), list(seen))]
            keep = pick_groups(group_values(test, world.group), groups, need, rng)
            states = {"warm users": test[np.isin(group_values(test, world.group), keep)].reset_index(drop=True), **states}
        return Held(files, states, held)
    tables = {s: read_data(getattr(spec.files, s), spec) for s in ("train", "validation", "test")}
    whole = pd.concat(tables.values(), ignore_index=True)
    held = pick_groups(group_values(whole, world.group), groups, need, rng)
    out = data_dir / f"seed{seed}-{_digest(held, str(spec.files.train), len(whole))}"
    files = {}
    for split, table in tables.items():
        files[split] = out / f"{split}.csv"
        if not files[split].exists():
            write_table(table[~np.isin(group_values(table, world.group), held)].reset_index(drop=True), files[split])
    states = {"new advertisers": whole[np.isin(group_values(whole, world.group), held)].reset_index(drop=True)}
    if new_scenario is not None and new_scenario.exists():
        new = read_data(new_scenario, spec)
        new = new[~np.isin(group_values(new, world.group), held)].reset_index(drop=True)
        keep = pick_groups(group_values(new, world.group), groups, need, rng)
        states["new scenario"] = new[np.isin(group_values(new, world.group), keep)].reset_index(drop=True)
    return Held(files, states, held)


def method_overrides(world: World, method: str, files: dict[str, Path], seed: int, extra: Sequence[str], max_k: int = max(KS)) -> list[str]:
    """The ``--set`` strings of one method's run on one world × seed. Meta-training draws each
    episode's support size from [``meta.support_min``, ``max_k``], so one meta-model serves every K."""
    out = [f"dataset.files.{k}={json.dumps(str(v))}" for k, v in files.items()]
    out += [f"dataset.group={world.group}", f"train.seed={seed}", f"meta.seed={seed}", "train.progress=false"]
    if method in META:
        out += [f"meta.algorithm={method}", f"meta.support_size={max(max_k, 1)}", "meta.log_reference=true"]  # the curves' reference
    elif method == "idwarmup":
        out.append(f"model.id_warmup={json.dumps({world.group: WARMUP[world.group]})}")
    elif method == "naive_mean":
        out += ["model.name=naive_mean", "train.epochs=2"]
    return [*out, *extra]


def world_methods(world: World, meta: Sequence[str] = META) -> list[str]:
    """The runs of a world: the base, each meta algorithm, ID warm-up / the trailing mean where they apply."""
    return ["base", *meta, *(["idwarmup"] if world.id_warmup else []), *(["naive_mean"] if world.naive else [])]


@dataclass
class Study:
    """What the protocol trains: the worlds, seeds, held-out group count, K values and where runs live."""

    worlds: list[World]
    seeds: Sequence[int]
    groups: int
    ks: Sequence[int]
    work: Path
    meta: Sequence[str] = META
    extra: tuple[str, ...] = ()  # overrides for every run (train.num_threads=1, ...)
    movielens: Path | None = None
    new_scenario: Path | None = None
    log: Callable[[str], None] = field(default=print)

    def prepare(self, world: World, seed: int) -> tuple[Held, dict[str, Path]]:
        """Hold groups out, train (or reuse) every method's run; returns (held, {method: run dir})."""
        held = hold_out(world, seed, self.groups, max(self.ks), self.work / "data" / world.name, self.movielens, self.new_scenario)
        runs = {}
        for method in world_methods(world, self.meta):
            run = self.work / "runs" / world.name / f"seed{seed}" / method
            run_or_reuse(world.config, method_overrides(world, method, held.files, seed, self.extra, max(self.ks)), run, log=self.log)
            runs[method] = run
        return held, runs


def meta_curves(study: Study) -> pd.DataFrame:
    """Meta-training's learning curves (issue 18, item 1): (world, seed, method, episode, query_loss,
    finetune_query_loss, passes: rows drawn so far over the training rows) from every meta run's ``meta_history.csv``: over each tenth of the episodes the
    mean query loss after adaptation and after plain fine-tuning from the block before meta-training
    (:func:`msmt.meta.meta_train`). Runs without one (not meta-trained) are skipped."""
    parts = []
    for world in study.worlds:
        for seed in study.seeds:
            for method in study.meta:
                path = study.work / "runs" / world.name / f"seed{seed}" / method / META_HISTORY
                if path.exists():
                    part = pd.read_csv(path)
                    if "passes" not in part:  # a run of an msmt before the column
                        part["passes"] = float("nan")
                    parts.append(part.assign(world=world.name, seed=seed, method=method))
    columns = ["world", "seed", "method", "episode", "query_loss", "finetune_query_loss", "passes"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)
