"""A dataset config inferred from a table (``msmt init``): which column is which kind of feature.

Rules, in order, for every column that is not the scenario, a label, a ``true_<task>`` column,
the time column or dropped (``docs/own-data.md`` explains them to users):

* all missing, or one value only                          -> skipped (nothing to learn from)
* a name like ``time``, ``timestamp``, ``date``, ``ts``      -> skipped (give it as the time column)
* text in which most values hold a ``|``, or many a ``,``
  ``;`` or space with far fewer distinct items than cells  -> multi_sparse (tags, genres)
* text that reads as dates                                 -> skipped (give it as the time column)
* text with a distinct value on (nearly) every row         -> skipped (a row identifier)
* booleans, text, integers with few distinct values, or
  integers named like an identifier (``id``, ``user_id``)  -> sparse: a vocabulary of the values;
  more than ``vocab_limit`` distinct values                 -> values seen once share the
                                                              out-of-vocabulary row (min_count 2);
  more than ``hash_limit``                                  -> hashed into buckets instead
* other numbers                                            -> dense, ``log1p`` first when they are
                                                              non-negative and skewed
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from msmt.spec.dataset import TaskKind
from msmt.spec.errors import ConfigError

TIME_NAME = re.compile(r"(^|_)(time|timestamp|date|datetime|ts)$", re.IGNORECASE)
ID_NAME = re.compile(r"(^|_)(id|Id|ID)$|[a-z]I[dD]$")  # id, user_id, USER_ID, userId, userID (not "paid")
FEW_INTEGERS = 20  # integer columns with at most this many distinct values are categories
SKEW = 2.0  # non-negative dense columns more skewed than this are log1p-transformed
MULTI_SHARE = 0.5  # text columns with a '|' in at least this share of values are multi-valued


@dataclass
class Choice:
    """What ``msmt init`` made of one column, and why (written as a comment beside it)."""

    column: str
    kind: str  # sparse | dense | multi_sparse | skip
    why: str
    options: dict[str, Any] = field(default_factory=dict)


def _is_integral(values: pd.Series) -> bool:
    x = values.to_numpy(dtype=np.float64)
    return bool(np.all(np.isfinite(x)) and np.all(x == np.round(x)))


def _looks_like_dates(values: pd.Series) -> bool:
    sample = values.astype(str).head(200)
    if not sample.str.contains(r"\d{1,4}[-/.:]\d{1,2}", regex=True).mean() > 0.9:
        return False
    parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() > 0.9)


def _multi_valued(text: pd.Series, distinct: int) -> Choice | None:
    """A multi_sparse choice when the cells are lists: '|' in most of them, or ',' / ';' / ' '
    in many of them with far fewer distinct items than distinct cells (tags, genres; not names)."""
    for sep in ("|", ",", ";", " "):
        share = text.str.contains(sep, regex=False).mean()
        if share < (MULTI_SHARE if sep == "|" else 0.3):
            continue
        items = text.str.split(sep, regex=False)
        tokens = items.explode().str.strip()
        if sep == "|" or tokens[tokens != ""].nunique() < 0.5 * distinct:
            longest = int(min(items.map(len).max(), 32))
            shown = "' '" if sep == " " else f"'{sep}'"
            return Choice(str(text.name), "multi_sparse", f"lists of values separated by {shown}", {"separator": sep, "max_length": longest})
    return None


def _sparse(column: str, distinct: int, why: str, vocab_limit: int, hash_limit: int) -> Choice:
    if distinct > hash_limit:
        buckets = min(2 ** math.ceil(math.log2(distinct)), 2**22)
        return Choice(column, "sparse", f"{why}, {distinct:,} distinct values: hashed into {buckets:,} buckets", {"hash_buckets": buckets})
    if distinct > vocab_limit:
        return Choice(column, "sparse", f"{why}, {distinct:,} distinct values: values seen once share the out-of-vocabulary row", {"min_count": 2})
    return Choice(column, "sparse", f"{why}, {distinct:,} distinct values")


def infer_column(values: pd.Series, vocab_limit: int = 10_000, hash_limit: int = 200_000) -> Choice:
    """The feature kind of one column (rules in the module docstring)."""
    column = str(values.name)
    present = values.dropna()
    distinct = int(present.nunique())
    if distinct == 0:
        return Choice(column, "skip", "all values missing")
    if distinct == 1:
        return Choice(column, "skip", f"one value only ({present.iloc[0]!r})")
    if pd.api.types.is_bool_dtype(values):
        return Choice(column, "sparse", "true/false")
    if TIME_NAME.search(column):
        return Choice(column, "skip", "a time column (by its name): pass it as --time to split by it")
    if pd.api.types.is_numeric_dtype(values):
        integral = _is_integral(present)
        if integral and ID_NAME.search(column):
            return _sparse(column, distinct, "an identifier (by its name)", vocab_limit, hash_limit)
        if integral and distinct <= FEW_INTEGERS:
            return Choice(column, "sparse", f"{distinct} distinct integers: categories")
        x = present.to_numpy(dtype=np.float64)
        skew = float(pd.Series(x).skew()) if len(x) > 2 else 0.0
        if x.min() >= 0 and skew > SKEW:
            return Choice(column, "dense", f"number, non-negative and skewed (skewness {skew:.1f}): log1p first", {"transform": "log1p"})
        return Choice(column, "dense", "number")
    text = present.astype(str)
    multi = _multi_valued(text, distinct)
    if multi is not None:
        return multi
    if _looks_like_dates(text):
        return Choice(column, "skip", "dates: pass it as the time column (--time) to split by it")
    if distinct >= 0.95 * len(text) and distinct > 100:
        return Choice(column, "skip", "a different value on nearly every row (a row identifier)")
    return _sparse(column, distinct, "text", vocab_limit, hash_limit)


def infer_task_kind(values: pd.Series, name: str) -> TaskKind:
    """binary for 0/1 labels, count for non-negative integers, regression for other numbers."""
    numeric = pd.to_numeric(values.dropna(), errors="coerce")
    if numeric.isna().any() or not len(numeric):
        raise ConfigError(f"--task {name}: label column '{values.name}' is not numeric; give the kind (NAME:binary|count|regression) after encoding it as numbers")
    if set(np.unique(numeric)) <= {0, 1}:
        return TaskKind.BINARY
    if numeric.min() >= 0 and _is_integral(numeric):
        return TaskKind.COUNT
    return TaskKind.REGRESSION


def parse_task(text: str) -> tuple[str, str | None, str]:
    """``NAME[:KIND[:LABEL]]`` -> (name, kind or None, label column; default the name)."""
    parts = text.split(":")
    if not parts[0] or len(parts) > 3:
        raise ConfigError(f"--task '{text}': expected NAME, NAME:KIND or NAME:KIND:LABEL")
    name = parts[0]
    kind = parts[1] if len(parts) > 1 and parts[1] else None
    if kind is not None and kind not in [k.value for k in TaskKind]:
        raise ConfigError(f"--task '{text}': unknown kind '{kind}' (expected one of {[k.value for k in TaskKind]})")
    label = parts[2] if len(parts) > 2 and parts[2] else name
    return name, kind, label


@dataclass
class Inferred:
    """A dataset config (the mapping a dataset YAML holds) and the choice made for each column."""

    config: dict[str, Any]
    choices: list[Choice]
    rows: int


def infer_dataset(
    frame: pd.DataFrame, scenario: str, tasks: list[str], *, name: str = "dataset", train_file: str = "data.csv",
    time: str | None = None, group: str | None = None, drop: tuple[str, ...] = (),
    vocab_limit: int = 10_000, hash_limit: int = 200_000,
) -> Inferred:
    """A dataset config for ``frame`` (rules: module docstring). ``tasks``: ``NAME[:KIND[:LABEL]]``."""
    missing = [c for c in [scenario, time, group, *drop] if c and c not in frame.columns]
    if missing:
        raise ConfigError(f"no column(s) {missing} in the data (columns: {list(frame.columns)})")
    if not tasks:
        raise ConfigError("give at least one --task NAME[:KIND[:LABEL]] (the label columns to predict)")
    task_entries = []
    for text in tasks:
        task, kind, label = parse_task(text)
        if label not in frame.columns:
            raise ConfigError(f"--task {text}: no label column '{label}' in the data (columns: {list(frame.columns)})")
        kind = kind or infer_task_kind(frame[label], task).value
        task_entries.append({"name": task, "label": label, "kind": kind})
    labels = {t["label"] for t in task_entries}
    truths = {f"true_{t['name']}" for t in task_entries}
    reserved = {scenario: "the scenario column", **{label: "a label" for label in labels}, **{t: "ground truth of a task" for t in truths}}
    if time:
        reserved[time] = "the time column (split by it)"
    for column in drop:
        reserved[column] = "dropped (--drop)"

    choices = []
    for column in frame.columns:
        if column in reserved:
            choices.append(Choice(str(column), "skip", reserved[column]))
        else:
            choices.append(infer_column(frame[column], vocab_limit, hash_limit))
    features: dict[str, list] = {"sparse": [], "dense": [], "multi_sparse": []}
    for c in choices:
        if c.kind != "skip":
            features[c.kind].append({"name": c.column, "column": c.column, **c.options})
    if not any(features.values()):
        raise ConfigError("no feature columns left: every column is the scenario, a label, the time column, dropped or skipped")
    split = {"method": "time", "time_column": time} if time else {"method": "random"}
    config: dict[str, Any] = {
        "name": name,
        "files": {"train": train_file},
        "split": {**split, "validation_fraction": 0.1, "test_fraction": 0.1, "seed": 0},
        "scenario": {"column": scenario},
        "features": {k: v for k, v in features.items() if v},
        "tasks": task_entries,
    }
    if group:
        config["group"] = group
    return Inferred(config, choices, len(frame))


def dataset_yaml(inferred: Inferred, source: str) -> str:
    """The dataset YAML, one line per feature with the reason for its kind as a comment."""
    import yaml

    def flow(item) -> str:
        text = yaml.safe_dump(item, default_flow_style=True, sort_keys=False, width=10_000)
        return text.removesuffix("\n...\n").strip()  # a plain scalar ends with a document-end marker

    cfg, why = inferred.config, {c.column: c.why for c in inferred.choices}
    lines = [
        f"# Written by `msmt init` from {source} ({inferred.rows:,} rows read); edit freely.",
        "# Every key: docs/config-reference.md; the rules behind each feature kind: docs/own-data.md",
        f"name: {flow(cfg['name'])}",
        f"files: {flow(cfg['files'])}",
        f"split: {flow(cfg['split'])}",
        f"scenario: {flow(cfg['scenario'])}",
        "features:",
    ]
    for kind, items in cfg["features"].items():
        lines.append(f"  {kind}:")
        width = max(len(flow(i)) for i in items)
        lines += [f"    - {flow(i):<{width}}  # {why[i['column']]}" for i in items]
    lines.append("tasks:")
    lines += [f"  - {flow(t)}" for t in cfg["tasks"]]
    if "group" in cfg:
        lines.append(f"group: {flow(cfg['group'])}  # the unit of msmt adapt's personal blocks")
    skipped = [c for c in inferred.choices if c.kind == "skip"]
    if skipped:
        lines.append("# columns that are not features:")
        lines += [f"#   {c.column}: {c.why}" for c in skipped]
    return "\n".join(lines) + "\n"


def experiment_yaml(dataset_file: str, model: str, monitor: str = "loss") -> str:
    """A starting experiment config for the dataset (``msmt train`` reads it as is)."""
    return (
        "# Written by `msmt init`: msmt train THIS_FILE [--set key=value ...]. Every key: docs/config-reference.md\n"
        f"dataset: {dataset_file}\n"
        "model:\n"
        f"  name: {model}  # single_task, shared_bottom, sbmm, mmoe, ple, esmm, star, m2m\n"
        "  embedding_dim: 16\n"
        "  hidden_dims: [128, 64]\n"
        "  tower_dims: [32]\n"
        "train:\n"
        "  seed: 0\n"
        "  epochs: 10\n"
        "  batch_size: 1024\n"
        "  lr: 0.001\n"
        "  patience: 2\n"
        f"  monitor: {monitor}  # or <task>.<metric>, e.g. click.auc\n"
    )


def read_sample(path: Path, rows: int) -> pd.DataFrame:
    """The first ``rows`` rows of a CSV or Parquet file, types as pandas infers them."""
    from msmt.data.io import PARQUET_SUFFIXES
    from msmt.spec.errors import DataError

    if not path.exists():
        raise DataError(str(path), None, "no such file")
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            frame = pd.read_parquet(path).head(rows)
        else:
            frame = pd.read_csv(path, nrows=rows)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(str(path), None, f"cannot read table ({exc})") from None
    if not len(frame):
        raise DataError(str(path), None, "empty file (no data rows)")
    frame.attrs["source"] = str(path)  # errors found in the sample name the file
    return frame
