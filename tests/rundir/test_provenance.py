"""Run provenance: the code that produced a run is recorded, and reuse checks compare it."""

from __future__ import annotations

import json
import shutil
from importlib.metadata import version

import yaml

import msmt
from msmt.experiments.bench import bench
from msmt.rundir.provenance import PROVENANCE, _hash_tree, same_code, source_hash


def test_source_hash_follows_every_python_file(tmp_path):
    tree = tmp_path / "pkg"
    shutil.copytree(msmt.__path__[0], tree, ignore=shutil.ignore_patterns("__pycache__"))
    assert source_hash(tree) == source_hash()  # same files, same hash, wherever they are
    (tree / "notes.txt").write_text("not code")
    (tree / "__pycache__").mkdir(exist_ok=True)
    (tree / "__pycache__" / "x.pyc").write_bytes(b"\0")
    _hash_tree.cache_clear()
    assert source_hash(tree) == source_hash()
    layer = tree / "layers" / "mlp.py"
    layer.write_text(layer.read_text() + "\n# an edit\n")
    _hash_tree.cache_clear()
    assert source_hash(tree) != source_hash()


def test_bench_retrains_a_cell_written_by_other_code(tiny_dir, tmp_path):
    cfg = yaml.safe_load((tiny_dir / "experiment.yaml").read_text())
    cfg["dataset"] = str(tiny_dir / "dataset.yaml")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out, fast = tmp_path / "bench", ["train.epochs=1", "train.batch_size=256", "train.num_threads=1"]
    bench([str(config)], ["shared_bottom"], [0, 1], out, fast)

    run = out / "runs/tiny/shared_bottom/seed0"
    record = json.loads((run / PROVENANCE).read_text())
    assert record["source_sha256"] == source_hash() and record["msmt"] == msmt.__version__
    assert record["torch"] == version("torch") and record["python"]
    assert same_code(run)

    # seed 0 as if trained by other code, seed 1 as if written before provenance existed
    (run / PROVENANCE).write_text(json.dumps({**record, "source_sha256": "0" * 64}))
    (out / "runs/tiny/shared_bottom/seed1" / PROVENANCE).unlink()
    logs: list[str] = []
    bench([str(config)], ["shared_bottom"], [0, 1], out, fast, log=logs.append)
    assert sum("trained in" in line and line.endswith("(other code)") for line in logs) == 2  # and says why
    assert same_code(run)
    logs.clear()
    bench([str(config)], ["shared_bottom"], [0, 1], out, fast, log=logs.append)
    assert all("reused" in line for line in logs)
