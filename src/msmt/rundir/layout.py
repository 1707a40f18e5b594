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
from safetensors.torch import load_file, save_model

from msmt.data.io import atomic_write, atomic_write_text
from msmt.models import build_model
from msmt.models.base import MultiTaskModel
from msmt.rundir.provenance import PROVENANCE
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


def written_by(run_dir: str | Path) -> str:
    """The msmt version that wrote a run directory (``provenance.json``; runs without one: 0.1.0)."""
    try:
        return str(json.loads((Path(run_dir) / PROVENANCE).read_text()).get("msmt", "0.1.0"))
    except (OSError, json.JSONDecodeError):
        return "0.1.0"


def upgrade_config(data: dict, version: str) -> dict:
    """A resolved config written by an older msmt, in today's terms (the same model and loss).

    0.1.x: M2M ignored ``model.tower_dims`` and ``model.use_scenario_feature``, kept the profile
    out of its experts and mean-pooled a post-norm sequence encoder; no model had a forecast
    offset and task losses were not normalised.
    """
    if not version.startswith("0.1."):
        return data
    data = copy.deepcopy(data)
    model = data.setdefault("model", {})
    model.setdefault("forecast", "none")
    data.setdefault("loss", {}).setdefault("normalise", False)
    if model.get("name") == "m2m":
        model["tower_dims"], model["use_scenario_feature"] = [], False
        m2m = model.setdefault("m2m", {}) or {}
        model["m2m"] = {"profile_in_experts": False, "sequence_encoder": "mean_pool", **m2m}
    return data


def load_run(run_dir: str | Path) -> LoadedRun:
    """Config, schema and model of a finished run, weights loaded without unpickling."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise ConfigError(f"{run_dir}: not a run directory (no {CONFIG})")
    version = written_by(run_dir)
    data = upgrade_config(yaml.safe_load((run_dir / CONFIG).read_text()), version)
    cfg = validate_experiment(data, source=str(run_dir / CONFIG))
    schema = FittedSchema.load(run_dir / SCHEMA)
    model = build_model(schema, cfg.model)
    weights = run_dir / WEIGHTS
    if not weights.exists():
        raise ConfigError(f"{run_dir}: no {WEIGHTS}")
    state = upgrade_weights(load_file(str(weights)), cfg.model.name, version)
    model.load_state_dict(state, strict=True)
    model.eval()
    return LoadedRun(run_dir, cfg, schema, model)


def upgrade_weights(state: dict, model: str, version: str) -> dict:
    """Weights written by an older msmt under today's parameter names (the same function).

    0.1.x SBMM stored every tower layer as ``towers.weights.i`` [P, a, b] / ``towers.biases.i``
    [P, 1, b], the output layer last; the output layer is now one row per (scenario, task)
    pair: ``towers.out_weight`` [P·T, h] and ``towers.out_bias`` [P·T].
    """
    if not version.startswith("0.1.") or model != "sbmm":
        return state
    state = dict(state)
    last = max(int(k.rsplit(".", 1)[1]) for k in state if k.startswith("towers.weights."))
    w, b = state.pop(f"towers.weights.{last}"), state.pop(f"towers.biases.{last}")  # [P, h, T], [P, 1, T]
    state["towers.out_weight"] = w.transpose(1, 2).reshape(-1, w.shape[1]).contiguous()  # (p, t) order
    state["towers.out_bias"] = b[:, 0].reshape(-1).contiguous()
    return state
