"""PLE: gate structure, customised gate control (which experts each task may read), levels."""

from __future__ import annotations

import pytest
import torch

from msmt.data.fit import fit_schema
from msmt.data.tensorize import encode_frame
from msmt.models import build_model
from msmt.spec.config import ModelConfig, validate_experiment
from msmt.training.losses import task_losses


def ple_cfg(**ple) -> ModelConfig:
    return ModelConfig.model_validate(
        {"name": "ple", "embedding_dim": 4, "hidden_dims": [16], "tower_dims": [8], "ple": ple}
    )


@pytest.fixture(scope="module")
def batch(tiny_train, tiny_schema):
    return encode_frame(tiny_train.iloc[:64].reset_index(drop=True), tiny_schema)


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_gate_widths_and_shapes(levels, tiny_schema, batch):
    model = build_model(tiny_schema, ple_cfg(num_levels=levels, task_experts=2, shared_experts=3)).eval()
    T = len(tiny_schema.spec.tasks)
    assert len(model.levels) == levels
    for i, level in enumerate(model.levels):
        assert all(g.out_features == 2 + 3 for g in level.task_gates)  # own experts + shared ones
        if i < levels - 1:
            assert level.shared_gate.out_features == T * 2 + 3  # every expert of the level
        else:
            assert level.shared_gate is None  # the last level feeds only the towers
    out = model(batch)
    assert all(v.shape == (64,) for v in out.values())


def test_one_level_matches_a_hand_written_cgc(tiny_schema, batch):
    model = build_model(tiny_schema, ple_cfg(num_levels=1, task_experts=2, shared_experts=2)).eval()
    x = model.encoder(batch)
    level = model.levels[0]
    for t, name in enumerate(model.task_names):
        experts = [e(x) for e in level.task_experts[t]] + [e(x) for e in level.shared_experts]
        gate = torch.softmax(level.task_gates[t](x), dim=-1)  # [B, 4]
        z = sum(gate[:, j : j + 1] * experts[j] for j in range(4))
        torch.testing.assert_close(model(batch)[name], model.towers[name](z).squeeze(-1))


def _softmax_rows(logits):
    """Softmax over the last axis (the experts of one row), written out."""
    e = torch.exp(logits - logits.max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


def naive_ple(model, x):
    """{task: [B]} from x [B, D], level by level: task t's gate mixes [own experts ; shared experts]
    of its own input; below the last level a shared gate mixes every expert of the level (all
    tasks' and the shared ones) for the next level's shared input (Tang et al., Sec. 4.2-4.3)."""
    T = model.num_tasks
    task_in, shared_in = [x] * T, x
    for level in model.levels:
        shared = [e(shared_in) for e in level.shared_experts]
        own = [[e(task_in[t]) for e in level.task_experts[t]] for t in range(T)]
        outs = []
        for t in range(T):
            experts = own[t] + shared
            g = _softmax_rows(task_in[t] @ level.task_gates[t].weight.T + level.task_gates[t].bias)
            assert g.shape[1] == len(experts)
            outs.append(sum(g[:, j : j + 1] * experts[j] for j in range(len(experts))))
        if level.shared_gate is not None:
            experts = [e for t in range(T) for e in own[t]] + shared
            g = _softmax_rows(shared_in @ level.shared_gate.weight.T + level.shared_gate.bias)
            assert g.shape[1] == len(experts)
            shared_in = sum(g[:, j : j + 1] * experts[j] for j in range(len(experts)))
        task_in = outs
    return {name: model.towers[name](task_in[i]).squeeze(-1) for i, name in enumerate(model.task_names)}


@pytest.mark.parametrize("levels", [2, 3])
def test_multi_level_ple_matches_a_hand_written_reference(tiny_schema, batch, levels):
    """Every level by hand, shared gates included: a shared gate made uniform or input-independent,
    or one that drops the task experts, changes the next level's shared input and the towers' inputs."""
    torch.manual_seed(0)
    model = build_model(tiny_schema, ple_cfg(num_levels=levels, task_experts=2, shared_experts=3)).eval()
    with torch.no_grad():
        for level in model.levels[:-1]:  # gates away from their near-uniform start
            level.shared_gate.weight.mul_(8.0)
        out = model(batch)
        ref = naive_ple(model, model.encoder(batch))
    for t in model.task_names:
        torch.testing.assert_close(out[t], ref[t], rtol=1e-5, atol=1e-6)


def perturbed(model, module, batch):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.5)
    return model(batch)


def test_a_task_reads_only_its_own_and_shared_experts_at_the_last_level(tiny_schema, batch):
    torch.manual_seed(0)
    model = build_model(tiny_schema, ple_cfg(num_levels=1)).eval()
    before = model(batch)
    after = perturbed(model, model.levels[0].task_experts[1], batch)  # experts of task 1 only
    torch.testing.assert_close(after["click"], before["click"])
    torch.testing.assert_close(after["dwell"], before["dwell"])
    assert not torch.allclose(after["purchase"], before["purchase"])
    after2 = perturbed(model, model.levels[0].shared_experts, batch)
    assert all(not torch.allclose(after2[t], after[t]) for t in model.task_names)


def test_with_two_levels_knowledge_flows_through_the_shared_gate(tiny_schema, batch):
    torch.manual_seed(0)
    model = build_model(tiny_schema, ple_cfg(num_levels=2)).eval()
    before = model(batch)
    after = perturbed(model, model.levels[0].task_experts[1], batch)  # level-1 experts of task 1
    assert not torch.allclose(after["click"], before["click"])  # reach task 0 via level-2 shared experts


def test_single_task_ple_trains(tiny_dir, tiny_train):
    import yaml

    raw = yaml.safe_load((tiny_dir / "dataset.yaml").read_text())
    raw["files"] = {k: str(tiny_dir / v) for k, v in raw["files"].items()}
    raw["tasks"] = raw["tasks"][:1]
    cfg = validate_experiment({"dataset": raw, "model": ple_cfg().model_dump()})
    schema = fit_schema(tiny_train, cfg.dataset)
    batch = encode_frame(tiny_train.iloc[:256], schema)
    torch.manual_seed(0)
    model = build_model(schema, cfg.model)
    assert len(model.levels[-1].task_gates) == 1
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss():
        return task_losses(schema.spec.tasks, model(batch), batch["labels"], batch["weight"])["click"]

    start = float(loss().detach())
    for _ in range(30):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert float(loss().detach()) < 0.9 * start


def test_last_shared_layer_and_shared_parameters(tiny_schema):
    model = build_model(tiny_schema, ple_cfg(num_levels=2, shared_experts=3))
    layer = model.last_shared_layer()
    assert len(layer) == 3 and all(isinstance(m, torch.nn.Linear) for m in layer)
    shared = {id(p) for p in model.shared_parameters()}
    assert all(id(p) in shared for p in layer.parameters())
    assert not any(id(p) in shared for p in model.towers.parameters())
    assert not any(id(p) in shared for p in model.levels[-1].task_experts.parameters())


def test_bad_ple_section_names_the_key():
    with pytest.raises(ValueError, match="model.ple.num_levels"):
        ple_cfg(num_levels=0)
    with pytest.raises(ValueError, match="unknown key 'model.ple.levels'"):
        ple_cfg(levels=2)
