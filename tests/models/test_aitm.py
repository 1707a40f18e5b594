"""AITM (Xi et al., KDD 2021): information moves only forward along the funnel, the AIT module
is the paper's attention over [p_{t−1}, q_t], and the behavioural expectation calibrator
α · mean max(ŷ_t − ŷ_{t−1}, 0) holds (in closed form, and it makes the funnel monotone)."""

from __future__ import annotations

import pytest
import torch

from helpers import encoded, model_config
from msmt.data.fit import fit_schema
from msmt.data.loading import load_splits
from msmt.data.tensorize import encode_frame
from msmt.layers.ait import AdaptiveInformationTransfer
from msmt.models import build_model
from msmt.models.aitm import AITM, funnel_of
from msmt.spec.config import load_dataset_spec
from msmt.spec.errors import ConfigError
from msmt.synth.funnel import write_funnel
from msmt.training.losses import batch_losses


@pytest.fixture(scope="module")
def funnel(tmp_path_factory):
    out = write_funnel(tmp_path_factory.mktemp("aitm_funnel"), rows=4000, seed=2)
    spec = load_dataset_spec(out / "dataset.yaml")
    splits = load_splits(spec)
    schema = fit_schema(splits["train"], spec)
    return schema, encode_frame(splits["train"], schema)


@pytest.fixture(scope="module")
def batch(tiny_train, tiny_schema):
    return encoded(tiny_train.iloc[:128].reset_index(drop=True), tiny_schema)


def make(schema, **aitm):
    torch.manual_seed(0)
    return build_model(schema, model_config("aitm", hidden_dims=[16], tower_dims=[8], **({"aitm": aitm} if aitm else {})))


def test_the_funnel_is_the_declared_one(funnel, tiny_schema):
    schema, _ = funnel
    assert make(schema).funnel == ["click", "ctcvr"]  # ctcvr product_of [click, cvr]
    assert AITM.not_applicable(schema.spec) is None
    assert "no funnel is declared" in AITM.not_applicable(tiny_schema.spec)
    assert make(tiny_schema).funnel == ["click", "purchase"]  # undeclared: the binary tasks in order
    assert make(tiny_schema, funnel=["purchase", "click"]).funnel == ["purchase", "click"]
    with pytest.raises(ConfigError, match="model.aitm.funnel"):
        make(tiny_schema, funnel=["click", "dwell"])  # a count task is no funnel step
    assert funnel_of(tiny_schema.spec, make(tiny_schema).params) == ["click", "purchase"]


def test_ait_attends_over_the_transferred_and_own_vectors():
    torch.manual_seed(0)
    ait = AdaptiveInformationTransfer(6)
    p, q = torch.randn(5, 6), torch.randn(5, 6)
    z = ait(p, q)
    for n in range(5):
        u = torch.stack([p[n], q[n]])  # [2, k]
        scores = torch.stack([ait.query(u[i]) @ ait.key(u[i]) for i in range(2)]) / 6**0.5
        w = scores.softmax(0)
        torch.testing.assert_close(z[n], w[0] * ait.value(u[0]) + w[1] * ait.value(u[1]))


def test_information_flows_only_forward_along_the_funnel(tiny_schema, batch):
    model = make(tiny_schema).eval()
    out = model(batch)
    later = [*model.towers["purchase"].parameters(), *model.transfer["purchase"].parameters(),
             *model.ait["purchase"].parameters(), *model.heads["purchase"].parameters()]
    earlier = list(model.towers["click"].parameters())
    # the first step never reads the second ...
    assert all(g is None for g in torch.autograd.grad(out["click"].sum(), later, allow_unused=True, retain_graph=True))
    # ... the second reads the first (its transferred information)
    grads = torch.autograd.grad(out["purchase"].sum(), earlier, allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        for prm in later:
            prm.add_(0.3)
        moved = model(batch)
    torch.testing.assert_close(moved["click"], out["click"].detach(), rtol=0, atol=0)
    assert (moved["purchase"] - out["purchase"]).abs().max() > 1e-3


def test_calibrator_is_the_closed_form():
    a = torch.tensor([0.0, 2.0, -1.0, 1.0, -3.0], requires_grad=True)  # click logits
    b = torch.tensor([1.0, 1.0, -1.0, 3.0, -4.0], requires_grad=True)  # conversion logits
    model = AITM.__new__(AITM)  # the calibrator needs only the funnel and α
    torch.nn.Module.__init__(model)
    model.funnel, model.task_names, model.calibrator_weight = ["click", "conv"], ["click", "conv"], 0.6
    got = model.calibrator({"click": a, "conv": b})
    excess = torch.clamp(torch.sigmoid(b) - torch.sigmoid(a), min=0)
    assert float(got.detach()) == pytest.approx(0.6 * float(excess.detach().mean()), rel=1e-6)
    assert float(excess[1].detach()) == 0 and float(excess[0].detach()) > 0  # only where P(conversion) > P(click)
    got.backward()
    violating = torch.sigmoid(b) > torch.sigmoid(a)
    assert (b.grad[violating] > 0).all() and (a.grad[violating] < 0).all()  # pushes the later step down, the earlier up
    assert (b.grad[~violating] == 0).all() and (a.grad[~violating] == 0).all()
    # rows where the funnel does not exist (a task absent in their scenario) are left out
    mask = torch.tensor([[True, False], [True, True], [True, True], [True, True], [True, True]])
    with torch.no_grad():
        partial = model.calibrator({"click": a, "conv": b}, mask)
        assert float(partial) == pytest.approx(0.6 * float(excess[1:].sum() / 5), rel=1e-6)
        # three steps: the sum over consecutive pairs
        c = torch.tensor([2.0, 0.0, -2.0, 4.0, -1.0])
        model.funnel = model.task_names = ["click", "conv", "pay"]
        three = model.calibrator({"click": a, "conv": b, "pay": c})
        second = torch.clamp(torch.sigmoid(c) - torch.sigmoid(b), min=0)
        assert float(second.sum()) > 0
        assert float(three) == pytest.approx(0.6 * float(excess.mean() + second.mean()), rel=1e-6)


def test_the_calibrator_keeps_conversion_below_click(funnel):
    """Trained on a steep funnel (95% of clicks convert, so the two steps' probabilities are close)
    with and without the calibrator: with it, pCTCVR ≤ pCTR on (nearly) every impression, as the
    paper states; without it, the independently fitted heads cross often."""
    schema, data = funnel
    data = dict(data, labels=data["labels"].clone())
    keep = torch.rand(data["labels"].shape[0], generator=torch.Generator().manual_seed(3)) < 0.95
    data["labels"][:, 1] = data["labels"][:, 0] * keep
    rates = {}
    for alpha in (0.0, 5.0):
        model = make(schema, calibrator_weight=alpha).train()
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        gen = torch.Generator().manual_seed(0)
        n = data["scenario"].shape[0]
        for _ in range(4):
            for idx in torch.randperm(n, generator=gen).split(256):
                b = {k: v[idx] for k, v in data.items()}
                out = model(b)
                loss = sum(batch_losses(schema.spec.tasks, out, b).values()) + sum(model.extra_losses(b, out).values())
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            out = model(data)
        rates[alpha] = float((torch.sigmoid(out["ctcvr"]) > torch.sigmoid(out["click"])).float().mean())
    assert rates[5.0] < 0.02 and rates[0.0] > 0.2, rates  # observed: 0.007 with, 0.9 without


def test_auxiliary_cvr_is_the_quotient_of_the_funnel(funnel):
    schema, data = funnel
    model = make(schema).eval()
    with torch.no_grad():
        out = model(data)
        cvr = model.auxiliary_outputs(data)["cvr"]
    ratio = (torch.sigmoid(out["ctcvr"].double()) / torch.sigmoid(out["click"].double())).clamp_max(1 - 1e-7)
    torch.testing.assert_close(torch.sigmoid(cvr.double()), ratio, rtol=1e-4, atol=1e-6)
