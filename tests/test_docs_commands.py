"""The command blocks of README.md (the tour) and docs/own-data.md run as written, in order.

Each line is the text of the page; only smaller sizes are appended (and said so on the page):
a later value of an option wins, so ``--seeds 3 ... --seeds 1`` runs one seed. A plain ``msmt ...``
line runs its words through :func:`msmt.cli.main` in this process, the function the ``msmt``
console script calls (a fresh interpreter would add seconds of imports per line); lines with
shell syntax run in bash, and ``msmt serve`` lines start the installed ``msmt`` script as a real
server process."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import REPO, run_main

SMALLER = {  # command prefix -> what is appended to it
    "msmt synth advertiser": "--advertisers 20 --days 24",
    "msmt synth simple": "--rows 3000",
    "msmt train": "--quiet --set train.epochs=1 --set train.num_threads=1",
    "msmt bench": "--seeds 1 --set train.epochs=1 --set train.num_threads=1",
    "msmt tune": "--trials 2 --set train.epochs=1 --set train.num_threads=1",
    "msmt adapt": "--steps 1",
    "msmt export": "--rows 64",
}


def commands(page: Path, after: str) -> list[str]:
    """The lines of the first ```bash block after the heading ``after``, without trailing comments."""
    text = page.read_text()
    start = text.index(after)
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S).group(1)
    return [re.split(r"\s{2,}# ", line)[0].strip() for line in block.splitlines() if line.strip()]


def smaller(line: str) -> str:
    for prefix, extra in SMALLER.items():
        if line.startswith(prefix + " "):
            return f"{line} {extra}"
    return line


def shell_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # msmt of this environment
    env["PYTHONUNBUFFERED"] = "1"
    return env


SHELL_SYNTAX = set("|&;<>()$`*?~")


def run_line(line: str, cwd: Path, monkeypatch) -> None:
    line = smaller(line)
    words = shlex.split(line)
    if words[0] == "msmt" and not SHELL_SYNTAX & set(line):
        monkeypatch.chdir(cwd)
        code = run_main(*words[1:])
        assert code == 0, f"{line}: exit code {code}"
        return
    res = subprocess.run(["bash", "-c", line], cwd=cwd, env=shell_env(), capture_output=True, text=True)
    assert res.returncode == 0, f"{line}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"


def serve_once(line: str, cwd: Path) -> None:
    """Start the server line on a free port, wait until /healthz answers, stop it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["bash", "-c", f"exec {line} --port {port}"], cwd=cwd, env=shell_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.status == 200
                    return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"{line}: no answer on /healthz within 120 s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


MOVIELENS, RATINGS = "movielens100k_msmt", "ml100k_msmt_train.csv"
TOUR_RATINGS = 16_000  # of MovieLens' 80,000: the tour's five trainings on all of them take half a minute more


def latest_movielens(shared_data: Path, out: Path) -> None:
    """``out`` as a shared-data folder: every dataset linked, except MovieLens' ratings file cut to
    its latest ``TOUR_RATINGS`` rows (the file is sorted by time, so the config's time split and the
    tour's ``tail -n 2000`` keep their meaning)."""
    out.mkdir(parents=True)
    for entry in shared_data.iterdir():
        if entry.name != MOVIELENS:
            (out / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    (out / MOVIELENS).mkdir()
    for entry in (shared_data / MOVIELENS).iterdir():
        if entry.name != RATINGS:
            (out / MOVIELENS / entry.name).symlink_to(entry)
    lines = (shared_data / MOVIELENS / RATINGS).read_text().splitlines(keepends=True)
    (out / MOVIELENS / RATINGS).write_text("".join([lines[0], *lines[-TOUR_RATINGS:]]))


@pytest.mark.slow
def test_readme_tour_runs_as_written(shared_data, tmp_path, monkeypatch):
    """In a fresh folder beside which ../shared/data is the shared data, as beside the clone, with
    MovieLens cut to its latest ratings (:func:`latest_movielens`)."""
    latest_movielens(shared_data, tmp_path / "shared" / "data")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(REPO / "configs", work / "configs")  # a copy: its relative data paths lead to the folder above
    lines = commands(REPO / "README.md", "## A tour of the CLI")
    assert len(lines) >= 10 and all(line.startswith(("msmt ", "(head")) for line in lines)
    for line in lines:
        if line.startswith("msmt serve "):
            serve_once(line, work)
        else:
            run_line(line, work, monkeypatch)
    assert json.loads((work / "runs/ml/metrics.json").read_text())["val"]["rows"] == TOUR_RATINGS // 10  # the cut was read
    assert (work / "runs/ml_personal/blocks/index.json").exists()
    assert (work / "model.onnx").exists() and (work / "runs/bench/leaderboard.md").exists()
    assert (work / "runs/tune_ml/best.yaml").exists() and (work / "runs/tune_ml/trials.png").exists()


def test_own_data_walkthrough_runs_as_written(tmp_path, monkeypatch):
    lines = commands(REPO / "docs" / "own-data.md", "# Your own data in minutes")
    assert [line.split()[1] for line in lines] == ["synth", "init", "train", "evaluate", "predict"]
    for line in lines:
        run_line(line, tmp_path, monkeypatch)
    assert (tmp_path / "shop_predictions.csv").exists()
