"""Personal blocks per advertiser compose with every panel model at request time (history from the
store), as `msmt predict` composes them; a block written for other base weights is refused at start."""

from __future__ import annotations

import shutil
import warnings
from fnmatch import fnmatch

import numpy as np
import pytest
from safetensors.torch import save_file
from serve_helpers import SPECS, json_records, msmt_predict

from helpers import run_main
from msmt.data.loading import read_data
from msmt.models.registry import model_class, model_names
from msmt.rundir.blocks import save_blocks
from msmt.rundir.layout import load_run
from msmt.rundir.manifest import write_manifest
from msmt.serving.app import create_app
from msmt.spec.errors import MsmtError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient warns about its httpx transport
    from fastapi.testclient import TestClient

DATASET = "sim_advertiser"
MODELS = [m for m in model_names() if model_class(m).not_applicable(SPECS[DATASET]) is None]


def personal_names(model) -> list[str]:
    """The parameters a block replaces: meta.personal's default ``towers.*``, else the model's last two."""
    names = [n for n, _ in model.named_parameters()]
    towers = [n for n in names if fnmatch(n, "towers.*")]
    return towers or names[-2:]


def with_blocks(run_dir, out, groups: dict[str, float]):
    """A copy of the run with a block per group: its personal parameters shifted."""
    shutil.copytree(run_dir, out)
    model = load_run(out).model
    params = dict(model.named_parameters())
    blocks = {g: {n: params[n].detach() + shift for n in personal_names(model)} for g, shift in groups.items()}
    save_blocks(out, blocks)
    return out


@pytest.mark.parametrize("model", MODELS)
def test_blocks_compose_with_panel_models_as_msmt_predict(model, tiny_dataset, tiny_model_run, history_store, tmp_path):
    ds = tiny_dataset(DATASET)
    spec = SPECS[DATASET]
    rows = read_data(ds["rows"], spec)
    advertisers = sorted(rows["advertiser_id"].unique())
    personal = {advertisers[0]: 0.3, advertisers[1]: -0.2}
    run_dir = with_blocks(tiny_model_run(DATASET, model), tmp_path / "run", personal)
    expected = msmt_predict(run_dir, ds["rows"], tmp_path / "pred.parquet", context=ds["history"])
    base = msmt_predict(tiny_model_run(DATASET, model), ds["rows"], tmp_path / "base.parquet", context=ds["history"])

    client = TestClient(create_app(load_run(run_dir), history=history_store(DATASET, spec)))
    answer = client.post("/v1/predict", json={"rows": json_records(rows)}).json()
    is_personal = rows["advertiser_id"].isin(list(personal)).to_numpy()
    assert answer["personal"] == is_personal.tolist() and is_personal.any() and not is_personal.all()
    moved = np.zeros(len(rows), dtype=bool)
    for task in spec.task_names:
        got = np.array([p[task] for p in answer["predictions"]])
        np.testing.assert_allclose(got, expected[f"pred_{task}"].to_numpy(), atol=1e-6, rtol=1e-6, err_msg=task)
        same = np.isclose(got, base[f"pred_{task}"].to_numpy(), atol=1e-6, rtol=1e-6)
        assert same[~is_personal].all()  # the others: the base
        moved |= ~same
    assert moved[is_personal].all()  # every personal row's forecast moved with its block


def test_a_block_for_other_base_weights_is_refused_at_start(tiny_dataset, tiny_model_run, tmp_path, capsys):
    ds = tiny_dataset(DATASET)
    run_dir = with_blocks(tiny_model_run(DATASET, "mmoe"), tmp_path / "run", {"adv00000": 0.5})
    other = tmp_path / "other"
    shutil.copytree(tiny_model_run(DATASET, "mmoe"), other)
    model = load_run(other).model
    with_more = {n: p.detach() * 1.01 for n, p in model.state_dict().items()}  # same architecture, other weights
    save_file(with_more, str(other / "model.safetensors"))
    write_manifest(other)  # a complete run directory with a retrained base
    shutil.copytree(run_dir / "blocks", other / "blocks")
    with pytest.raises(MsmtError, match="adapted from another base model") as info:
        create_app(load_run(other))
    assert "\n" not in str(info.value) and "index.json" in str(info.value)
    assert run_main("serve", other, "--port", "0") == 2  # refused before the server starts
    assert "adapted from another base model" in capsys.readouterr().err
    assert run_main("predict", other, "--data", ds["rows"], "--out", tmp_path / "p.csv") == 2  # predict refuses it too
    create_app(load_run(run_dir))  # the blocks' own base is accepted
