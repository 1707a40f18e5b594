"""Checkpoints and ``msmt train --resume``: a run killed with SIGKILL continues to the same result."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys

import pytest
import torch

from helpers import TINY_THREE_EPOCHS, TINY_THREE_EPOCHS_STEPS, run_main
from msmt.cli import main
from msmt.experiments.run import run_experiment
from msmt.spec.config import load_experiment
from msmt.training.checkpoint import CHECKPOINT, load_checkpoint

# 75 steps, a checkpoint every 7
SETTINGS = [
    *TINY_THREE_EPOCHS,
    "train.checkpoint_every=7",
    "model.dropout=0.1",  # dropout draws from the global RNG: resuming must restore it
]
TOTAL_STEPS = TINY_THREE_EPOCHS_STEPS

# Runs msmt's CLI but SIGKILLs the process inside optimiser step KILL_AT (no cleanup runs).
KILLER = """
import os, signal, sys, torch
kill_at = int(sys.argv[1]); count = [0]
original = torch.optim.AdamW.step
def step(self, *a, **k):
    count[0] += 1
    if count[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, *a, **k)
torch.optim.AdamW.step = step
from msmt.cli import main
main(sys.argv[2:])
"""


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_metrics(tiny_dir, tmp_path):
    run_experiment(load_experiment(tiny_dir / "experiment.yaml", SETTINGS), tmp_path / "reference")
    assert not (tmp_path / "reference" / CHECKPOINT).exists()  # a finished run leaves none behind

    kill_at = random.Random().randint(8, TOTAL_STEPS - 1)  # after the first checkpoint (step 7)
    run = tmp_path / "killed"
    sets = sum((["--set", s] for s in SETTINGS), [])
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(kill_at), "train", str(tiny_dir / "experiment.yaml"), "--out", str(run), "--quiet", *sets],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, f"kill_at={kill_at}: {killed.stderr[-2000:]}"
    assert not (run / "metrics.json").exists()
    state = load_checkpoint(run / CHECKPOINT)
    assert state["loop"]["global_step"] == 7 * ((kill_at - 1) // 7), kill_at

    # resumed in this process: whatever RNG states earlier tests left here, the checkpoint's are restored
    assert run_main("train", "--resume", run, "--quiet") == 0
    metrics = json.loads((run / "metrics.json").read_text())
    # same numbers to the last bit: same ops in the same order, every RNG restored
    assert metrics == json.loads((tmp_path / "reference" / "metrics.json").read_text()), f"kill_at={kill_at}"
    assert (run / "history.csv").read_text() == (tmp_path / "reference" / "history.csv").read_text()
    assert not (run / CHECKPOINT).exists()


def _main_error(capsys, *args) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*map(str, args)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


def test_checkpoint_is_tensors_only_and_resume_errors_are_one_line(tiny_dir, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = load_experiment(tiny_dir / "experiment.yaml", [*SETTINGS, "train.epochs=1"])
    run_experiment(cfg, run)
    assert "nothing to resume" in _main_error(capsys, "train", "--resume", run)
    (run / CHECKPOINT).write_bytes(b"not a checkpoint")
    assert "not a readable checkpoint" in _main_error(capsys, "train", "--resume", run, "--quiet")
    assert "not a run directory" in _main_error(capsys, "train", "--resume", tmp_path / "nowhere")
    assert "takes no CONFIG" in _main_error(capsys, "train", tiny_dir / "experiment.yaml", "--resume", run)
    # a checkpoint loads with weights_only=True (no pickled code)
    from msmt.training.checkpoint import save_checkpoint

    save_checkpoint(run / "x.pt", {"model": {"w": torch.ones(2)}, "loop": {"epoch": 1}, "m": {"auc": __import__("numpy").float64(0.5)}})
    assert torch.load(run / "x.pt", weights_only=True)["m"]["auc"] == 0.5


class Interrupted(Exception):
    """Raised inside an optimiser step: the run stops there, its last checkpoint stays on disk."""


@pytest.fixture(scope="module")
def flipped(tiny_train, tiny_schema):
    """1,200 training rows; 400 validation rows whose labels are the opposite of what training
    teaches, so the validation loss worsens after the first epochs and training stops early."""
    from helpers import encoded

    train, val = tiny_train.iloc[:1200].reset_index(drop=True), tiny_train.iloc[1200:1600].reset_index(drop=True)
    val_data = encoded(val, tiny_schema)
    val_data["labels"][:, :2] = 1 - val_data["labels"][:, :2]  # click, purchase
    return train, encoded(train, tiny_schema), val_data, val


# 6 steps per epoch, a checkpoint every 4; dropout (global RNG) and the uncertainty balancer (its own
# parameters and optimiser state) must come back too
TC = dict(epochs=8, batch_size=200, lr=0.02, patience=2, checkpoint_every=4, progress=False)
STEPS_PER_EPOCH = 6


def _fit(schema, train_data, val_data, val, out, resume=False, stop_at=None, dropout=0.1, **tc):
    """(model, FitResult) of a fresh mmoe trained like ``msmt train`` builds it; ``stop_at``: interrupt that step;
    ``tc``: more ``train.*`` settings."""
    from helpers import model_config
    from msmt.models import build_model
    from msmt.spec.config import LossConfig, TrainConfig
    from msmt.training.loop import fit

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = build_model(schema, model_config("mmoe", dropout=dropout))
    original, count = torch.optim.AdamW.step, [0]

    def step(self, *args, **kwargs):
        count[0] += 1
        if count[0] == stop_at:
            raise Interrupted
        return original(self, *args, **kwargs)

    torch.optim.AdamW.step = step
    try:
        result = fit(model, TrainConfig(**TC | tc), LossConfig(strategy="uncertainty"), train_data, val_data, val, out, resume)
    finally:
        torch.optim.AdamW.step = original
    return model, result


def _interrupted_and_resumed_like_uninterrupted(schema, train_data, val_data, val, tmp_path, dropout=0.1, **tc):
    """Interrupt a run just after the checkpoint inside its last epoch (past the best epoch, with
    epochs without improvement counted), resume it, and compare it with the uninterrupted run.
    Returns (last epoch, checkpoint's step in that epoch)."""
    ref_model, ref = _fit(schema, train_data, val_data, val, tmp_path / "ref", dropout=dropout, **tc)
    last = len(ref.history)
    assert ref.best_epoch <= last - 2 and last < TC["epochs"]  # stopped early: the best weights are an earlier epoch's
    saved = next(g for g in range((last - 1) * STEPS_PER_EPOCH + 1, last * STEPS_PER_EPOCH) if g % TC["checkpoint_every"] == 0)
    with pytest.raises(Interrupted):
        _fit(schema, train_data, val_data, val, tmp_path / "run", stop_at=saved + 1, dropout=dropout, **tc)
    loop = load_checkpoint(tmp_path / "run" / CHECKPOINT)["loop"]
    assert (loop["epoch"], loop["global_step"], loop["stale"]) == (last, saved, last - 1 - ref.best_epoch)
    model, result = _fit(schema, train_data, val_data, val, tmp_path / "run", resume=True, dropout=dropout, **tc)
    assert result.history == ref.history  # every logged number to the last bit, and no extra epoch
    assert (result.best_epoch, result.best_value, result.val_metrics) == (ref.best_epoch, ref.best_value, ref.val_metrics)
    for name, value in ref_model.state_dict().items():  # the best epoch's weights handed back
        assert torch.equal(model.state_dict()[name], value), name
    return last, saved - (last - 1) * STEPS_PER_EPOCH


def test_an_interrupted_fit_resumes_to_the_same_history_and_best_weights(tiny_schema, flipped, tmp_path):
    """In-process and fast (the SIGKILL test above is the end-to-end one): weights, AdamW moments,
    the balancer's parameters, every RNG, the epochs without improvement and the best epoch's
    weights all come back from the checkpoint."""
    _, train_data, val_data, val = flipped
    _interrupted_and_resumed_like_uninterrupted(tiny_schema, train_data, val_data, val, tmp_path)


def test_a_fit_with_the_weight_average_resumes_to_the_same_history_and_best_average(tiny_schema, flipped, tmp_path):
    """``train.ema_epochs``: the moving average comes back from the checkpoint too (the resumed epoch's
    validation scores it, and the best epoch's average is what the run keeps)."""
    _, train_data, val_data, val = flipped
    _interrupted_and_resumed_like_uninterrupted(tiny_schema, train_data, val_data, val, tmp_path, ema_epochs=1.0)


def test_a_streamed_fit_reads_each_epoch_of_the_stream_and_resumes_mid_epoch(tiny_schema, flipped, tmp_path, monkeypatch):
    """Streaming: epoch e trains on the stream's epoch e, and a resumed run continues the
    interrupted epoch's batches where its checkpoint left them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from msmt.data.streaming import ParquetStream

    train, _, val_data, val = flipped
    pq.write_table(pa.Table.from_pandas(train, preserve_index=False), tmp_path / "train.parquet", row_group_size=150)
    stream = ParquetStream(tmp_path / "train.parquet", tiny_schema, TC["batch_size"], buffer_rows=300, seed=0)
    calls, batches = [], ParquetStream.batches

    def recording(self, epoch, start_batch=0):
        calls.append((epoch, start_batch))
        return batches(self, epoch, start_batch)

    monkeypatch.setattr(ParquetStream, "batches", recording)
    # with dropout: the resumed run opens its epoch's DataLoader once more than the uninterrupted one, and
    # that must not draw from the global torch RNG (the stream's loader has its own generator), or the
    # dropout masks after the resume would not be the uninterrupted run's
    last, step = _interrupted_and_resumed_like_uninterrupted(tiny_schema, stream, val_data, val, tmp_path, dropout=0.1)
    epochs = [(e, 0) for e in range(1, last + 1)]  # each epoch from its first batch
    assert calls == [*epochs, *epochs, (last, step)]  # the uninterrupted run, the interrupted one, the resumed one


def test_every_rng_comes_back_from_a_saved_checkpoint(tmp_path):
    """torch's, numpy's and Python's global RNGs and the batch-order generator, through the file
    (tensors only): after restoring, each draws what it drew right after the state was taken. The
    loop itself redraws a mid-epoch order from the epoch's start state and nothing in it draws from
    numpy's global RNG, so this contract of the checkpoint is tested here, not through a resumed fit."""
    import numpy as np

    from msmt.training.checkpoint import rng_state, save_checkpoint, set_rng_state

    generator = torch.Generator().manual_seed(3)
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    save_checkpoint(tmp_path / CHECKPOINT, {"rng": rng_state(generator)})

    def draws():
        return torch.rand(3).tolist(), np.random.random(3).tolist(), random.random(), torch.rand(3, generator=generator).tolist()

    expected = draws()
    for seed in (torch.manual_seed, np.random.seed, random.seed, generator.manual_seed):
        seed(99)  # every stream moved elsewhere
    assert draws() != expected
    set_rng_state(load_checkpoint(tmp_path / CHECKPOINT)["rng"], generator)
    got = draws()
    for name, a, b in zip(("torch", "numpy", "python", "generator"), got, expected):
        assert a == b, name
