"""The speed benchmark's data: a seeded click ⊇ purchase world over 8 categorical fields and 4
scenarios, built directly as an encoded batch (docs/architecture.md "Batch layout")."""

from __future__ import annotations

import numpy as np
import torch

from msmt.spec.batch import Batch, iterate_batches
from msmt.spec.dataset import DatasetSpec
from msmt.spec.fitted import FittedSchema, Vocabulary

# field name -> vocabulary size (values; each table also has padding + OOV rows)
FIELDS = {
    "user_id": 20000, "item_id": 10000, "category": 100, "brand": 500,
    "city": 300, "device": 5, "hour": 24, "age_bucket": 8,
}
SCENARIOS = ("feed", "search", "display", "minor")
SCENARIO_SHARES = (0.45, 0.3, 0.22, 0.03)
BATCH = 1024


def speed_spec(esmm: bool) -> DatasetSpec:
    """Two binary tasks click and purchase; ``esmm``: purchase = click × cvr (``cvr`` auxiliary)."""
    purchase = {"name": "purchase", "label": "purchase", "kind": "binary"}
    if esmm:
        purchase["product_of"] = ["click", "cvr"]
    raw = {
        "name": "speed_synth",
        "files": {"train": "in-memory"},
        "scenario": {"column": "scenario"},
        "features": {"sparse": list(FIELDS)},
        "tasks": [{"name": "click", "label": "click", "kind": "binary"}, purchase],
    }
    if esmm:
        raw["auxiliary"] = [{"name": "cvr"}]
    return DatasetSpec.model_validate(raw)


def speed_schemas() -> dict[str, FittedSchema]:
    """``{"plain": schema, "esmm": schema}``: the same vocabularies and scenarios, two task specs."""
    vocabs = {f: Vocabulary(tuple(f"{f}{i}" for i in range(n))) for f, n in FIELDS.items()}
    return {kind: FittedSchema(speed_spec(kind == "esmm"), tuple(sorted(SCENARIOS)), vocabs, {}) for kind in ("plain", "esmm")}


def _labels(rng: np.random.Generator, raw: dict[str, np.ndarray], scen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N] click and purchase: learnable id effects, a user × item interaction and a scenario bias."""
    rows = len(scen)
    eff = {f: rng.normal(0, 0.5, n) for f, n in FIELDS.items()}
    u, v = rng.normal(0, 0.5, (FIELDS["user_id"], 4)), rng.normal(0, 0.5, (FIELDS["item_id"], 4))
    s_bias = rng.normal(-1.0, 0.5, len(SCENARIOS))
    uv = np.einsum("nd,nd->n", u[raw["user_id"]], v[raw["item_id"]])
    logit = s_bias[scen] + sum(eff[f][raw[f]] for f in FIELDS) + 1.5 * uv
    cvr_logit = -1.0 + 2 * eff["brand"][raw["brand"]] + eff["age_bucket"][raw["age_bucket"]] - 0.5 * scen
    click = rng.random(rows) < 1 / (1 + np.exp(-logit))
    purchase = click & (rng.random(rows) < 1 / (1 + np.exp(-cvr_logit)))
    return click, purchase


def make_data(rows: int, seed: int = 0) -> tuple[Batch, dict[str, FittedSchema]]:
    """``rows`` encoded rows and the schemas of :func:`speed_schemas`.

    The batch has ``scenario`` [N], ``sparse`` [N, 8] (value ``i`` of a field is index ``i + 2``),
    empty ``dense`` / scenario attributes, ``labels`` [N, 2] (click, purchase) and ``weight`` [N].
    """
    rng = np.random.default_rng(seed)
    schemas = speed_schemas()
    raw = {f: rng.integers(0, n, rows) for f, n in FIELDS.items()}
    scen = rng.choice(len(SCENARIOS), size=rows, p=list(SCENARIO_SHARES))
    click, purchase = _labels(rng, raw, scen)
    scen_index = np.array([schemas["plain"].scenario_index(s) for s in SCENARIOS])[scen]
    data = {
        "scenario": torch.from_numpy(scen_index.astype(np.int64)),
        "sparse": torch.from_numpy(np.stack([raw[f] + 2 for f in FIELDS], 1).astype(np.int64)),
        "dense": torch.zeros(rows, 0),
        "scenario_sparse": torch.zeros(rows, 0, dtype=torch.long),
        "scenario_dense": torch.zeros(rows, 0),
        "labels": torch.from_numpy(np.stack([click, purchase], 1).astype(np.float32)),
        "weight": torch.ones(rows),
    }
    return data, schemas


def split(data: Batch, frac: tuple[float, float] = (0.8, 0.9)) -> tuple[Batch, Batch]:
    """(train, test): the first 80% of rows and the last 10% (the 10% between are left out)."""
    n = data["scenario"].shape[0]
    a, b = int(n * frac[0]), int(n * frac[1])
    return {k: v[:a] for k, v in data.items()}, {k: v[b:] for k, v in data.items()}


def head(data: Batch, rows: int) -> Batch:
    """The first ``rows`` rows."""
    return {k: v[:rows] for k, v in data.items()}


def full_batches(data: Batch, n: int, seed: int = 0, batch_size: int = BATCH) -> list[Batch]:
    """The first ``n`` full batches of one shuffled pass of ``iterate_batches`` (fewer if the data ends)."""
    out = []
    for b in iterate_batches(data, batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)):
        if b["scenario"].shape[0] == batch_size:
            out.append(b)
        if len(out) >= n:
            break
    return out


def feature_columns(data: Batch) -> dict[str, torch.Tensor]:
    """One [N] column per feature, the scenario one more field: torch-rechub's input layout."""
    cols = {f: data["sparse"][:, j].contiguous() for j, f in enumerate(FIELDS)}
    cols["scenario"] = data["scenario"].contiguous()
    return cols
