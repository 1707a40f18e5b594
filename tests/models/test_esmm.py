"""ESMM: pCTCVR is exactly pCTR x pCVR, the loss is ESMM's, CVR learns over all impressions.

Also the funnel simulator (``msmt synth funnel``) against its own ground truth.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from msmt.cli import main
from msmt.data.fit import fit_schema
from msmt.data.loading import load_splits
from msmt.data.tensorize import encode_frame
from msmt.evaluation.evaluate import evaluate_auxiliary
from msmt.layers.probability import log1mexp, product_logit
from msmt.models import build_model
from msmt.scoring.predict import predict
from msmt.spec.batch import take
from msmt.spec.config import ModelConfig, load_dataset_spec, load_experiment
from msmt.spec.dataset import DatasetSpec
from msmt.spec.errors import ConfigError
from msmt.synth.funnel import make_funnel, write_funnel
from msmt.training.loop import fit
from msmt.training.losses import task_losses


def esmm_cfg(**kw) -> ModelConfig:
    return ModelConfig.model_validate({"name": "esmm", "embedding_dim": 4, "hidden_dims": [16], "tower_dims": [8], **kw})


@pytest.fixture(scope="module")
def funnel(tmp_path_factory):
    out = write_funnel(tmp_path_factory.mktemp("funnel"), rows=3000, seed=1)
    spec = load_dataset_spec(out / "dataset.yaml")
    splits = load_splits(spec)
    schema = fit_schema(splits["train"], spec)
    return out, spec, splits, schema


def test_log1mexp_matches_float64_reference():
    x = -torch.logspace(-12, 2.5, 400, dtype=torch.float64)
    ref = torch.log(1 - torch.exp(x))
    got = log1mexp(x.float()).double()
    finite = torch.isfinite(ref)
    torch.testing.assert_close(got[finite], ref[finite], rtol=1e-5, atol=1e-6)


def test_product_logit_is_the_logit_of_the_product_and_stable():
    a = torch.tensor([-40.0, -5.0, -0.3, 0.0, 2.0, 8.0, 30.0, 80.0])
    b = torch.tensor([3.0, -2.0, 0.7, 0.0, 2.0, 9.0, 30.0, 90.0])
    logit = product_logit(torch.stack([a, b], -1))
    p_ref = torch.sigmoid(a.double()) * torch.sigmoid(b.double())
    torch.testing.assert_close(torch.sigmoid(logit.double()), p_ref, rtol=1e-5, atol=1e-12)
    # BCE-with-logits on the composed logit is exactly BCE on the product of probabilities
    for y in (0.0, 1.0):
        target = torch.full_like(a, y)
        naive = -(y * torch.log(p_ref) + (1 - y) * torch.log1p(-p_ref))
        got = F.binary_cross_entropy_with_logits(logit, target, reduction="none").double()
        ok = p_ref < 1 - 1e-6  # beyond float32's resolution near 1 the logit is capped (p <= 1 - 1e-7)
        torch.testing.assert_close(got[ok], naive[ok], rtol=1e-4, atol=1e-6)
    a.requires_grad_(True)
    b.requires_grad_(True)
    loss = F.binary_cross_entropy_with_logits(product_logit(torch.stack([a, b], -1)), torch.ones_like(a)).sum()
    loss.backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_ctcvr_output_equals_ctr_times_cvr(funnel):
    _, spec, splits, schema = funnel
    model = build_model(schema, esmm_cfg()).eval()
    batch = encode_frame(splits["validation"], schema)
    out = model(batch)
    aux = model.auxiliary_outputs(batch)
    assert set(out) == {"click", "ctcvr"} and set(aux) == {"cvr"}
    p = torch.sigmoid(out["ctcvr"].double())
    torch.testing.assert_close(p, torch.sigmoid(out["click"].double()) * torch.sigmoid(aux["cvr"].double()), rtol=1e-5, atol=1e-9)


def test_loss_is_esmm_loss_and_cvr_learns_from_unclicked_impressions(funnel):
    _, spec, splits, schema = funnel
    model = build_model(schema, esmm_cfg())
    batch = encode_frame(splits["train"], schema)
    losses = task_losses(spec.tasks, model(batch), batch["labels"], batch["weight"])
    p_ctr = torch.sigmoid(model(batch)["click"]).detach().double()
    p_cvr = torch.sigmoid(model.auxiliary_outputs(batch)["cvr"]).detach().double()
    click, conv = batch["labels"][:, 0].double(), batch["labels"][:, 1].double()
    p = p_ctr * p_cvr
    ref_ctcvr = -(conv * p.log() + (1 - conv) * (1 - p).log()).mean()
    ref_ctr = -(click * p_ctr.log() + (1 - click) * (1 - p_ctr).log()).mean()
    assert float(losses["ctcvr"].detach()) == pytest.approx(float(ref_ctcvr), rel=1e-5)
    assert float(losses["click"].detach()) == pytest.approx(float(ref_ctr), rel=1e-5)
    # rows that were never clicked still train the CVR tower (entire-space learning)
    unclicked = take(batch, torch.nonzero(batch["labels"][:, 0] == 0).flatten())
    model.zero_grad()
    sum(task_losses(spec.tasks, model(unclicked), unclicked["labels"], unclicked["weight"]).values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.towers["cvr"].parameters())


def test_ctcvr_loss_trains_both_factor_towers_as_the_product_does(funnel):
    """Gradient check: ∂ BCE(conv, pCTR·pCVR) / ∂θ for the CTR and the CVR towers equals the gradient
    of the same loss written naively in float64 on the towers' logits (Ma et al., Eq. 3): the CTCVR
    loss trains the CTR tower too, not only the CVR one (neither factor is held constant)."""
    _, spec, splits, schema = funnel
    torch.manual_seed(0)
    model = build_model(schema, esmm_cfg())
    batch = encode_frame(splits["train"].iloc[:128], schema)
    conv = batch["labels"][:, 1].double()
    towers = [model.towers["click"], model.towers["cvr"]]
    params = [q for tower in towers for q in tower.parameters()]
    got = torch.autograd.grad(task_losses(spec.tasks, model(batch), batch["labels"], batch["weight"])["ctcvr"], params)
    emb = model.encoder(batch)
    p = torch.sigmoid(towers[0](emb).squeeze(-1).double()) * torch.sigmoid(towers[1](emb).squeeze(-1).double())
    naive = -(conv * p.log() + (1 - conv) * (1 - p).log()).mean()
    want = torch.autograd.grad(naive, params)
    assert all(float(w.abs().sum()) > 0 for w in want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)


def test_without_products_esmm_is_shared_embeddings_with_towers(tiny_schema, tiny_train):
    model = build_model(tiny_schema, esmm_cfg()).eval()
    out = model(encode_frame(tiny_train.iloc[:10], tiny_schema))
    assert set(out) == {"click", "purchase", "dwell"} and model.auxiliary_outputs(encode_frame(tiny_train.iloc[:3], tiny_schema)) == {}
    assert {id(p) for p in model.shared_parameters()} == {id(p) for p in model.encoder.parameters()}


def test_product_declaration_is_validated(funnel):
    out, spec, _, _ = funnel
    raw = yaml.safe_load((out / "dataset.yaml").read_text())
    raw["files"] = {"train": "x.csv"}
    bad = {**raw, "tasks": [raw["tasks"][0], {**raw["tasks"][1], "product_of": ["click", "nope"]}]}
    with pytest.raises(ValueError, match="product_of: unknown task or auxiliary output 'nope'"):
        DatasetSpec.model_validate(bad)
    bad = {**raw, "tasks": [raw["tasks"][0], {**raw["tasks"][1], "kind": "count"}]}
    with pytest.raises(ValueError, match="only binary tasks"):
        DatasetSpec.model_validate(bad)
    bad = {**raw, "auxiliary": [{"name": "click"}]}
    with pytest.raises(ValueError, match="auxiliary: names must differ"):
        DatasetSpec.model_validate(bad)
    deeper = {"name": "again", "label": raw["tasks"][1]["label"], "kind": "binary", "product_of": [raw["tasks"][1]["name"], "click"]}
    bad = {**raw, "tasks": [*raw["tasks"], deeper]}  # a factor that is itself a product
    with pytest.raises(ValueError, match="must be a plain \\(non-product\\) output"):
        DatasetSpec.model_validate(bad)
    path = out / "bad.yaml"
    path.write_text(yaml.safe_dump({**raw, "tasks": [raw["tasks"][0], {**raw["tasks"][1], "product_of": ["nope"]}]}))
    with pytest.raises(ConfigError, match="bad.yaml: .*nope"):
        load_dataset_spec(path)


def test_funnel_generator_matches_its_ground_truth():
    f = make_funnel(rows=40000, seed=3)
    assert f.equals(make_funnel(rows=40000, seed=3))  # deterministic in the seed
    assert (f["conversion"] <= f["click"]).all()  # a conversion needs a click
    assert (f["conversion"] == f["click"] * f["would_convert"]).all()
    np.testing.assert_allclose(f["true_ctcvr"], f["true_click"] * f["true_cvr"])
    # empirical rates match the true probabilities, per decile of the truth
    for label, truth in (("click", "true_click"), ("would_convert", "true_cvr")):
        bins = np.quantile(f[truth], np.linspace(0, 1, 6))
        idx = np.clip(np.searchsorted(bins, f[truth], side="right") - 1, 0, 4)
        for b in range(5):
            rows = idx == b
            se = np.sqrt(f[truth][rows].mean() * (1 - f[truth][rows].mean()) / rows.sum())
            assert abs(f[label][rows].mean() - f[truth][rows].mean()) < 4 * se + 1e-3
    # selection bias by construction: clicked impressions convert less often than average
    assert f.loc[f["click"] == 1, "true_cvr"].mean() < f["true_cvr"].mean()


def test_synth_funnel_command_and_esmm_training(tmp_path):
    with pytest.raises(SystemExit) as done:
        main(["synth", "funnel", "--out", str(tmp_path / "f"), "--rows", "3000", "--seed", "2"])
    assert done.value.code == 0
    cfg = load_experiment(tmp_path / "f" / "experiment.yaml", ["train.epochs=2", "train.progress=false", "model.hidden_dims=[16]"])
    splits = load_splits(cfg.dataset)
    schema = fit_schema(splits["train"], cfg.dataset)
    enc = {k: encode_frame(v, schema) for k, v in splits.items()}
    torch.manual_seed(0)
    model = build_model(schema, cfg.model)
    result = fit(model, cfg.train, cfg.loss, enc["train"], enc["validation"], splits["validation"])
    assert result.val_metrics["overall"]["ctcvr"]["auc"] is not None
    M = evaluate_auxiliary(model, splits["test"], enc["test"])
    assert M["overall"]["cvr"]["rows"] == len(splits["test"]) and "oracle" in M
    p = predict(model, enc["test"], auxiliary=True).values["cvr"]
    assert p.shape == (len(splits["test"]),) and ((p > 0) & (p < 1)).all()
