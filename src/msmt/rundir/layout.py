"""The run directory contract (DESIGN.md): what ``train`` writes and every other command reads.

::

    RUN_DIR/config.yaml      the resolved config (re-running it reproduces the run)
    RUN_DIR/schema.json      fitted encoders
    RUN_DIR/model.safetensors weights only: loading never runs pickled code
    RUN_DIR/metrics.json     {"val": M, "test": M}
    RUN_DIR/history.csv      per-epoch losses and validation metrics
    RUN_DIR/refit_history.csv  train.refit: the same for the refit on training + validation rows
    RUN_DIR/report.md        tables + plots/*.png
    RUN_DIR/point_forecast.json  factors of the count tasks' point forecast (train.point_forecast: scaled | median)
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, load_model, save_model

from msmt.data.io import atomic_write, atomic_write_text
from msmt.models import build_model
from msmt.models.base import MultiTaskModel
from msmt.rundir.manifest import safetensors_shapes, verify
from msmt.rundir.provenance import PROVENANCE
from msmt.runtime.device import model_device
from msmt.scoring.point import PointScales, load_point_scales
from msmt.spec.config import ExperimentConfig, dump_yaml, validate_experiment
from msmt.spec.errors import MsmtError, RunDirError
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
    point: PointScales | None = None  # the count tasks' point forecast for absolute errors (msmt.scoring.point)


def save_weights(model: MultiTaskModel, path: str | Path) -> None:
    """``model``'s weights as safetensors, written from CPU tensors (a model trained on a GPU is
    copied to the CPU first), so evaluate / predict / serve load them on a machine without one."""
    if model_device(model).type != "cpu":
        model = copy.deepcopy(model).to("cpu")
    atomic_write(path, lambda tmp: save_model(model, str(tmp)))


META_RATES = "meta_rates.safetensors"  # Meta-SGD's learned inner rates (meta.algorithm: metasgd)
REFIT_HISTORY = "refit_history.csv"  # train.refit: the refit's epochs on training + validation rows (validation in-sample)
META_HISTORY = "meta_history.csv"  # meta-training's learning curve: (episode, mean query loss) per tenth of the episodes


def save_meta_rates(rates: dict, path: str | Path) -> None:
    from safetensors.torch import save_file

    plain = {n: r.detach().contiguous().cpu() for n, r in rates.items()}
    atomic_write(path, lambda tmp: save_file(plain, str(tmp)))


def load_meta_rates(run_dir: str | Path) -> dict | None:
    """Meta-SGD's per-parameter inner rates of a run ({parameter name: tensor}), or None."""
    from safetensors.torch import load_file

    path = Path(run_dir) / META_RATES
    return load_file(str(path)) if path.exists() else None


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
    path = Path(run_dir) / PROVENANCE
    if not path.exists():
        return "0.1.0"
    try:
        record = json.loads(path.read_text())
        return str(record.get("msmt", "0.1.0"))
    except (OSError, ValueError, AttributeError) as exc:  # damaged: the version (and so what to check) is unknown
        raise RunDirError(f"{path}: damaged ({type(exc).__name__}: {exc})") from None


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


def _read_config(run_dir: Path) -> ExperimentConfig:
    path = run_dir / CONFIG
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a mapping at the top level")
    return validate_experiment(upgrade_config(data, written_by(run_dir)), source=str(path))


def _read_schema(run_dir: Path) -> FittedSchema:
    path = run_dir / SCHEMA
    if not path.is_file():
        raise RunDirError(f"{path}: missing")
    try:
        return FittedSchema.load(path)
    except MsmtError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:  # truncated or edited JSON
        raise RunDirError(f"{path}: not a valid fitted schema ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None


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


CHOICE = "forecast.choice"  # the forecast offset's fitted choice (model.forecast: auto)


def _load_with_default_choice(model: MultiTaskModel, path: Path) -> None:
    """Weights of a run whose ``auto`` forecast offset was the trailing mean for every task (msmt
    0.2.0 before the offset chose per task): every other tensor as stored, the choice = mean."""
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise RunDirError(f"{path}: cannot read the weights ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    state[CHOICE] = torch.full_like(model.state_dict()[CHOICE], model.forecast.candidates.index("mean"))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise RunDirError(f"{path}: {' '.join(str(exc).split())[:300]} (weights and config/schema do not belong together)") from None


def _load_weights(model: MultiTaskModel, path: Path, version: str = "0.2.0") -> None:
    if not path.is_file():
        raise RunDirError(f"{path}: missing")
    if version.startswith("0.1.") and model.registry_name == "sbmm":  # stored under 0.1's names
        try:
            model.load_state_dict(upgrade_weights(load_file(str(path)), "sbmm", version), strict=True)
        except Exception as exc:
            raise RunDirError(f"{path}: cannot read the weights ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
        return
    expected = {name: list(t.shape) for name, t in model.state_dict().items()}
    found = safetensors_shapes(path)
    if CHOICE in expected and CHOICE not in found:  # written before model.forecast: auto chose per task
        found[CHOICE] = expected[CHOICE]
        legacy_choice = True
    else:
        legacy_choice = False
    for name in sorted(set(expected) | set(found)):
        if expected.get(name) != found.get(name):
            what = "missing" if name not in found else ("not a tensor of this model" if name not in expected else f"shape {found[name]}, the model of config.yaml/schema.json has {expected[name]}")
            raise RunDirError(f"{path}: tensor '{name}': {what} (weights and config/schema do not belong together)")
    if legacy_choice:
        _load_with_default_choice(model, path)
    else:
        try:
            load_model(model, str(path), strict=True)
        except Exception as exc:  # safetensors' own error types (corrupt data offsets, dtype)
            raise RunDirError(f"{path}: cannot read the weights ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            raise RunDirError(f"{path}: tensor '{name}' holds non-finite values")


def load_run(run_dir: str | Path) -> LoadedRun:
    """Config, schema and model of a finished run, weights loaded without unpickling.

    The run is checked first against its ``manifest.json`` (:mod:`msmt.rundir.manifest`; a run
    written by msmt 0.1 has none); every problem is a :class:`RunDirError` naming the file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: not a run directory ({'a file' if run_dir.exists() else 'no such folder'})")
    if not (run_dir / CONFIG).is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no {CONFIG})")
    verify(run_dir, written_by(run_dir))
    cfg = _read_config(run_dir)
    schema = _read_schema(run_dir)
    try:
        model = build_model(schema, cfg.model)
    except MsmtError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:
        raise RunDirError(f"{run_dir / SCHEMA}: cannot build the model of {CONFIG} from it ({type(exc).__name__}: {exc})") from None
    _load_weights(model, run_dir / WEIGHTS, written_by(run_dir))
    model.eval()
    return LoadedRun(run_dir, cfg, schema, model, load_point_scales(run_dir))
