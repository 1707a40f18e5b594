"""The real advertiser-like configs (online ads, Facebook ads) load, encode and keep history causal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import REPO
from msmt.data.fit import fit_schema
from msmt.data.loading import load_splits
from msmt.data.panel import time_steps, trailing_mean
from msmt.data.tensorize import encode_frame
from msmt.models import build_model
from msmt.spec.config import load_experiment


@pytest.fixture(scope="module")
def online(shared_data):
    cfg = load_experiment(REPO / "configs" / "online_ads.yaml")
    splits = load_splits(cfg.dataset)
    return cfg, splits, fit_schema(splits["train"], cfg.dataset)


def test_online_ads_schema_and_shapes(online):
    cfg, splits, schema = online
    assert [t.kind.value for t in cfg.dataset.tasks] == ["count"] * 3
    assert set(schema.scenarios) >= {"abc", "def", "ghi", "jkl", "mno"}
    panel = schema.panel
    assert panel.window == 14 and panel.metrics[:3] == ("displays", "clicks", "post_click_conversions")
    context = pd.concat([splits["train"], splits["validation"]], ignore_index=True)
    batch = encode_frame(splits["test"], schema, context=context)
    n = len(splits["test"])
    assert batch["seq.performance"].shape == (n, 14, 5) and batch["seq.behaviour"].shape == (n, 14)
    assert batch["seq.mask"][:, -1].float().mean() > 0.8  # most units ran the day before
    # strictly earlier: the time split puts every test date at or after the last training date
    assert time_steps(splits["test"], "date").min() >= time_steps(splits["train"], "date").max()


def test_online_ads_models_offset_by_the_backtest_blend(online):
    """The shipped config trains every model (M2M too) on the offset the forecasting study's validation
    split chooses for this data (``blend_backtest``), scored on a week inside the panel window."""
    cfg, _, schema = online
    for name in ("mmoe", "m2m"):
        forecast = build_model(schema, cfg.model.model_copy(update={"name": name})).forecast
        assert forecast is not None and forecast.blends and forecast.backtests, name
    assert cfg.model.backtest_days <= schema.panel.window


def test_online_ads_trailing_mean_matches_pandas(online):
    """The unit's trailing mean against an independent pandas rolling computation."""
    cfg, splits, _ = online
    panel = cfg.dataset.panel
    frame = pd.concat(list(splits.values()), ignore_index=True)
    ours = trailing_mean(frame, panel, "clicks")
    f = frame.assign(_t=pd.to_datetime(frame["date"]), _i=np.arange(len(frame)))
    # duplicates (same unit and date) keep the last row, as the panel builder documents
    f = f.drop_duplicates([*panel.keys, "_t"], keep="last")
    ref = pd.Series(np.nan, index=range(len(frame)))
    for _, g in f.groupby(list(panel.keys)):
        s = g.set_index("_t")["clicks"].astype(float).sort_index()
        rolled = s.rolling("14D", closed="left").mean()  # the 14 days strictly before
        ref.iloc[g.sort_values("_t")["_i"].to_numpy()] = rolled.to_numpy()
    unique_rows = f["_i"].to_numpy()
    np.testing.assert_allclose(ours[unique_rows], ref.to_numpy()[unique_rows], rtol=1e-9, equal_nan=True)


def test_fb_ads_config(shared_data):
    cfg = load_experiment(REPO / "configs" / "fb_ads.yaml")
    splits = load_splits(cfg.dataset)
    schema = fit_schema(splits["train"], cfg.dataset)
    assert schema.scenarios == ("1178", "916", "936")
    assert cfg.dataset.panel is None and schema.panel is None
    batch = encode_frame(splits["test"], schema)
    assert not any(k.startswith("seq.") for k in batch)
    assert batch["labels"].shape == (len(splits["test"]), 4)
