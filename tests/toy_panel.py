"""A small in-memory advertiser panel with known ground truth, built directly as tensors.

A stand-in for the advertiser simulator (issue 3) used by M2M's tests and benchmarks: it
produces exactly the batch layout of docs/architecture.md (``seq.*`` keys, scenario attributes,
``FittedSchema.panel``) without the sequence builder. Scenarios are described by two
attributes (ad ``format``, log ``traffic``); advertisers by a profile (``industry``,
``size_tier``, ``budget_level``); each row has a trailing window of behaviour events and
performance metrics, with a random number of observed (most recent) steps, possibly none.

Tasks (true values stored as ``true_<task>`` in the frame):
* ``clicks`` (count): log λ = 0.5 + 0.8·traffic + fmt[format] + ind[industry]·traffic + size[tier]
  + 0.6·mean(observed perf_0) + 0.4·[last event = raise_bid] + advertiser effect;
* ``active`` (binary): logit = fmt2[format] − 0.6·traffic·(tier − 1) + 1.5·(observed share − 0.5) + 0.5·budget.
The scenario effect is a smooth function of the attributes, so an unseen scenario is learnable
from its attributes (zero-shot), and the industry × traffic interaction rewards scenario-specific
mixing of the advertiser profile (what M2M's meta units are for).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from msmt.spec.dataset import DatasetSpec
from msmt.spec.fitted import DenseStats, FittedSchema, PanelEncoding, Vocabulary

FORMATS = ("image", "text", "video")
EVENTS = ("lower_bid", "new_creative", "pause", "raise_bid")
METRICS = ("clicks_z", "spend_z")
INDUSTRIES = tuple(f"ind{i}" for i in range(6))
TIERS = ("large", "medium", "small")
# name -> (format, standardised log traffic, share of rows)
SCENARIOS = {
    "display_hi": ("image", 1.0, 0.30),
    "feed": ("video", 0.3, 0.30),
    "search": ("text", -0.2, 0.25),
    "display_lo": ("image", -1.0, 0.12),
    "minor": ("video", -1.2, 0.03),
}
NEW_SCENARIO = ("live", ("video", 1.2))  # never in training: described by its attributes only


@dataclass
class ToyPanel:
    schema: FittedSchema
    batch: dict[str, torch.Tensor]
    frame: pd.DataFrame  # scenario names and ``true_<task>`` columns, row-aligned with ``batch``


def toy_spec() -> DatasetSpec:
    return DatasetSpec.model_validate(
        {
            "name": "toy_panel",
            "files": {"train": "in-memory"},
            "scenario": {"column": "scenario", "attributes": {"sparse": ["format"], "dense": ["traffic"]}},
            "features": {"sparse": ["advertiser_id", "industry", "size_tier"], "dense": ["budget_level"]},
            "tasks": [{"name": "clicks", "label": "clicks", "kind": "count"}, {"name": "active", "label": "active", "kind": "binary"}],
        }
    )


def toy_schema(window: int = 7, advertisers: int = 200, with_panel: bool = True) -> FittedSchema:
    vocabs = {
        "format": Vocabulary(FORMATS),
        "advertiser_id": Vocabulary(tuple(f"a{i}" for i in range(advertisers))),
        "industry": Vocabulary(INDUSTRIES),
        "size_tier": Vocabulary(TIERS),
    }
    dense = {"traffic": DenseStats(0.0, 1.0), "budget_level": DenseStats(0.0, 1.0)}
    panel = PanelEncoding(window=window, metrics=METRICS, events=EVENTS) if with_panel else None
    return FittedSchema(toy_spec(), tuple(sorted(SCENARIOS)), vocabs, dense, panel)


def make_toy_panel(rows: int = 4000, seed: int = 0, window: int = 7, advertisers: int = 200, new_scenario_share: float = 0.0) -> ToyPanel:
    """``rows`` rows; a share ``new_scenario_share`` of them from the unseen scenario (index 0)."""
    rng = np.random.default_rng(seed)
    world = np.random.default_rng(12345)  # the same world (effects, advertisers) for every seed
    schema = toy_schema(window, advertisers)
    fmt_eff = dict(zip(FORMATS, world.normal(0, 0.5, 3)))
    fmt2_eff = dict(zip(FORMATS, world.normal(0, 0.8, 3)))
    ind_eff = world.normal(0, 0.6, len(INDUSTRIES))
    size_eff = world.normal(0, 0.3, len(TIERS))
    adv_ind = world.integers(0, len(INDUSTRIES), advertisers)
    adv_tier = world.integers(0, len(TIERS), advertisers)
    adv_budget = world.normal(0, 1, advertisers)
    adv_eff = world.normal(0, 0.3, advertisers)

    table = {n: (f, t) for n, (f, t, _) in SCENARIOS.items()}
    names = list(SCENARIOS)
    probs = np.array([SCENARIOS[n][2] for n in names]) * (1 - new_scenario_share)
    if new_scenario_share > 0:
        names.append(NEW_SCENARIO[0])
        table[NEW_SCENARIO[0]] = NEW_SCENARIO[1]
        probs = np.append(probs, new_scenario_share)
    scen = np.array(names)[rng.choice(len(names), size=rows, p=probs / probs.sum())]
    fmt = np.array([table[s][0] for s in scen])
    traffic = np.array([table[s][1] for s in scen])
    adv = rng.integers(0, advertisers, rows)

    observed = rng.integers(0, window + 1, rows)  # most recent `observed` steps exist (0 = no history)
    mask = np.arange(window)[None, :] >= (window - observed)[:, None]  # [N, W]
    level = adv_eff[adv] + 0.3 * traffic
    perf = (level[:, None, None] + rng.normal(0, 0.5, (rows, window, len(METRICS)))) * mask[..., None]
    events = rng.integers(2, len(EVENTS) + 2, (rows, window)) * mask
    last_raise = (events[:, -1] == 2 + EVENTS.index("raise_bid")).astype(float)
    mean_perf = perf[..., 0].sum(1) / np.maximum(observed, 1)

    log_rate = (
        0.5 + 0.8 * traffic + np.vectorize(fmt_eff.get)(fmt) + ind_eff[adv_ind[adv]] * traffic + size_eff[adv_tier[adv]]
        + 0.6 * mean_perf + 0.4 * last_raise + adv_eff[adv]
    )
    logit = np.vectorize(fmt2_eff.get)(fmt) - 0.6 * traffic * (adv_tier[adv] - 1) + 1.5 * (observed / window - 0.5) + 0.5 * adv_budget[adv]
    rate, p_active = np.exp(log_rate), 1 / (1 + np.exp(-logit))
    clicks, active = rng.poisson(rate), (rng.random(rows) < p_active).astype(float)

    batch = {
        "scenario": torch.tensor([schema.scenario_index(s) for s in scen], dtype=torch.long),
        "sparse": torch.from_numpy(np.stack([adv + 2, adv_ind[adv] + 2, adv_tier[adv] + 2], 1).astype(np.int64)),
        "dense": torch.from_numpy(adv_budget[adv][:, None].astype(np.float32)),
        "scenario_sparse": torch.from_numpy(np.array([FORMATS.index(f) + 2 for f in fmt], dtype=np.int64)[:, None]),
        "scenario_dense": torch.from_numpy(traffic[:, None].astype(np.float32)),
        "seq.behaviour": torch.from_numpy(events.astype(np.int64)),
        "seq.performance": torch.from_numpy(perf.astype(np.float32)),
        "seq.mask": torch.from_numpy(mask),
        "seq.raw": torch.from_numpy(np.round(np.exp(perf)).astype(np.float32) * mask[..., None]),
        "seq.present": torch.from_numpy(np.repeat(mask[..., None], len(METRICS), axis=2)),
        "labels": torch.from_numpy(np.stack([clicks, active], 1).astype(np.float32)),
        "weight": torch.ones(rows),
    }
    frame = pd.DataFrame({"scenario": scen, "true_clicks": rate, "true_active": p_active})
    return ToyPanel(schema, batch, frame)


def without_panel(toy: ToyPanel) -> ToyPanel:
    """The same rows with no ``seq.*`` keys and a schema without a panel encoding."""
    s = toy.schema
    schema = FittedSchema(s.spec, s.scenarios, s.vocabularies, s.dense, None)
    return ToyPanel(schema, {k: v for k, v in toy.batch.items() if not k.startswith("seq.")}, toy.frame)


def subset(toy: ToyPanel, index: np.ndarray) -> ToyPanel:
    idx = torch.as_tensor(index, dtype=torch.long)
    return ToyPanel(toy.schema, {k: v[idx] for k, v in toy.batch.items()}, toy.frame.iloc[np.asarray(index)].reset_index(drop=True))
