"""Break one mechanism at a time and check that the test suite notices (a mutation check).

Each entry of ``tests/mutations.yaml`` names a source file under ``src/msmt``, a line as it is
(``old``, matched exactly once), the broken line (``new``: a dropped residual, a softmax over the
wrong axis, a zeroed input...) and the test files that prove the mechanism. The check copies
``src/`` and ``tests/`` to a temporary folder (the working tree is never touched), applies one
mutation there, runs those tests with ``pytest -x`` and puts the line back. A mutation the tests
let pass is a proof test that does not prove its mechanism.

    .venv/bin/python .ci/mutation_check.py                 # every entry (about 20 min on 2 cores)
    .venv/bin/python .ci/mutation_check.py --only mmoe-gate-axis star-product

Exit status 1 when a mutation survives or an ``old`` line no longer matches exactly once
(``tests/test_mutation_catalogue.py`` checks the latter in ``make test``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = REPO / "tests" / "mutations.yaml"


def load_catalogue(path: Path = CATALOGUE) -> list[dict]:
    """The mutations: dicts with ``id``, ``file`` (under src/msmt), ``old``, ``new``, ``breaks``, ``tests``."""
    return yaml.safe_load(path.read_text())


def run_one(root: Path, mutation: dict, env: dict) -> tuple[str, str]:
    """Apply ``mutation`` under ``root``, run its tests, restore; returns (verdict, the first failing test or pytest's tail)."""
    path = root / "src" / "msmt" / mutation["file"]
    original = path.read_text()
    hits = original.count(mutation["old"])
    if hits != 1:
        return f"pattern matches {hits} times", ""
    path.write_text(original.replace(mutation["old"], mutation["new"]))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutation["tests"]],
            cwd=root, env=env, capture_output=True, text=True,
        )
    finally:
        path.write_text(original)
    lines = proc.stdout.splitlines()
    failed = next((line.split(" - ")[0] for line in lines if line.startswith(("FAILED", "ERROR"))), "")
    if proc.returncode == 0:
        return "SURVIVED", lines[-1] if lines else ""
    if proc.returncode == 1:
        return "killed", failed
    return f"pytest exit {proc.returncode}", failed or (lines[-1] if lines else proc.stderr[-200:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", default=None, metavar="ID", help="run these entries only")
    ap.add_argument("--catalogue", type=Path, default=CATALOGUE)
    args = ap.parse_args(argv)
    entries = load_catalogue(args.catalogue)
    if args.only:
        unknown = set(args.only) - {m["id"] for m in entries}
        if unknown:
            print(f"{args.catalogue}: no entry {sorted(unknown)}", file=sys.stderr)
            return 2
        entries = [m for m in entries if m["id"] in args.only]
    shared = Path(os.environ.get("MSMT_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
    bad = 0
    with tempfile.TemporaryDirectory(prefix="msmt-mutation-") as tmp:
        root = Path(tmp)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for part in ("src", "tests"):
            shutil.copytree(REPO / part, root / part, ignore=ignore)
        shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
        env = {**os.environ, "PYTHONPATH": str(root / "src"), "MSMT_SHARED_DATA": str(shared), "OMP_NUM_THREADS": "1"}
        print(f"{len(entries)} mutations, tests run from a copy in {root}", flush=True)
        for m in entries:
            start = time.perf_counter()
            verdict, detail = run_one(root, m, env)
            bad += verdict != "killed"
            print(f"{m['id']:<28} {verdict:<9} {time.perf_counter() - start:5.0f} s  {m['breaks']}  [{detail}]", flush=True)
    print(f"{len(entries) - bad} of {len(entries)} mutations killed" + (f"; {bad} not" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
