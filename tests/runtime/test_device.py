"""``train.device``: resolution, the nccl/gloo choice, and placement in the training loop.

No GPU exists where these tests were written, so the CUDA path is checked by other means:
the decision logic with ``torch.cuda`` queries monkeypatched; the placement code by running it
with the ``meta`` device (tensors with shapes and no data, which refuse to mix with CPU tensors)
until the first point where a number must be read back; the collectives by spying on the
tensors they receive. ``test_cuda_training_matches_cpu`` runs only where CUDA exists.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as tdist
from safetensors.torch import load_file

import msmt.training.loop
from helpers import DeviceMixCheck, model_config
from msmt.cli import main
from msmt.data.loading import load_splits
from msmt.data.tensorize import encode_frame
from msmt.experiments.run import run_experiment
from msmt.meta import meta_train, plan_meta
from msmt.meta.finetune import finetune
from msmt.models import build_model
from msmt.rundir.layout import load_run
from msmt.runtime.device import backend_for, model_device, resolve_device
from msmt.scoring.predict import predict_batches
from msmt.spec.batch import num_rows, to_device
from msmt.spec.config import load_experiment
from msmt.spec.errors import ConfigError
from msmt.training.checkpoint import rng_state, set_rng_state
from msmt.training.distributed import Dist, init_from_env
from msmt.training.loop import fit, validation_loss
from msmt.training.losses import build_balancer, task_losses

META = torch.device("meta")
NO_DATA = (NotImplementedError, RuntimeError)  # reading a number out of a meta tensor (.item / copy to CPU)
FAST = ["train.epochs=1", "train.batch_size=128", "train.progress=false", "train.num_threads=1"]


def fake_cuda(monkeypatch, count: int) -> None:
    """``torch.cuda`` answers as on a machine with ``count`` GPUs (0: none)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def torchrun_env(world: int, local_rank: int, rank: int | None = None) -> dict[str, str]:
    """torchrun's variables for one process; ``rank`` (global) defaults to ``local_rank`` (one node)."""
    return {"WORLD_SIZE": str(world), "LOCAL_RANK": str(local_rank), "RANK": str(local_rank if rank is None else rank)}


# --------------------------------------------------------------------------- resolution


@pytest.mark.parametrize(
    "spec, gpus, env, expected",
    [
        ("cpu", 0, {}, "cpu"),
        ("auto", 0, {}, "cpu"),
        ("cpu", 2, {}, "cpu"),  # a GPU present does not override an explicit cpu
        ("auto", 2, {}, "cuda:0"),
        ("cuda", 2, {}, "cuda:0"),
        ("cuda:1", 2, {}, "cuda:1"),
        ("cuda", 4, torchrun_env(2, 1), "cuda:1"),  # torchrun: one GPU per rank
        ("auto", 4, torchrun_env(4, 3), "cuda:3"),
        ("cuda", 2, torchrun_env(4, 1, rank=3), "cuda:1"),  # second node: the node's GPU, by LOCAL_RANK, not RANK
        ("cpu", 4, torchrun_env(2, 1), "cpu"),
        ("auto", 0, torchrun_env(2, 1), "cpu"),
    ],
)
def test_device_resolution(monkeypatch, spec, gpus, env, expected):
    fake_cuda(monkeypatch, gpus)
    device = resolve_device(spec, env)
    assert device == torch.device(expected)
    assert backend_for(device) == ("nccl" if expected.startswith("cuda") else "gloo")


@pytest.mark.parametrize(
    "spec, gpus, env, message",
    [
        ("cuda", 0, {}, "torch.cuda.is_available"),
        ("cuda:0", 0, {}, "torch.cuda.is_available"),
        ("cuda", 0, torchrun_env(2, 0), "torch.cuda.is_available"),
        ("cuda:2", 2, {}, "only 2 CUDA device"),
        ("cuda", 1, torchrun_env(2, 1), "LOCAL_RANK 1 but only 1 CUDA device"),
        ("cuda:0", 2, torchrun_env(2, 0), "each rank takes cuda:LOCAL_RANK"),
        ("gpu", 2, {}, "not a device"),
    ],
)
def test_device_resolution_errors_name_train_device(monkeypatch, spec, gpus, env, message):
    fake_cuda(monkeypatch, gpus)
    with pytest.raises(ConfigError, match="train.device") as err:
        resolve_device(spec, env)
    assert message in str(err.value)


def test_config_accepts_device_names_and_rejects_others(tiny_dir):
    for spec in ("cpu", "cuda", "cuda:3", "auto"):
        assert load_experiment(tiny_dir / "experiment.yaml", [f"train.device={spec}"]).train.device == spec
    for bad in ("gpu", "CUDA", "cuda:", "cuda:x", "mps", "cpu:0"):
        with pytest.raises(ConfigError, match=r"train\.device"):
            load_experiment(tiny_dir / "experiment.yaml", [f"train.device={bad}"])


def test_cli_asking_for_cuda_without_one_is_a_one_line_error(monkeypatch, tiny_dir, tmp_path, capsys):
    fake_cuda(monkeypatch, 0)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["train", str(tiny_dir / "experiment.yaml"), "--out", str(out), "--quiet", "--set", "train.device=cuda"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.device" in err and "Traceback" not in err
    assert not out.exists()  # refused before anything was read or written


# --------------------------------------------------------------------------- process group


class FakeGroup:
    """Stands in for torch.distributed's process-group calls and records the order of events."""

    def __init__(self, monkeypatch):
        self.events: list[tuple] = []
        self.backend: str | None = None
        monkeypatch.setattr(tdist, "is_initialized", lambda: self.backend is not None)
        monkeypatch.setattr(tdist, "init_process_group", self.init)
        monkeypatch.setattr(tdist, "get_backend", lambda: self.backend)
        monkeypatch.setattr(tdist, "get_rank", lambda: 1)
        monkeypatch.setattr(tdist, "get_world_size", lambda: 2)
        monkeypatch.setattr(torch.cuda, "set_device", lambda d: self.events.append(("set_device", torch.device(d))))

    def init(self, backend, **kwargs):
        self.events.append(("init_process_group", backend))
        self.backend = backend


@pytest.mark.parametrize(
    "spec, gpus, device, backend",
    [("cuda", 2, "cuda:1", "nccl"), ("auto", 2, "cuda:1", "nccl"), ("cpu", 2, "cpu", "gloo"), ("auto", 0, "cpu", "gloo")],
)
def test_torchrun_rank_joins_with_its_gpu_and_nccl(monkeypatch, spec, gpus, device, backend):
    fake_cuda(monkeypatch, gpus)
    group = FakeGroup(monkeypatch)
    for key, value in torchrun_env(2, 1).items():
        monkeypatch.setenv(key, value)
    dist, joined = init_from_env(spec)
    assert joined and dist == Dist(1, 2, torch.device(device))
    expected = [("init_process_group", backend)]
    if device.startswith("cuda"):  # the rank's GPU is current before the group exists
        expected.insert(0, ("set_device", torch.device(device)))
    assert group.events == expected


def test_cuda_without_gpu_is_refused_before_joining(monkeypatch):
    fake_cuda(monkeypatch, 0)
    group = FakeGroup(monkeypatch)
    for key, value in torchrun_env(2, 0).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match="train.device"):
        init_from_env("cuda")
    assert group.events == []


def test_nccl_group_with_cpu_training_is_refused(monkeypatch):
    group = FakeGroup(monkeypatch)
    group.backend = "nccl"
    with pytest.raises(ConfigError, match="nccl"):
        Dist.current("cpu")


def test_ddp_gets_the_rank_gpu_as_device_ids(monkeypatch):
    made = []
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", lambda model, **kw: made.append(kw) or model)
    model = torch.nn.Linear(2, 1)
    Dist(1, 2, torch.device("cuda", 1)).wrap(model)
    Dist(1, 2, torch.device("cpu")).wrap(model)
    assert Dist(0, 1, torch.device("cuda", 0)).wrap(model) is model  # one process: no DDP
    assert [kw["device_ids"] for kw in made] == [[1], None]


def test_collective_tensors_live_on_the_training_device(monkeypatch, tiny_schema, val_batch):
    """NCCL only reduces CUDA tensors: the loss sums and the lockstep flag are created on the
    Dist's device (here ``meta``; the spy stops before anything reads the result)."""

    class Reached(Exception):
        pass

    seen = []

    def all_reduce(tensor, op=None):
        seen.append(tensor.device)
        raise Reached

    monkeypatch.setattr(tdist, "all_reduce", all_reduce)
    dist = Dist(0, 2, META)
    with pytest.raises(Reached):
        dist.sum([1.0, 2.0])
    with pytest.raises(Reached):
        next(dist.lockstep(iter([{"x": 1}])))
    with pytest.raises(Reached):
        validation_loss(build_model(tiny_schema, model_config("mmoe")).to(META), val_batch, 64, dist)
    assert seen == [META, META, META]


# --------------------------------------------------------------------------- placement


@pytest.fixture(scope="module")
def train_batch(tiny_train, tiny_schema):
    return encode_frame(tiny_train.iloc[:300].reset_index(drop=True), tiny_schema)


@pytest.fixture(scope="module")
def val_frame(tiny_train):
    return tiny_train.iloc[300:400].reset_index(drop=True)


@pytest.fixture(scope="module")
def val_batch(val_frame, tiny_schema):
    return encode_frame(val_frame, tiny_schema)


def _record_inputs(model, seen: list):
    model.register_forward_pre_hook(lambda module, args: seen.append({k: v.device for k, v in args[0].items()}))


@pytest.mark.parametrize("strategy", ["fixed", "uncertainty", "dwa"])
def test_a_training_step_runs_on_another_device(tiny_dir, tiny_schema, train_batch, val_batch, val_frame, monkeypatch, strategy):
    """``fit`` with the model placed on ``meta``: model and balancer moved, batches copied to
    it, forward, loss, backward, gradient clipping and the AdamW step run there, with no op
    mixing devices, up to the first number read back for the log (meta tensors hold none)."""
    cfg = load_experiment(tiny_dir / "experiment.yaml", [*FAST, f"loss.strategy={strategy}", "train.max_grad_norm=1.0"])
    monkeypatch.setattr(msmt.training.loop, "resolve_device", lambda spec: META)
    monkeypatch.setattr(msmt.training.loop, "_cpu_state", lambda model: {})  # nothing to copy out of meta
    # the non-finite guard reads one number back before the step (issue 19); meta tensors hold
    # none, so it runs on meta up to that read-back and is stubbed after it
    real_check = msmt.training.loop.check_finite
    guarded: list = []

    def check_until_read_back(dist, stacked, grad_norm, tasks, where):
        with pytest.raises(NO_DATA, match="meta tensors?"):
            real_check(dist, stacked, grad_norm, tasks, where)
        guarded.append(where)

    monkeypatch.setattr(msmt.training.loop, "check_finite", check_until_read_back)
    model = build_model(tiny_schema, cfg.model)
    seen: list = []
    _record_inputs(model, seen)
    check = DeviceMixCheck()
    with check, pytest.raises(NO_DATA, match="meta tensors?"):
        fit(model, cfg.train, cfg.loss, train_batch, val_batch, val_frame)
    assert guarded == ["epoch 1, step 1"]
    assert check.mixed == []
    assert len(seen) == 1 and set(seen[0].values()) == {META}
    assert model_device(model) == META
    assert any("addcdiv" in op for op in check.ops)  # the optimiser stepped on the device
    assert any("norm" in op for op in check.ops)  # gradient clipping ran


@pytest.mark.parametrize("strategy", ["fixed", "uncertainty", "dwa", "gradnorm"])
def test_balancers_built_after_the_model_live_on_its_device(strategy, tiny_dir, tiny_schema, train_batch):
    """GradNorm's task weights are neither parameter nor buffer: they must be created on the
    model's device. (PCGrad is not in the list: its projection branches on a gradient dot
    product, a value meta tensors do not have; its tensors are built from the gradients.)"""
    cfg = load_experiment(tiny_dir / "experiment.yaml", [f"loss.strategy={strategy}"])
    model = build_model(tiny_schema, model_config("mmoe")).to(META)
    batch = to_device(train_batch, META)
    balancer = build_balancer(cfg.dataset.tasks, cfg.loss, model).to(META)
    check = DeviceMixCheck()
    with check:
        losses = task_losses(cfg.dataset.tasks, model(batch), batch["labels"], batch["weight"])
        balancer.backward(losses)
    assert check.mixed == []
    assert {t.device for t in [*balancer.parameters(), *balancer.buffers()]} <= {META}
    if strategy == "gradnorm":
        assert balancer.weights.device == META


def test_predictions_validation_finetune_and_meta_training_follow_the_model(tiny_dir, tiny_train, tiny_schema, train_batch, val_batch):
    """Scoring, validation loss, fine-tuning and meta-training copy CPU batches to the model's
    device (``meta`` here) instead of handing CPU tensors to it."""
    model = build_model(tiny_schema, model_config("mmoe")).to(META)
    seen: list = []
    _record_inputs(model, seen)
    checks = [DeviceMixCheck() for _ in range(4)]
    with checks[0], pytest.raises(NO_DATA, match="meta tensors?"):  # predictions come back to the CPU
        predict_batches(model, val_batch, 64)
    with checks[1], pytest.raises(NO_DATA, match="meta tensors?"):  # so do the loss sums
        validation_loss(model, val_batch, 64)
    with checks[2]:
        tuned = finetune(model, train_batch, steps=3, batch_size=64)
    assert model_device(tuned) == META
    cfg = load_experiment(tiny_dir / "experiment.yaml", ["dataset.group=user_id", "meta.algorithm=fomaml", "meta.episodes=1", "meta.support_size=2", "meta.query_size=2"])
    plan = plan_meta(model, cfg.meta, tiny_train.iloc[:300].reset_index(drop=True), group="user_id")
    with checks[3], pytest.raises(NO_DATA, match="meta tensors?"):  # at the logged query loss
        meta_train(model, cfg.meta, plan, train_batch)
    assert [c.mixed for c in checks] == [[]] * 4
    assert len(seen) >= 2 + 3 + 1 and all(set(s.values()) == {META} for s in seen)


def test_explicit_cpu_device_trains_through_the_placement_code(tiny_dir, tmp_path, monkeypatch):
    """``train.device=cpu`` end to end: every training and validation batch goes through
    ``to_device`` with the resolved device, and the run directory holds CPU weights that the
    loader reads back."""
    calls = []
    real = msmt.training.loop.to_device

    def spy(batch, device):
        calls.append((torch.device(device), num_rows(batch)))
        return real(batch, device)

    monkeypatch.setattr(msmt.training.loop, "to_device", spy)
    cfg = load_experiment(tiny_dir / "experiment.yaml", [*FAST, "train.device=cpu"])
    splits = load_splits(cfg.dataset)
    metrics = run_experiment(cfg, tmp_path / "run")
    assert {device for device, _ in calls} == {torch.device("cpu")}
    # every training row once (1 epoch) and every validation row once (validation loss)
    assert sum(rows for _, rows in calls) == len(splits["train"]) + len(splits["validation"])
    run = load_run(tmp_path / "run")
    assert model_device(run.model) == torch.device("cpu")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == json.loads(json.dumps(metrics))


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter:UserWarning")  # meta holds no values
def test_a_checkpoint_resumes_into_a_model_on_another_device(tiny_dir, tiny_schema, train_batch, val_batch, val_frame, tmp_path, monkeypatch):
    """A checkpoint (read onto the CPU) restored by ``fit`` into a model on ``meta``: weights,
    AdamW moments and GradNorm's state (extra state, its own Adam) follow the model's device;
    optimiser step counters go where a fresh optimiser of that kind keeps them. Then one step runs there."""
    sets = [*FAST, "train.batch_size=64", "loss.strategy=gradnorm", "train.checkpoint_every=2", "model.name=mmoe"]
    cfg = load_experiment(tiny_dir / "experiment.yaml", sets)
    torch.manual_seed(0)
    fit(build_model(tiny_schema, cfg.model), cfg.train, cfg.loss, train_batch, val_batch, val_frame, run_dir=tmp_path)
    assert (tmp_path / "checkpoint.pt").exists()

    made = {}
    real_optimizers, real_balancer = msmt.training.loop.build_optimizers, msmt.training.loop.build_balancer
    monkeypatch.setattr(msmt.training.loop, "build_optimizers", lambda *a: made.setdefault("optimizers", real_optimizers(*a)))
    monkeypatch.setattr(msmt.training.loop, "build_balancer", lambda *a: made.setdefault("balancer", real_balancer(*a)))
    monkeypatch.setattr(msmt.training.loop, "resolve_device", lambda spec: META)
    monkeypatch.setattr(msmt.training.loop, "_cpu_state", lambda model: {})
    model = build_model(tiny_schema, cfg.model)
    check = DeviceMixCheck()
    with check, pytest.raises(NO_DATA, match="meta tensors?"):
        fit(model, cfg.train, cfg.loss, train_batch, val_batch, val_frame, run_dir=tmp_path, resume=True)
    assert check.mixed == []
    assert model_device(model) == META
    (adamw,) = made["optimizers"]
    states = list(adamw.state.values())
    # a fused AdamW (the checkpoint's param groups say fused) keeps its step counters next to the
    # parameters, as its kernel requires; the per-tensor AdamW keeps them on the CPU
    step_device = META if adamw.param_groups[0].get("fused") else torch.device("cpu")
    assert states and all(st["exp_avg"].device == META and st["step"].device == step_device for st in states)
    gradnorm = made["balancer"]
    assert gradnorm.weights.device == META and gradnorm.initial_losses.device == META
    assert all(v.device == META for st in gradnorm._optimizer.state.values() for k, v in st.items() if k != "step")


def test_checkpoint_rng_includes_the_gpu_generator_on_cuda(monkeypatch):
    state_on_gpu = torch.arange(16, dtype=torch.uint8)
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: state_on_gpu.clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state, torch.device(device))))
    generator = torch.Generator().manual_seed(0)
    cpu_only = rng_state(generator)
    assert "cuda" not in cpu_only
    on_gpu = rng_state(generator, torch.device("cuda", 1))
    assert torch.equal(on_gpu["cuda"], state_on_gpu)
    set_rng_state(on_gpu, generator, "cpu")  # resuming on the CPU ignores the GPU state
    assert restored == []
    set_rng_state(on_gpu, generator, torch.device("cuda", 1))
    assert len(restored) == 1 and torch.equal(restored[0][0], state_on_gpu) and restored[0][1] == torch.device("cuda", 1)
    assert restored[0][0].device.type == "cpu"  # torch requires a CPU byte tensor


def test_save_weights_copies_a_device_model_to_the_cpu(tmp_path, monkeypatch, tiny_schema):
    """A model reported as living on a GPU is written from a CPU copy, the original untouched."""
    import msmt.rundir.layout as run_dir

    model = build_model(tiny_schema, model_config("mmoe"))
    moved = []
    real_to = torch.nn.Module.to

    def to(self, *args, **kwargs):
        moved.append((self is model, args))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(run_dir, "model_device", lambda m: torch.device("cuda", 0) if m is model else torch.device("cpu"))
    monkeypatch.setattr(torch.nn.Module, "to", to)
    run_dir.save_weights(model, tmp_path / "model.safetensors")
    assert moved == [(False, ("cpu",))]  # a copy went to the CPU, not the caller's model
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items() if k in saved)


def test_device_mix_check_catches_a_tensor_created_on_the_cpu():
    """The check itself: a forward that builds its index with ``torch.arange(n)`` (no device)
    passes on plain meta tensors (embedding accepts CPU indices there) but is caught."""

    class Careless(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Embedding(8, 2)

        def forward(self, x):
            return self.table(torch.arange(x.shape[0]) % 8) * x[:, None]

    model = Careless().to(META)
    check = DeviceMixCheck()
    with check:
        model(torch.zeros(4, device=META))
    assert ("aten.embedding.default", {"cpu", "meta"}) in check.mixed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_matches_cpu(tiny_dir, tmp_path):
    settings = [*FAST, "train.epochs=2", "model.name=mmoe"]
    cpu = run_experiment(load_experiment(tiny_dir / "experiment.yaml", [*settings, "train.device=cpu"]), tmp_path / "cpu")
    gpu = run_experiment(load_experiment(tiny_dir / "experiment.yaml", [*settings, "train.device=cuda"]), tmp_path / "gpu")
    for task, block in cpu["val"]["overall"].items():
        for name, value in block.items():
            if isinstance(value, float):
                assert gpu["val"]["overall"][task][name] == pytest.approx(value, rel=1e-3, abs=1e-4), (task, name)
    run = load_run(tmp_path / "gpu")  # weights written on the GPU machine load on the CPU
    assert model_device(run.model) == torch.device("cpu")
