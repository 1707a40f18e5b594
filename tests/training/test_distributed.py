"""Data-parallel training: 2 processes on loopback match 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pandas as pd
import pytest
import torch

from msmt.experiments.run import run_experiment
from msmt.spec.config import load_experiment
from msmt.spec.dataset import Task, TaskKind
from msmt.spec.errors import ConfigError
from msmt.training import distributed
from msmt.training.distributed import Dist
from msmt.training.losses import task_losses

# 1,600 training rows in global batches of 127: shards of 64 and 63 rows, a last batch of 76
SETTINGS = [
    "train.epochs=2",
    "train.batch_size=127",
    "train.progress=false",
    "train.num_threads=1",
    "loss.strategy=uncertainty",  # a balancer with its own parameters (synchronised by hand)
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), tree


def _single_and_ddp(tiny_dir, tmp_path, settings):
    """(metrics of one process, metrics of two processes under torchrun) with the same settings."""
    single = run_experiment(load_experiment(tiny_dir / "experiment.yaml", settings), tmp_path / "single")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--nnodes", "1"]
    launch += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    run = tmp_path / "ddp"
    sets = sum((["--set", s] for s in settings), [])
    res = subprocess.run(
        [*launch, "-m", "msmt", "train", str(tiny_dir / "experiment.yaml"), "--out", str(run), "--quiet", *sets],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("run directory:") == 1  # only rank 0 reports
    return single, json.loads((run / "metrics.json").read_text())


def _assert_same_metrics(ddp, single):
    got, want = dict(_leaves(ddp)), dict(_leaves(single))
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
        else:  # row counts, and None where a metric is undefined (one class only)
            assert got[key] == value, key
    assert ddp["val"]["rows"] == single["val"]["rows"]  # metrics over all ranks' gathered predictions


def _assert_same_history(tmp_path):
    """Every logged number of every epoch (training losses averaged over the ranks, validation losses
    summed over their slices, the balancer's weights) as one process logs it."""
    single, ddp = (pd.read_csv(tmp_path / name / "history.csv") for name in ("single", "ddp"))
    pd.testing.assert_frame_equal(ddp, single, check_exact=False, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_two_processes_match_one_process(tiny_dir, tmp_path):
    # Tolerance: the two runs differ only in float32 summation order (gradients are summed
    # across ranks by all-reduce); over 26 Adam steps that moves values around 1e-7 relative.
    _assert_same_metrics(*reversed(_single_and_ddp(tiny_dir, tmp_path, SETTINGS)))
    _assert_same_history(tmp_path)


@pytest.mark.slow
def test_two_processes_count_like_one_process_for_a_closed_form_model(tiny_dir, tmp_path):
    """popularity's counts: each rank counts its shard of every batch, the counts are summed over
    the ranks (``Dist.all_sum``), so two processes score exactly as one."""
    _assert_same_metrics(*reversed(_single_and_ddp(tiny_dir, tmp_path, [*SETTINGS, "model.name=popularity"])))
    _assert_same_history(tmp_path)


@pytest.mark.slow
def test_two_processes_refit_like_one_process(tiny_dir, tmp_path):
    """``train.refit`` under torchrun: the refit on training + validation rows runs data-parallel too,
    and its test metrics and every epoch it logs are one process's."""
    _assert_same_metrics(*reversed(_single_and_ddp(tiny_dir, tmp_path, [*SETTINGS, "train.refit=true"])))
    single, ddp = (pd.read_csv(tmp_path / name / "refit_history.csv") for name in ("single", "ddp"))
    assert len(single) >= 1
    pd.testing.assert_frame_equal(ddp, single, check_exact=False, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_two_processes_with_the_weight_average_like_one_process(tiny_dir, tmp_path):
    """``train.ema_epochs`` under torchrun: each process averages the same synchronised weights, so the
    validation that selects, the stored average and its test metrics are one process's."""
    _assert_same_metrics(*reversed(_single_and_ddp(tiny_dir, tmp_path, [*SETTINGS, "train.ema_epochs=1.0"])))
    single, ddp = (pd.read_csv(tmp_path / name / "history.csv") for name in ("single", "ddp"))
    pd.testing.assert_frame_equal(ddp, single, check_exact=False, rtol=1e-4, atol=1e-6)


def test_shard_weights_make_the_ddp_mean_the_global_mean():
    torch.manual_seed(0)
    tasks = (Task(name="y", label="y", kind=TaskKind.BINARY),)
    n = 11
    batch = {"scenario": torch.zeros(n, dtype=torch.long), "labels": (torch.rand(n, 1) > 0.5).float(), "weight": torch.rand(n)}
    logits = torch.randn(n)
    full = task_losses(tasks, {"y": logits}, batch["labels"], batch["weight"])["y"]
    parts = []
    for rank in range(3):
        d = Dist(rank, 3)
        local = d.shard({**batch, "logit": logits})
        parts.append(task_losses(tasks, {"y": local["logit"]}, local["labels"], local["weight"])["y"])
    assert [d for d in (Dist(r, 3).bounds(n) for r in range(3))] == [(0, 4), (4, 8), (8, 11)]
    assert float(sum(parts) / 3) == pytest.approx(float(full), rel=1e-6)  # what DDP's averaging yields


def test_gradient_rewriting_balancers_refuse_ddp():
    Dist(0, 2).check_strategy("fixed")
    Dist(0, 2).check_strategy("dwa")
    for name in ("gradnorm", "pcgrad"):
        Dist(0, 1).check_strategy(name)
        with pytest.raises(ConfigError, match=name):
            Dist(0, 2).check_strategy(name)


class _RankZeroOfTwo:
    """``torch.distributed`` as rank 0 of a world of two sees it, in one process: ``peer`` holds what
    rank 1 contributes to each collective, in call order."""

    class ReduceOp:
        SUM, MIN, MAX = "sum", "min", "max"

    def __init__(self, peer):
        self.peer = list(peer)

    def all_reduce(self, t, op="sum"):
        other = torch.as_tensor(self.peer.pop(0), dtype=t.dtype)
        t.copy_({"sum": t + other, "min": torch.minimum(t, other), "max": torch.maximum(t, other)}[op])


def test_sums_means_gradients_and_lockstep_over_two_ranks(monkeypatch):
    """What :class:`Dist` computes from the ranks' values: sums, means (sum / world), averaged gradients
    of the parameters DDP does not own, and batches only while every rank still has one."""
    fake = _RankZeroOfTwo([[3.0, 5.0], [3.0, 5.0], [10.0, 20.0], [0.5, -1.0], [1], [1], [0]])
    monkeypatch.setattr(distributed, "tdist", fake)
    d = Dist(0, 2)
    assert d.sum([1.0, 2.0]) == [4.0, 7.0]
    assert d.mean(torch.tensor([1.0, 2.0])) == [2.0, 3.5]
    t = torch.tensor([1.0, 2.0])
    assert d.all_sum(t).tolist() == [11.0, 22.0] and t.tolist() == [1.0, 2.0]
    p, unused = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    p.grad = torch.tensor([1.0, 3.0])
    d.sync_grads([p, unused])  # a parameter without a gradient takes no part
    assert p.grad.tolist() == [0.75, 1.0] and unused.grad is None
    assert list(d.lockstep(iter(["a", "b", "c"]))) == ["a", "b"]  # rank 1 has two batches: both stop after two
    assert fake.peer == []


def test_a_task_absent_from_the_whole_global_batch_keeps_every_shard_finite():
    """A task whose scenarios have no row in a global batch (``tasks.<name>.scenarios``): its shard
    weights stay finite (no division by zero rows), so are the gradients, and the present task's
    shards still average to its global loss."""
    torch.manual_seed(0)
    tasks = (Task(name="y", label="y", kind=TaskKind.BINARY), Task(name="z", label="z", kind=TaskKind.BINARY))
    n = 9
    mask = torch.ones(n, 2, dtype=torch.bool)
    mask[:, 1] = False
    batch = {"scenario": torch.zeros(n, dtype=torch.long), "labels": (torch.rand(n, 2) > 0.5).float(), "weight": torch.rand(n), "task_mask": mask, "task_weight": torch.ones(n, 2),
             "logit": torch.randn(n, 2, requires_grad=True)}

    def losses(b):
        outputs = {"y": b["logit"][:, 0], "z": b["logit"][:, 1]}
        return task_losses(tasks, outputs, b["labels"], b["weight"], None, b["task_mask"], b["task_weight"])

    parts = []
    for rank in range(2):
        local = Dist(rank, 2).shard(batch)
        assert torch.isfinite(local["task_weight"]).all(), rank
        parts.append(losses(local))
    assert all(torch.isfinite(p["z"]) for p in parts)
    sum(p["y"] + p["z"] for p in parts).backward()
    assert torch.isfinite(batch["logit"].grad).all()  # an infinite weight would give 0 · inf = NaN gradients
    assert float((parts[0]["y"] + parts[1]["y"]) / 2) == pytest.approx(float(losses(batch)["y"]), rel=1e-6)
