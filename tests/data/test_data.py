"""Reading, validation with precise messages, encoders fitted on train only, splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from msmt.data.fit import fit_schema
from msmt.data.loading import read_data
from msmt.data.split import split_frame
from msmt.data.tensorize import encode_frame
from msmt.rundir.layout import save_schema
from msmt.spec.batch import iterate_batches
from msmt.spec.config import dataset_spec_from
from msmt.spec.dataset import SplitSpec
from msmt.spec.errors import DataError
from msmt.spec.fitted import OOV, FittedSchema


def corrupt(tiny_dir, tmp_path, column, value, row=3, name="bad.csv"):
    frame = pd.read_csv(tiny_dir / "train.csv", dtype=str)
    frame.loc[row, column] = value
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "column,value,message",
    [
        ("click", "2", "column 'click': binary label must be 0 or 1, got 2 in data row 4"),
        ("dwell", "-1", "column 'dwell': count label must be >= 0, got -1 in data row 4"),
        ("user_age", "old", "column 'user_age': non-numeric value 'old' in data row 4"),
        ("purchase", "", "column 'purchase': missing value in data row 4"),
    ],
)
def test_bad_values_name_file_column_problem(tiny_dir, tiny_spec, tiny_schema, tmp_path, column, value, message):
    path = corrupt(tiny_dir, tmp_path, column, value)
    frame = read_data(path, tiny_spec)
    with pytest.raises(DataError) as err:
        encode_frame(frame, tiny_schema)
    assert str(err.value) == f"{path}: {message}"


def test_missing_column(tiny_dir, tiny_spec, tiny_schema, tmp_path):
    frame = pd.read_csv(tiny_dir / "train.csv").drop(columns=["price"])
    path = tmp_path / "nocol.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"nocol.csv: column 'price': missing column"):
        encode_frame(read_data(path, tiny_spec), tiny_schema)


def test_empty_and_missing_files(tiny_spec, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.csv: empty file"):
        read_data(empty, tiny_spec)
    header_only = tmp_path / "header.csv"
    header_only.write_text("scenario,click\n")
    with pytest.raises(DataError, match="header.csv: empty file"):
        read_data(header_only, tiny_spec)
    with pytest.raises(DataError, match="nope.csv: no such file"):
        read_data(tmp_path / "nope.csv", tiny_spec)


def test_prediction_data_needs_no_labels(tiny_dir, tiny_spec, tiny_schema):
    frame = pd.read_csv(tiny_dir / "test.csv").drop(columns=["click", "purchase", "dwell"])
    batch = encode_frame(frame, tiny_schema, with_labels=False)
    assert "labels" not in batch and batch["sparse"].shape[0] == len(frame)


def test_encoders_fit_on_train_only_and_unseen_go_to_oov(tiny_train, tiny_spec):
    train = tiny_train.iloc[:500].reset_index(drop=True)
    schema = fit_schema(train, tiny_spec)
    vocab = schema.vocabularies["user_id"]
    assert set(vocab.values) == set(train["user_id"])
    other = tiny_train.iloc[500:].reset_index(drop=True)
    unseen = ~other["user_id"].isin(set(train["user_id"]))
    assert unseen.any()
    batch = encode_frame(other, schema)
    user_col = [f.name for f in tiny_spec.features.sparse].index("user_id")
    assert (batch["sparse"][torch_idx(unseen), user_col] == OOV).all()
    assert (batch["sparse"][torch_idx(~unseen), user_col] >= 2).all()
    stats = schema.dense["user_age"]
    assert stats.mean == pytest.approx(train["user_age"].mean())


def torch_idx(mask):
    import torch

    return torch.from_numpy(np.flatnonzero(mask.to_numpy()))


def test_unseen_scenario_maps_to_zero(tiny_train, tiny_schema):
    frame = tiny_train.iloc[:10].copy()
    frame["scenario"] = "brand_new"
    assert (encode_frame(frame, tiny_schema)["scenario"] == 0).all()


def test_multi_valued_feature_padding(tiny_train, tiny_schema):
    batch = encode_frame(tiny_train.iloc[:50], tiny_schema)
    tags = batch["multi.tags"]
    n_tokens = tiny_train["tags"].iloc[:50].str.split(" ").map(len).to_numpy()
    assert ((tags > 0).sum(1).numpy() == np.minimum(n_tokens, 4)).all()


def test_schema_json_round_trip(tiny_schema, tiny_train, tmp_path):
    save_schema(tiny_schema, tmp_path / "schema.json")
    loaded = FittedSchema.load(tmp_path / "schema.json")
    a, b = encode_frame(tiny_train, tiny_schema), encode_frame(tiny_train, loaded)
    for key in a:
        assert (a[key] == b[key]).all()


def test_parquet_equals_csv(tiny_dir, tiny_spec, tiny_schema, tmp_path):
    csv = read_data(tiny_dir / "validation.csv", tiny_spec)
    pd.read_csv(tiny_dir / "validation.csv").to_parquet(tmp_path / "v.parquet")
    pq = read_data(tmp_path / "v.parquet", tiny_spec)
    a, b = encode_frame(csv, tiny_schema), encode_frame(pq, tiny_schema)
    for key in a:
        assert (a[key] == b[key]).all(), key


def test_time_split_is_ordered_and_random_split_is_seeded(tiny_train):
    parts = split_frame(tiny_train, SplitSpec(method="time", time_column="timestamp", validation_fraction=0.2, test_fraction=0.1))
    assert parts["train"]["timestamp"].max() <= parts["validation"]["timestamp"].min()
    assert parts["validation"]["timestamp"].max() <= parts["test"]["timestamp"].min()
    assert sum(len(p) for p in parts.values()) == len(tiny_train)
    r1 = split_frame(tiny_train, SplitSpec(seed=5))
    r2 = split_frame(tiny_train, SplitSpec(seed=5))
    r3 = split_frame(tiny_train, SplitSpec(seed=6))
    assert r1["validation"].equals(r2["validation"]) and not r1["validation"].equals(r3["validation"])


def test_batches_cover_every_row_once(tiny_train, tiny_schema):
    import torch

    data = encode_frame(tiny_train, tiny_schema)
    data["row"] = torch.arange(len(tiny_train))
    seen = torch.cat([b["row"] for b in iterate_batches(data, 97, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(len(tiny_train)))


def test_shuffled_batches_follow_the_generator(tiny_train, tiny_schema):
    """Shuffled: not the file's order, the same order for the same seed, a new one for the next epoch
    of one generator and for another seed; unshuffled: the file's order."""
    import torch

    data = encode_frame(tiny_train, tiny_schema)
    data["row"] = torch.arange(len(tiny_train))

    def order(generator=None, shuffle=True):
        return torch.cat([b["row"] for b in iterate_batches(data, 97, shuffle=shuffle, generator=generator)]).tolist()

    rows = list(range(len(tiny_train)))
    first = torch.Generator().manual_seed(0)
    epoch1, epoch2 = order(first), order(first)
    assert epoch1 != rows and epoch1 == order(torch.Generator().manual_seed(0))
    assert epoch2 != epoch1 and order(torch.Generator().manual_seed(1)) != epoch1
    assert order(shuffle=False) == rows


def test_sample_weight_column(tiny_train, tiny_spec, tmp_path):
    spec = tiny_spec.model_copy(update={"sample_weight": "w"})
    frame = tiny_train.iloc[:20].copy()
    frame["w"] = np.linspace(0, 2, 20)
    schema = fit_schema(frame, spec)
    assert np.allclose(encode_frame(frame, schema)["weight"].numpy(), frame["w"].to_numpy())
    frame.loc[3, "w"] = -1.0
    with pytest.raises(DataError, match="column 'w': sample weights must be >= 0"):
        encode_frame(frame, schema)


def test_a_standardised_value_beyond_float32_is_an_input_error(tiny_train, tiny_schema):
    """A value inside float32's range whose standardised value is not (a training column with a
    tiny spread) is an error naming the column and row, never an inf fed to the model."""
    import dataclasses

    stats = tiny_schema.dense["user_age"]
    schema = dataclasses.replace(tiny_schema, dense={**tiny_schema.dense, "user_age": dataclasses.replace(stats, std=1e-10)})
    frame = tiny_train.head(5).copy()
    frame["user_age"] = frame["user_age"].astype(float)
    frame.loc[frame.index[3], "user_age"] = 1e30
    with pytest.raises(DataError, match=r"column 'user_age'.*float32 in data row 4"):
        encode_frame(frame, schema, with_labels=False)


def test_multi_valued_tokens_are_vocabulary_indices_and_unseen_tokens_oov(tiny_train, tiny_schema):
    """Each token -> its rank in the sorted training token set + 2; a token never seen -> OOV (1),
    not padding (0): an unseen tag still counts in the mean-pooled embedding."""
    vocab = sorted({tok for tags in tiny_train["tags"] for tok in tags.split(" ") if tok})
    first = vocab[0]
    frame = tiny_train.iloc[:3].copy()
    frame["tags"] = [f"{vocab[-1]} never_seen_tag", "never_seen_tag", first]
    tags = encode_frame(frame, tiny_schema)["multi.tags"].numpy()
    np.testing.assert_array_equal(tags[0, :3], [len(vocab) + 1, OOV, 0])
    np.testing.assert_array_equal(tags[1, :2], [OOV, 0])
    np.testing.assert_array_equal(tags[2, :2], [2, 0])


def test_dense_standardisation_is_numpys_mean_and_std_after_log1p():
    """z = (t(x) − mean_train t(x)) / std_train t(x) with NumPy's (population) std; t = log1p(max(x, 0))
    or the identity; a missing value -> 0; scoring rows use the training statistics."""
    from msmt.spec.dataset import DatasetSpec

    rng = np.random.default_rng(0)
    train = pd.DataFrame({"scenario": "a", "spend": rng.gamma(0.8, 50.0, 40), "age": rng.normal(30, 8, 40), "click": 0.0})
    train.loc[3, "spend"] = -2.0  # clipped at 0 before log1p
    spec = DatasetSpec.model_validate({
        "files": {"train": "in-memory"}, "scenario": {"column": "scenario"},
        "features": {"sparse": [], "dense": [{"name": "spend", "column": "spend", "transform": "log1p"}, "age"]},
        "tasks": [{"name": "click", "label": "click", "kind": "binary"}],
    })
    schema = fit_schema(train, spec)
    t = np.log1p(np.clip(train["spend"].to_numpy(), 0.0, None))
    age = train["age"].to_numpy()
    score = pd.DataFrame({"scenario": "a", "spend": [0.0, 10.0, 1e4, np.nan], "age": [30.0, 20.0, np.nan, 45.0]})
    got = encode_frame(score, schema, with_labels=False)["dense"].numpy()
    want_spend = (np.log1p([0.0, 10.0, 1e4]) - t.mean()) / t.std()
    want_age = (np.array([30.0, 20.0, 45.0]) - age.mean()) / age.std()
    np.testing.assert_allclose(got[:3, 0], want_spend, rtol=1e-5)
    np.testing.assert_allclose(got[[0, 1, 3], 1], want_age, rtol=1e-5)
    assert got[3, 0] == 0 and got[2, 1] == 0


def test_time_split_sorts_rows_given_in_any_order():
    """The time split orders by the time column, not by the table's row order: training rows are
    the earliest, test rows the latest, each part keeping the table's row order."""
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"t": rng.permutation(100), "x": np.arange(100)})
    parts = split_frame(frame, SplitSpec(method="time", time_column="t", validation_fraction=0.2, test_fraction=0.1))
    assert sorted(parts["train"]["t"]) == list(range(70))
    assert sorted(parts["validation"]["t"]) == list(range(70, 90))
    assert sorted(parts["test"]["t"]) == list(range(90, 100))
    for part in parts.values():
        assert part["x"].is_monotonic_increasing


@pytest.mark.parametrize("fold", [1, 2])
def test_a_backtest_fold_moves_every_split_one_test_size_earlier(fold):
    """``split.backtest_fold`` k: the latest k × 10 of 100 rows are in no split, and the others are split with
    fold 0's sizes (70 / 20 / 10), so fold 1's test rows are the 10 just before fold 0's (what a rolling-origin
    backtest scores); a row's part depends on its time alone."""
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"t": rng.permutation(100), "x": np.arange(100)})
    spec = {"method": "time", "time_column": "t", "validation_fraction": 0.2, "test_fraction": 0.1}
    parts = split_frame(frame, SplitSpec(**spec, backtest_fold=fold))
    end = 100 - 10 * fold
    assert sorted(parts["test"]["t"]) == list(range(end - 10, end))
    assert sorted(parts["validation"]["t"]) == list(range(end - 30, end - 10))
    assert sorted(parts["train"]["t"]) == list(range(end - 30))
    earlier = split_frame(frame, SplitSpec(**spec, backtest_fold=fold - 1))
    assert sorted(parts["test"]["t"]) == sorted(earlier["validation"]["t"])[-10:]


def test_a_backtest_fold_needs_a_time_split_with_a_test_share_and_enough_rows():
    with pytest.raises(ValueError, match="split.backtest_fold"):
        SplitSpec(method="random", validation_fraction=0.2, test_fraction=0.1, backtest_fold=1)
    with pytest.raises(ValueError, match="split.backtest_fold"):
        SplitSpec(method="time", time_column="t", validation_fraction=0.2, backtest_fold=1)
    from msmt.spec.dataset import DatasetSpec

    with pytest.raises(ValueError, match="split.backtest_fold: files.validation"):
        DatasetSpec.model_validate({
            "files": {"train": "a.csv", "validation": "b.csv"}, "scenario": {"column": "s"},
            "split": {"method": "time", "time_column": "t", "test_fraction": 0.1, "backtest_fold": 1},
            "tasks": [{"name": "y", "label": "y", "kind": "binary"}]})
    frame = pd.DataFrame({"t": np.arange(10), "x": np.arange(10)})
    with pytest.raises(DataError, match="too few rows"):
        split_frame(frame, SplitSpec(method="time", time_column="t", validation_fraction=0.4, test_fraction=0.3, backtest_fold=1))


def test_task_label_statistics_are_over_the_rows_where_the_task_exists():
    """``schema.task_stats[t]``: the "mean" and (population) "var" of t's training labels over the
    rows of its scenarios only (labels written in other scenarios are ignored), and "scenario_mean"
    per training scenario in schema order, the task's overall mean where it does not exist — all
    against pandas on the raw table."""
    from msmt.spec.dataset import DatasetSpec

    rng = np.random.default_rng(3)
    n = 90
    train = pd.DataFrame({
        "scenario": rng.choice(["a", "b", "c"], n), "colour": rng.choice(["r", "g"], n),
        "click": rng.integers(0, 2, n).astype(float), "plays": rng.poisson(2.0, n).astype(float),
    })
    train.loc[train["scenario"] == "c", "plays"] = 40.0  # plays does not exist in c: these labels must not count
    spec = DatasetSpec.model_validate({
        "files": {"train": "in-memory"}, "scenario": {"column": "scenario"},
        "features": {"sparse": ["colour"], "dense": []},
        "tasks": [{"name": "click", "label": "click", "kind": "binary"},
                  {"name": "plays", "label": "plays", "kind": "count", "scenarios": ["a", "b"]}],
    })
    schema = fit_schema(train, spec)
    assert schema.scenarios == ("a", "b", "c")
    stats = schema.task_stats
    click = train["click"]
    assert stats["click"]["mean"] == pytest.approx(click.mean())
    assert stats["click"]["var"] == pytest.approx(click.var(ddof=0))
    np.testing.assert_allclose(stats["click"]["scenario_mean"], click.groupby(train["scenario"]).mean()[["a", "b", "c"]])
    plays = train.loc[train["scenario"] != "c", "plays"]
    assert stats["plays"]["mean"] == pytest.approx(plays.mean())
    assert stats["plays"]["var"] == pytest.approx(plays.var(ddof=0))
    by = plays.groupby(train["scenario"]).mean()
    np.testing.assert_allclose(stats["plays"]["scenario_mean"], [by["a"], by["b"], plays.mean()])


@pytest.mark.parametrize("method", ["time", "random"])
def test_each_split_takes_the_whole_number_of_rows_nearest_its_share(tiny_train, method):
    """29 rows, 10% for validation and 25% for test: 3 (2.9) and 7 (7.25) rows, the rest for training."""
    frame = tiny_train.iloc[:29].reset_index(drop=True)
    parts = split_frame(frame, SplitSpec(method=method, time_column="timestamp", validation_fraction=0.1, test_fraction=0.25))
    assert {name: len(part) for name, part in parts.items()} == {"train": 19, "validation": 3, "test": 7}


def test_category_columns_are_read_as_written(tmp_path):
    """The group, a scenario attribute and the behaviour key are categories, read as text: '007' stays '007',
    a value apart from '7' (and from the number 7)."""
    raw = {"files": {"train": "x.csv"}, "scenario": {"column": "s", "attributes": {"sparse": ["region"]}},
           "features": {"sparse": ["item"]}, "tasks": [{"name": "y", "label": "y", "kind": "binary"}],
           "group": "user", "behaviour": {"key": "account", "time": "t", "tasks": ["y"]}}
    spec = dataset_spec_from(raw, tmp_path / "dataset.yaml")
    path = tmp_path / "x.csv"
    path.write_text("s,region,item,user,account,t,y\na,01,i,007,001,1,0\na,1,i,7,1,2,1\n")
    frame = read_data(path, spec)
    for column, values in {"region": ["01", "1"], "user": ["007", "7"], "account": ["001", "1"]}.items():
        assert frame[column].tolist() == values, column


def test_the_scenario_rule_names_the_first_bad_row_of_a_column_and_of_a_request(tiny_schema):
    """A file's column is checked once per distinct value, a request's values one by one: either way
    the problem reported is the first row's (here the unseen scenario at row 2, before the blank one)."""
    from msmt.data.validate import scenario_problem

    known = list(tiny_schema.scenarios)
    values = [known[0], known[-1], "tv_ads", known[0], "  ", "tv_ads"]
    for given in (pd.Series(values, index=range(10, 16)), values):
        row, problem = scenario_problem(given, tiny_schema)
        assert row == 2 and "'tv_ads' was not seen in training" in problem
    assert scenario_problem(pd.Series(values[:2] * 3), tiny_schema) is None
    assert scenario_problem(pd.Series([*values[:2], None]), tiny_schema) == (2, "missing scenario")
