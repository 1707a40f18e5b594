"""Checkpoints and ``msmt train --resume``: a run killed with SIGKILL continues to the same result."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys

import pytest
import torch

from helpers import run_main
from msmt.cli import main
from msmt.experiments.run import run_experiment
from msmt.spec.config import load_experiment
from msmt.training.checkpoint import CHECKPOINT, load_checkpoint

# 1,600 training rows / 64 = 25 steps per epoch, 3 epochs = 75 steps, a checkpoint every 7
SETTINGS = [
    "train.epochs=3",
    "train.patience=3",
    "train.batch_size=64",
    "train.progress=false",
    "train.num_threads=1",
    "train.checkpoint_every=7",
    "model.name=mmoe",
    "model.dropout=0.1",  # dropout draws from the global RNG: resuming must restore it
]
TOTAL_STEPS = 75

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
