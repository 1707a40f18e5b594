"""``docs/config-reference.md``, generated from the typed config models.

Every key of an experiment config and of a dataset config, with its type, default, bounds and
description: the field's ``description``, else the comments beside or above it in the class's
source. ``tests/spec/test_config_reference.py`` fails when the page differs from what this
module writes; regenerate it with::

    python -m msmt.spec.reference > docs/config-reference.md
"""

from __future__ import annotations

import enum
import inspect
import json
import re
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from msmt.spec import dataset as ds
from msmt.spec.config import LossConfig, MetaConfig, ModelConfig, TrainConfig
from msmt.spec.sections import model_names, model_section, strategy_names, strategy_section

COMMAND = "python -m msmt.spec.reference > docs/config-reference.md"
_FIELD = re.compile(r"^\s+(\w+)\s*:")
_BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "min length"}


def _comments(cls: type[BaseModel]) -> dict[str, str]:
    """Field name -> the comment lines right above it plus its trailing comment (own class only)."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    out, pending = {}, []
    for line in lines[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = _FIELD.match(line)
        if match and match.group(1) in cls.model_fields and match.group(1) not in out:
            trailing = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            out[match.group(1)] = " ".join([*pending, trailing]).strip()
        pending = []
    return out


def _type(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_type(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        inner = [a for a in args if a is not Ellipsis]
        return f"list of {_type(inner[0])}" if inner else "list"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.__name__
    return getattr(annotation, "__name__", str(annotation))


def _value(value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{json.dumps(value, ensure_ascii=False, default=str)}`"


def _default(field) -> str:
    if field.default_factory is not None:
        return _value(field.default_factory())
    if field.default is PydanticUndefined:
        return "**required**"
    return _value(field.default)


def _bounds(field) -> str:
    found = []
    for item in field.metadata:
        for attr, sign in _BOUNDS.items():
            if getattr(item, attr, None) is not None:
                found.append(f"{sign} {getattr(item, attr)}")
    return ", ".join(found)


def table(cls: type[BaseModel], prefix: str, skip: tuple[str, ...] = ()) -> list[str]:
    """A markdown table of ``cls``'s fields as ``prefix.<key>`` rows."""
    comments = _comments(cls)
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, field in cls.model_fields.items():
        if name in skip:
            continue
        text = field.description or comments.get(name, "")
        bounds = _bounds(field)
        if bounds:
            text = f"{text} ({bounds})" if text else f"({bounds})"
        text = text.replace("|", "\\|")
        rows.append(f"| `{prefix}{name}` | {_type(field.annotation)} | {_default(field)} | {text} |")
    return rows


def _doc(cls: type) -> str:
    return inspect.cleandoc(cls.__doc__ or "").strip()


def _section(title: str, cls: type[BaseModel], prefix: str, skip: tuple[str, ...] = ()) -> list[str]:
    out = [f"### {title}", ""]
    doc = _doc(cls)
    if doc and cls.__doc__ is not BaseModel.__doc__:
        out += [doc, ""]
    return out + table(cls, prefix, skip) + [""]


def config_reference() -> str:
    """The whole page."""
    lines = [
        "# Configuration reference",
        "",
        f"Generated from the typed config models by `{COMMAND}`",
        "(`tests/spec/test_config_reference.py` fails when this page is out of date). Unknown keys",
        "are errors that name the key. Any key can be set on the command line with",
        "`msmt train CONFIG --set key=value` (values are read as YAML: `--set model.hidden_dims=[64,32]`)",
        "or from Python with `msmt.train(config, overrides={\"key\": value})`.",
        "",
        "## Experiment config (`experiment.yaml`)",
        "",
        "Top-level keys: `dataset` (a dataset config inline, or the path of one relative to this file;",
        "see below), `model`, `train`, `loss`, `meta`. A run directory's `config.yaml` holds all of them",
        "with every default written out.",
        "",
        "`per_model` (optional) holds settings that differ per model: `per_model: {m2m: {train: {ema_epochs: 3}}}`.",
        "The entry of the model the config selects (`model.name`, the file's or `--set`'s) is laid over the",
        "file's `model`, `train`, `loss` and `meta` values, key by key, and under `--set`; other models' entries",
        "are checked but not used, and `config.yaml` holds the settings the run used, without the section.",
        "`benchmarks/setting_choice.py --per-model` writes the block from each model's validated choice.",
        "",
    ]
    lines += _section("`model`: shared by every model", ModelConfig, "model.")
    for name in model_names():
        section = model_section(name)
        if section.model_fields:
            lines += _section(f"`model.{name}`: only when `model.name: {name}`", section, f"model.{name}.")
    no_params = [n for n in model_names() if not model_section(n).model_fields]
    lines += [f"Models with no section of their own: {', '.join(f'`{n}`' for n in no_params)}.", ""]
    lines += _section("`train`", TrainConfig, "train.")
    lines += _section("`loss`", LossConfig, "loss.")
    for name in strategy_names():
        section = strategy_section(name)
        if section.model_fields:
            lines += _section(f"`loss.{name}`: only when `loss.strategy: {name}`", section, f"loss.{name}.")
    lines += _section("`meta`", MetaConfig, "meta.")
    lines += [
        "## Dataset config (`dataset.yaml`)",
        "",
        "`msmt init DATA --scenario COL --task NAME:KIND ...` writes one for your own data",
        "(`docs/own-data.md`). File paths are relative to the dataset config.",
        "",
    ]
    lines += _section("top level", ds.DatasetSpec, "")
    lines += _section("`files`", ds.FileSet, "files.")
    lines += _section("`split`: used when `files.validation` is not given", ds.SplitSpec, "split.")
    lines += _section("`scenario`", ds.ScenarioSpec, "scenario.")
    lines += _section("`features` (and `scenario.attributes`)", ds.FeatureSet, "features.")
    lines += [
        "Each feature list also accepts plain column names (`sparse: [user_id, item_id]`): the name",
        "is then the column.",
        "",
    ]
    lines += _section("`features.sparse[]`", ds.SparseFeature, "")
    lines += _section("`features.dense[]`", ds.DenseFeature, "")
    lines += _section("`features.multi_sparse[]`", ds.MultiSparseFeature, "")
    lines += _section("`tasks[]`", ds.Task, "")
    lines += _section("`auxiliary[]`", ds.AuxiliaryOutput, "")
    lines += _section("`panel`", ds.PanelSpec, "panel.")
    lines += _section("`behaviour`", ds.BehaviourSpec, "behaviour.")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(config_reference(), end="")
