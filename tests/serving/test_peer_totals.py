"""A wide peer channel served from per-step totals (``SqliteHistory.group_totals``): the same batch
as reading every unit's rows of each group, and as ``encode_frame(rows, context=file)``.

The request below is built to hit every case where the totals must give way to rows: rows to
score on two days (the first day's rows replace stored rows that the second day's rows read as
peers), context rows replacing stored rows of units outside the request, and context rows of new
(unit, day) pairs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from serve_helpers import json_records

from msmt.data.fit import fit_schema
from msmt.data.loading import read_data
from msmt.data.tensorize import encode_frame
from msmt.rundir.layout import load_run
from msmt.serving.encode import PanelEncoder, RowEncoder
from msmt.serving.history import SqliteHistory, last_of_duplicates, observations_from_frame
from msmt.serving.request import build_request_models, history_columns
from msmt.spec.dataset import PanelSpec
from msmt.spec.errors import ConfigError


class RowsOnly:
    """The store without ``group_totals``: every channel read row by row (the reference path)."""

    def __init__(self, store):
        self.store = store
        self.read: list[tuple] = []

    def window(self, *args):
        return self.store.window(*args)

    def group_window(self, groups, first, last, by=None):
        self.read.append(tuple(by or ()))
        return self.store.group_window(groups, first, last, by=by)

    def known(self, units):
        return self.store.known(units)


class Counting(RowsOnly):
    def group_totals(self, groups, first, last, by):
        self.read.append(("totals", *by))
        return self.store.group_totals(groups, first, last, by)


def _assert_totals_are_the_rows_summed(store, groups, first, last, by):
    totals = store.group_totals(groups, first, last, by=by)
    rows = store.group_window(groups, first, last, by=by)
    position = store._groupings[tuple(by)][1][0]
    read = pd.DataFrame({"group": [json.loads(u)[position] for u in rows.units], "step": rows.steps})
    values = np.nan_to_num(rows.metrics)
    read[["imp", "cost"]] = values
    read["active"] = (values > 0).any(1)
    expected = read.groupby(["group", "step"]).agg(rows=("imp", "size"), active=("active", "sum"), imp=("imp", "sum"), cost=("cost", "sum"))
    got = pd.DataFrame({"group": totals.groups, "step": totals.steps, "rows": totals.rows, "active": totals.active,
                        "imp": totals.sums[:, 0], "cost": totals.sums[:, 1]}).set_index(["group", "step"]).sort_index()
    assert len(got) == len(expected) > 10 and (got["active"] < got["rows"]).any()
    assert got[["rows", "active"]].to_numpy().tolist() == expected[["rows", "active"]].to_numpy().tolist()
    np.testing.assert_allclose(got[["imp", "cost"]].to_numpy(), expected[["imp", "cost"]].to_numpy(), rtol=1e-9, atol=1e-9)


def test_group_totals_are_the_rows_of_a_group_read_summed_through_every_write(tmp_path):
    """Per (group, step): rows, active rows and metric sums (missing metrics as 0), against a
    pandas sum of ``group_window``'s rows — after inserts, after rows are replaced (new values,
    paused, missing), and in a file filled before the channel was declared (filled on opening).
    Only the cross-section keeps totals."""
    rng = np.random.default_rng(3)
    plain = PanelSpec(keys=("adv", "scen"), time="day", metrics=("imp", "cost"))
    panel = plain.model_copy(update={"group_keys": ("adv",), "cross_section_keys": ("scen",)})
    n = 300
    frame = pd.DataFrame({"adv": rng.choice(list("abcdefg"), n), "scen": rng.choice(["x", "y", "z"], n), "day": rng.integers(0, 12, n),
                          "imp": rng.poisson(2.0, n).astype(float), "cost": rng.gamma(1.0, 2.0, n)})
    frame.loc[rng.random(n) < 0.2, "cost"] = np.nan
    frame.loc[rng.random(n) < 0.3, ["imp", "cost"]] = 0.0  # paused days
    later = frame.sample(80, random_state=1).assign(imp=lambda f: f["imp"] * 3 + 1)
    later.loc[later.index[:20], ["imp", "cost"]] = 0.0
    later.loc[later.index[20:30], "cost"] = np.nan
    store = SqliteHistory(tmp_path / "t.db", panel)
    store.upsert(last_of_duplicates(observations_from_frame(frame, panel)))
    _assert_totals_are_the_rows_summed(store, ["x", "z"], [2, 0], [9, 11], ("scen",))
    with pytest.raises(ConfigError, match=r"cross-section only .* not of \['adv'\]"):  # a group's few units: read row by row
        store.group_totals(["a"], [0], [11], by=("adv",))
    assert store.upsert(last_of_duplicates(observations_from_frame(later, panel)))["updated"] > 50
    _assert_totals_are_the_rows_summed(store, ["x", "y", "z"], [0, 0, 0], [11, 11, 11], ("scen",))
    store.close()
    old = SqliteHistory(tmp_path / "old.db", plain)  # a store written for a panel without peer channels
    old.upsert(last_of_duplicates(observations_from_frame(frame, plain)))
    old.close()
    reopened = SqliteHistory(tmp_path / "old.db", panel)
    _assert_totals_are_the_rows_summed(reopened, ["x", "y", "z"], [0, 0, 0], [11, 11, 11], ("scen",))
    reopened.upsert(last_of_duplicates(observations_from_frame(later, panel)))
    _assert_totals_are_the_rows_summed(reopened, ["x", "y", "z"], [0, 0, 0], [11, 11, 11], ("scen",))
    reopened.close()


@pytest.fixture(scope="module")
def cross_world(trained_panel_run, tmp_path_factory):
    """The small simulator world with ``panel.cross_section_keys: [scenario]``: its schema, every
    file's rows (history = train + validation, the test days stored too) and a store of them."""
    data = trained_panel_run.data_dir
    spec = load_run(trained_panel_run("mmoe")).schema.spec
    spec = spec.model_copy(update={"panel": spec.panel.model_copy(update={"cross_section_keys": ("scenario",)})})
    frames = [read_data(data / f"{name}.csv", spec) for name in ("train", "validation", "test")]
    history = pd.concat(frames[:2], ignore_index=True)
    stored = pd.concat(frames, ignore_index=True)  # the test days' outcomes are known to the store (a backtest)
    store = SqliteHistory(tmp_path_factory.mktemp("cross") / "h.db", spec.panel)
    store.upsert(last_of_duplicates(observations_from_frame(stored, spec.panel)))
    return {"schema": fit_schema(history, spec), "stored": stored, "test": frames[2], "store": store}


def test_served_cross_section_from_totals_equals_every_row_read(cross_world):
    schema, stored, test, store = (cross_world[k] for k in ("schema", "stored", "test", "store"))
    panel = schema.spec.panel
    days = sorted(test["day"].unique())[:2]
    few = test["advertiser_id"].drop_duplicates().head(5)
    scored = test["advertiser_id"].isin(few) & ((test["day"] == days[0]) | (test["day"] == days[1]) & test["advertiser_id"].isin(few.head(3)))
    rows = test[scored].reset_index(drop=True)  # two days to score; two advertisers' units on the first day only
    first_day = rows["day"] == days[0]
    rows.loc[first_day, list(panel.metrics)] = rows.loc[first_day, list(panel.metrics)] * 2 + 1  # not what the store holds
    last_past = stored[stored["day"] == days[0] - 1]
    others = last_past[~last_past["advertiser_id"].isin(few)].head(6)  # stored rows of units outside the request
    mine = last_past[last_past["advertiser_id"].isin(few)].head(3)
    revised = pd.concat([others, mine], ignore_index=True)
    revised = revised.assign(**{m: revised[m] * 3 + 1 for m in panel.metrics})
    new = others.head(2).assign(day=days[0] - 20)  # (unit, day) pairs the store has not
    new = new[~new.set_index(["advertiser_id", "scenario", "day"]).index.isin(stored.set_index(["advertiser_id", "scenario", "day"]).index)]
    context = pd.concat([revised, new], ignore_index=True)
    row_model, request_model, cols = build_request_models(schema, 10_000)
    request = request_model.model_validate({"rows": json_records(rows), "context": json_records(context)})
    direct = RowEncoder(schema, cols, row_model)
    counting, rows_only = Counting(store), RowsOnly(store)
    totals_batch, _, _ = PanelEncoder(schema, cols, history_columns(schema), counting, direct)(request.rows, request.context)
    rows_batch, _, _ = PanelEncoder(schema, cols, history_columns(schema), rows_only, direct)(request.rows, request.context)
    assert ("scenario",) in rows_only.read and ("totals", "scenario") in counting.read and ("scenario",) not in counting.read
    # the rows to score carry their day's metrics and event (json_records: every column), so the first day's rows replace
    # the stored rows of their (unit, day) as history of the second day's rows (their own and their peers')
    reference = encode_frame(rows, schema, with_labels=False, context=pd.concat([stored, context], ignore_index=True))
    cross = reference["seq.cross_count"]
    assert cross.sum() > 0 and (reference["seq.cross_active"] < cross).any()
    for key in [k for k in reference if k.startswith("seq.")]:
        for name, batch in (("rows", rows_batch), ("totals", totals_batch)):
            if key.endswith("_raw"):
                torch.testing.assert_close(batch[key], reference[key], rtol=1e-6, atol=1e-4, msg=f"{name}: {key}")
            else:
                assert torch.equal(batch[key], reference[key]), (name, key)

