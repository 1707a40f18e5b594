"""ESCM² (Wang et al., SIGIR 2022): the counterfactual regulariser equals its closed form on a toy
batch (IPS and DR), uses pCTR as a constant propensity, reads only clicked rows' conversions
(IPS), and is what ``extra_losses`` hands the trainer; the network is ESMM's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import model_config
from msmt.data.fit import fit_schema
from msmt.data.loading import load_splits
from msmt.data.tensorize import encode_frame
from msmt.models import build_model
from msmt.models.escm2 import ESCM2
from msmt.spec.batch import take
from msmt.spec.config import load_dataset_spec
from msmt.synth.funnel import write_funnel

CLICK = np.array([1, 0, 1, 1, 0, 1.0])
CONVERSION = np.array([1, 0, 0, 1, 0, 0.0])  # r = click · conversion
CTR_LOGIT = np.array([0.3, -2.0, -3.5, 1.2, 0.0, -0.4])  # pCTR(-3.5) = 0.029: 1/p̂ capped at 15
CVR_LOGIT = np.array([0.8, 0.5, -0.2, 2.0, -1.0, 0.1])
IMPUTED = np.array([0.4, 0.9, 0.1, 0.2, 0.6, 0.3])


@pytest.fixture(scope="module")
def funnel(tmp_path_factory):
    out = write_funnel(tmp_path_factory.mktemp("escm2_funnel"), rows=1500, seed=3)
    spec = load_dataset_spec(out / "dataset.yaml")
    train = load_splits(spec)["train"]
    schema = fit_schema(train, spec)
    return schema, encode_frame(train, schema)


def make(schema, **escm2):
    torch.manual_seed(0)
    return build_model(schema, model_config("escm2", hidden_dims=[16], tower_dims=[8], escm2=escm2))


def bce(y, logit):
    p = 1 / (1 + np.exp(-logit))
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def reference(mode: str, weight: float = 0.5, cap: float = 15.0) -> float:
    inverse = np.minimum(1 + np.exp(-CTR_LOGIT), cap)  # 1 / pCTR, capped
    e = bce(CONVERSION, CVR_LOGIT)
    if mode == "ips":
        return weight * np.mean(CLICK * e * inverse)
    gap = e - IMPUTED
    return weight * np.mean(IMPUTED + CLICK * gap * inverse + CLICK * gap**2 * inverse)


def toy(*arrays):
    return [torch.tensor(a, dtype=torch.float32, requires_grad=True) for a in arrays]


@pytest.mark.parametrize("mode", ["ips", "dr"])
def test_regulariser_is_the_closed_form(funnel, mode):
    schema, _ = funnel
    model = make(schema, counterfactual=mode)
    o, r, ctr, cvr, imp = toy(CLICK, CONVERSION, CTR_LOGIT, CVR_LOGIT, IMPUTED)
    got = model.regulariser(o, r, ctr, cvr, imp if mode == "dr" else None)
    assert float(got.detach()) == pytest.approx(reference(mode), rel=1e-5)
    got.backward()
    assert ctr.grad is None or not ctr.grad.any()  # the propensity is a constant
    if mode == "ips":  # only clicked rows carry the CVR error
        assert (cvr.grad[CLICK == 0] == 0).all() and (cvr.grad[CLICK == 1] != 0).all()
    other = make(schema, counterfactual=mode, weight=2.0, max_inverse_propensity=4.0)
    with torch.no_grad():
        capped = other.regulariser(*toy(CLICK, CONVERSION, CTR_LOGIT, CVR_LOGIT), *(toy(IMPUTED) if mode == "dr" else []))
    assert float(capped) == pytest.approx(reference(mode, 2.0, 4.0), rel=1e-5)


def test_extra_losses_hand_the_regulariser_of_the_batch_to_the_trainer(funnel):
    schema, data = funnel
    batch = take(data, slice(0, 300))
    model = make(schema).eval()
    with torch.no_grad():
        out = model(batch)
        cvr = model.auxiliary_outputs(batch)["cvr"]
        got = model.extra_losses(batch, out)
    click, ctcvr = batch["labels"][:, 0], batch["labels"][:, 1]
    want = model.regulariser(click, ctcvr, out["click"], cvr)
    assert set(got) == {"counterfactual"}
    torch.testing.assert_close(got["counterfactual"], want)
    # an unclicked impression's conversion label never enters the IPS term
    flipped = dict(batch, labels=batch["labels"].clone())
    unclicked = click == 0
    flipped["labels"][unclicked, 1] = 1.0
    with torch.no_grad():
        again = model.extra_losses(flipped, out)["counterfactual"]
    torch.testing.assert_close(again, got["counterfactual"])


def test_escm2_is_esmm_plus_the_regulariser(funnel, tiny_schema):
    schema, data = funnel
    batch = take(data, slice(0, 64))
    torch.manual_seed(0)
    esmm = build_model(schema, model_config("esmm", hidden_dims=[16], tower_dims=[8])).eval()
    escm2 = make(schema).eval()
    escm2.load_state_dict(esmm.state_dict())  # IPS adds no parameter
    with torch.no_grad():
        for t, v in esmm(batch).items():
            torch.testing.assert_close(escm2(batch)[t], v)
    assert ESCM2.not_applicable(schema.spec) is None
    assert ESCM2.not_applicable(tiny_schema.spec) is not None  # no funnel declared: ESMM's reason
    assert make(tiny_schema).extra_losses({}, {}) == {}


def test_rows_without_the_funnel_carry_no_click(funnel):
    """Where the product task does not exist (``task_mask`` False: another scenario's rows), o = 0:
    those rows add nothing to the IPS sum (the mean is still over the batch)."""
    schema, data = funnel
    batch = take(data, slice(0, 300))
    batch["task_mask"] = batch["task_mask"].clone()
    product = schema.spec.task_names.index("ctcvr")
    batch["task_mask"][::3, product] = False
    model = make(schema, weight=0.5, max_inverse_propensity=15.0).eval()
    with torch.no_grad():
        out = model(batch)
        cvr = model.auxiliary_outputs(batch)["cvr"].double().numpy()
        got = float(model.extra_losses(batch, out)["counterfactual"])
    click = batch["labels"][:, schema.spec.task_names.index("click")].double().numpy()
    conversion = batch["labels"][:, product].double().numpy()
    o = click * batch["task_mask"][:, product].double().numpy()
    assert (click[::3] > 0).any()  # some masked rows were clicked
    inverse = np.minimum(1 + np.exp(-out["click"].double().numpy()), 15.0)
    assert got == pytest.approx(0.5 * np.mean(o * bce(conversion, cvr) * inverse), rel=1e-5)
