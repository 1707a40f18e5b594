"""The run directory contract (DESIGN.md): what ``train`` writes and every other command reads.

::

    RUN_DIR/config.yaml      the resolved config (re-running it reproduces the run)
    RUN_DIR/schema.json      fitted encoders
    RUN_DIR/model.safetensors weights only: loading never runs pickled code
    RUN_DIR/metrics.json     {"val": M, "test": M}
    RUN_DIR/history.csv      per-epoch losses and validation metrics
    RUN_DIR/report.md        tables + plots/*.png
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from safetensors.torch import load_model, save_model

from msmt.data.io import atomic_write, atomic_write_text
from msmt.models import build_model
from msmt.models.base import MultiTaskModel
from msmt.runtime.device import model_device
from msmt.spec.config import ExperimentConfig, dump_yaml, validate_experiment
from msmt.spec.errors import ConfigError
from msmt.spec.fitted import FittedSchema

CONFIG, SCHEMA, WEIGHTS, METRICS, HISTORY, REPORT = (
    "config.yaml",
    "schema.json",
    "model.safetensors",
    "metrics.json",
    "history.csv",
    "report.md",
)


@dataclass
class LoadedRun:
    path: Path
    config: ExperimentConfig
    schema: FittedSchema
    model: MultiTaskModel


def save_weights(model: MultiTaskModel, path: str | Path) -> None:
    """``model``'s weights as safetensors, written from CPU tensors (a model trained on a GPU is
    copied to the CPU first), so evaluate / predict / serve load them on a machine without one."""
    if model_device(model).type != "cpu":
        model = copy.deepcopy(model).to("cpu")
    atomic_write(path, lambda tmp: save_model(model, str(tmp)))


def save_schema(schema: FittedSchema, path: str | Path) -> None:
    atomic_write_text(path, schema.to_json())


def write_config(run_dir: Path, cfg: ExperimentConfig) -> None:
    atomic_write_text(run_dir / CONFIG, dump_yaml(cfg.to_dict()))


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False, default=_json_default))


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def load_run(run_dir: str | Path) -> LoadedRun:
    """Config, schema and model of a finished run, weights loaded without unpickling."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise ConfigError(f"{run_dir}: not a run directory (no {CONFIG})")
    cfg = validate_experiment(yaml.safe_load((run_dir / CONFIG).read_text()), source=str(run_dir / CONFIG))
    schema = FittedSchema.load(run_dir / SCHEMA)
    model = build_model(schema, cfg.model)
    weights = run_dir / WEIGHTS
    if not weights.exists():
        raise ConfigError(f"{run_dir}: no {WEIGHTS}")
    load_model(model, str(weights), strict=True)
    model.eval()
    return LoadedRun(run_dir, cfg, schema, model)
