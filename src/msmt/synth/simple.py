"""``msmt synth simple``: a small multi-scenario, multi-task world with known ground truth.

Users and items have latent vectors; each scenario has its own bias and its own way of
combining them (a scenario-specific matrix), so tasks are related across scenarios but not
identical. One scenario is *minor* (about 2% of rows). Tasks:

* ``click`` (binary): P(click) = sigmoid(a_s + b_user + b_category + u^T M_s v - 0.4 * price_z)
  (dearer items are clicked less);
* ``purchase`` (binary, implies click): P(purchase) = P(click) * sigmoid(c_s + u^T w_s + 0.3 * (age - 40) / 15);
* ``dwell`` (count): Poisson(exp(d_s + 0.6 * clip(u^T v, -3, 3))).

Every row also carries ``true_<task>``: the exact expected value, never a feature, which
``evaluate`` scores as the oracle. Files are split by ``timestamp``: 80% / 10% / 10%.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from msmt.synth.output import sigmoid, write_time_split

SCENARIOS = {"feed": 0.40, "search": 0.33, "display": 0.25, "minor": 0.02}
TAGS = [f"tag{i}" for i in range(24)]



def make_simple(rows: int = 30000, seed: int = 0, users: int = 300, items: int = 200, dim: int = 4) -> pd.DataFrame:
    """Generate the table (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    names = list(SCENARIOS)
    n_s = len(names)
    u = rng.normal(0, 0.5, (users, dim))
    v = rng.normal(0, 0.5, (items, dim))
    user_bias = rng.normal(0, 0.8, users)  # main effects: learnable from the id embeddings alone
    cat_bias = rng.normal(0, 0.8, 12)
    user_age = rng.integers(18, 70, users)
    item_cat = rng.integers(0, 12, items)
    item_price = np.exp(rng.normal(3.0, 0.8, items))
    item_tags = [" ".join(rng.choice(TAGS, size=rng.integers(1, 4), replace=False)) for _ in range(items)]
    shared = rng.normal(0, 0.5, (dim, dim))
    mix = np.stack([np.eye(dim) + shared + rng.normal(0, 0.6, (dim, dim)) for _ in range(n_s)])  # M_s
    click_bias = rng.normal(-0.6, 0.4, n_s)
    cvr_bias = rng.normal(-1.5, 0.4, n_s)
    cvr_w = rng.normal(0, 0.5, (n_s, dim))
    dwell_bias = rng.normal(2.0, 0.4, n_s)

    s = rng.choice(n_s, size=rows, p=list(SCENARIOS.values()))
    ui = rng.integers(0, users, rows)
    ii = rng.integers(0, items, rows)
    price_z = (np.log(item_price[ii]) - 3.0) / 0.8
    uv = np.einsum("nd,nde,ne->n", u[ui], mix[s], v[ii])
    p_click = sigmoid(click_bias[s] + user_bias[ui] + cat_bias[item_cat[ii]] + uv - 0.4 * price_z)
    p_cvr = sigmoid(cvr_bias[s] + np.einsum("nd,nd->n", u[ui], cvr_w[s]) + 0.3 * (user_age[ui] - 40) / 15)
    rate = np.exp(dwell_bias[s] + 0.6 * np.einsum("nd,nd->n", u[ui], v[ii]).clip(-3, 3))
    click = rng.random(rows) < p_click
    purchase = click & (rng.random(rows) < p_cvr)
    return pd.DataFrame(
        {
            "timestamp": np.sort(rng.integers(1_700_000_000, 1_700_000_000 + 60 * 86400, rows)),
            "scenario": np.array(names)[s],
            "user_id": [f"u{i}" for i in ui],
            "item_id": [f"i{i}" for i in ii],
            "item_category": [f"c{c}" for c in item_cat[ii]],
            "user_age": user_age[ui],
            "price": np.round(item_price[ii], 2),
            "tags": [item_tags[i] for i in ii],
            "click": click.astype(int),
            "purchase": purchase.astype(int),
            "dwell": rng.poisson(rate),
            "true_click": p_click,
            "true_purchase": p_click * p_cvr,
            "true_dwell": rate,
        }
    )


def dataset_config(name: str = "synthetic_simple") -> dict:
    return {
        "name": name,
        "files": {"train": "train.csv", "validation": "validation.csv", "test": "test.csv"},
        "scenario": {"column": "scenario"},
        "features": {
            "sparse": ["user_id", "item_id", "item_category"],
            "dense": ["user_age", {"name": "price", "transform": "log1p"}],
            "multi_sparse": [{"name": "tags", "separator": " ", "max_length": 4}],
        },
        "tasks": [
            {"name": "click", "label": "click", "kind": "binary"},
            {"name": "purchase", "label": "purchase", "kind": "binary"},
            {"name": "dwell", "label": "dwell", "kind": "count", "weight": 0.5},
        ],
    }


def experiment_config() -> dict:
    return {
        "dataset": "dataset.yaml",
        "model": {"name": "mmoe", "embedding_dim": 8, "hidden_dims": [64, 32], "tower_dims": [16]},
        "train": {"seed": 0, "epochs": 8, "batch_size": 256, "lr": 0.003, "patience": 2, "monitor": "loss"},
    }


def write_simple(out_dir: str | Path, rows: int = 30000, seed: int = 0) -> Path:
    """Write train/validation/test CSVs (time split 80/10/10), dataset.yaml and experiment.yaml."""
    return write_time_split(make_simple(rows, seed), out_dir, dataset_config(), experiment_config())
