"""``msmt synth funnel``: impression -> click -> conversion, with the true pCTR and pCVR.

The world of ESMM (Ma et al., SIGIR 2018): a conversion can only follow a click, so a CVR model
trained on clicked impressions sees a biased sample of the space it is asked to score (sample
selection bias) and few rows (data sparsity). Per impression n of user u, item i, scenario s:

    pCTR_n = sigmoid(a_s + b_u + c_i + e_cat(i) + u^T v_i - 0.3 price_z)
    pCVR_n = sigmoid(d_s + q_i + 0.8 u^T M v_i + 0.4 price_z),  q_i = -0.8 c_i + N(0, 0.5²)
    click ~ Bernoulli(pCTR),  would_convert ~ Bernoulli(pCVR),  conversion = click * would_convert

Items that attract clicks convert *less* (q_i is anti-correlated with the click bias c_i), so the
clicked sample over-represents exactly the items whose CVR is lowest. ``would_convert`` is the
counterfactual conversion label of every impression, clicked or not: never a feature, it lets
CVR be scored over the entire impression space. Every row carries ``true_click`` (pCTR),
``true_cvr`` (pCVR) and ``true_ctcvr`` (their product).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from msmt.synth.output import sigmoid, write_time_split

SCENARIOS = {"app": 0.55, "web": 0.35, "partner": 0.10}



def make_funnel(rows: int = 100_000, seed: int = 0, users: int = 400, items: int = 500, dim: int = 4) -> pd.DataFrame:
    """Generate the impression table (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    names = list(SCENARIOS)
    u = rng.normal(0, 0.6, (users, dim))
    v = rng.normal(0, 0.6, (items, dim))
    mix = np.eye(dim) + rng.normal(0, 0.5, (dim, dim))
    user_bias = rng.normal(0, 0.5, users)
    item_click = rng.normal(0, 0.8, items)
    item_quality = -0.8 * item_click + rng.normal(0, 0.5, items)
    item_cat = rng.integers(0, 20, items)
    cat_bias = rng.normal(0, 0.4, 20)
    price = np.exp(rng.normal(3.0, 0.7, items))
    user_segment = rng.integers(0, 8, users)
    ctr_bias = np.array([-2.2, -2.6, -3.0])
    cvr_bias = np.array([-1.0, -1.3, -0.8])

    s = rng.choice(len(names), size=rows, p=list(SCENARIOS.values()))
    ui = rng.integers(0, users, rows)
    popularity = (np.arange(items) + 20.0) ** -1.2  # a few popular items, a long tail
    ii = rng.choice(items, size=rows, p=popularity / popularity.sum())
    price_z = (np.log(price[ii]) - 3.0) / 0.7
    uv = np.einsum("nd,nd->n", u[ui], v[ii])
    umv = np.einsum("nd,de,ne->n", u[ui], mix, v[ii])
    p_ctr = sigmoid(ctr_bias[s] + user_bias[ui] + item_click[ii] + cat_bias[item_cat[ii]] + uv - 0.3 * price_z)
    p_cvr = sigmoid(cvr_bias[s] + item_quality[ii] + 0.8 * umv + 0.4 * price_z)
    click = rng.random(rows) < p_ctr
    would_convert = rng.random(rows) < p_cvr
    return pd.DataFrame(
        {
            "timestamp": np.sort(rng.integers(1_700_000_000, 1_700_000_000 + 30 * 86400, rows)),
            "scenario": np.array(names)[s],
            "user_id": [f"u{i}" for i in ui],
            "item_id": [f"i{i}" for i in ii],
            "item_category": [f"c{c}" for c in item_cat[ii]],
            "user_segment": [f"g{g}" for g in user_segment[ui]],
            "price": np.round(price[ii], 2),
            "click": click.astype(int),
            "conversion": (click & would_convert).astype(int),
            "would_convert": would_convert.astype(int),
            "true_click": p_ctr,
            "true_cvr": p_cvr,
            "true_ctcvr": p_ctr * p_cvr,
        }
    )


def dataset_config(name: str = "synthetic_funnel") -> dict:
    """ESMM's declaration: ctcvr = click x cvr, with cvr an auxiliary output (no training label)."""
    return {
        "name": name,
        "files": {"train": "train.csv", "validation": "validation.csv", "test": "test.csv"},
        "scenario": {"column": "scenario"},
        "features": {
            "sparse": ["user_id", "item_id", "item_category", "user_segment"],
            "dense": [{"name": "price", "transform": "log1p"}],
        },
        "tasks": [
            {"name": "click", "label": "click", "kind": "binary"},
            {"name": "ctcvr", "label": "conversion", "kind": "binary", "product_of": ["click", "cvr"]},
        ],
        "auxiliary": [{"name": "cvr", "kind": "binary", "label": "would_convert"}],
    }


def experiment_config() -> dict:
    return {
        "dataset": "dataset.yaml",
        "model": {"name": "esmm", "embedding_dim": 8, "hidden_dims": [64], "tower_dims": [32]},
        "train": {"seed": 0, "epochs": 4, "batch_size": 512, "lr": 0.003, "patience": 2, "monitor": "ctcvr.auc"},
    }


def write_funnel(out_dir: str | Path, rows: int = 100_000, seed: int = 0) -> Path:
    """Write train/validation/test CSVs (time split 80/10/10), dataset.yaml and experiment.yaml."""
    return write_time_split(make_funnel(rows, seed), out_dir, dataset_config(), experiment_config())
