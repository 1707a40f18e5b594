"""Break one mechanism at a time and check that the test suite notices (a mutation check).

Each entry of ``tests/mutations.yaml`` names a source file under ``src/msmt``, a line as it is
(``old``, matched exactly once), the broken line (``new``: a dropped residual, a softmax over the
wrong axis, a zeroed input...) and the test files that prove the mechanism. The check copies
the working tree to a temporary folder (the working tree is never touched), applies one
mutation there, runs those tests with ``pytest -x`` and puts the line back. A mutation the tests
let pass is a proof test that does not prove its mechanism.

The copy holds every file of the working tree that git tracks or would track (``configs/``,
``docs/``, ``benchmarks/``... which tests read too), and a failure counts as a kill only if the
failing test passes again on the unmutated copy: a test that fails for another reason (a file
the copy lacks, a flaky port) is reported as ``test fails unmutated``, never as a kill.

    .venv/bin/python .ci/mutation_check.py                 # every entry (about 1.5 h on 2 cores: 535 entries)
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
        node = failed.split(" ", 1)[1] if " " in failed else ""
        if not node or not passes_unmutated(root, node, env):
            return "test fails unmutated", failed
        return "killed", failed
    return f"pytest exit {proc.returncode}", failed or (lines[-1] if lines else proc.stderr[-200:])


def passes_unmutated(root: Path, node: str, env: dict) -> bool:
    """Whether the test ``node`` (a pytest node id) passes on the unmutated copy."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node], cwd=root, env=env, capture_output=True)
    return proc.returncode == 0


def copy_tree(repo: Path, root: Path) -> None:
    """``repo``'s working-tree files that git tracks or would track (not ignored), copied under ``root``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo, capture_output=True, check=True
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source, target = repo / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():  # e.g. src/msmt/configs -> configs/: the same relative link
            target.symlink_to(os.readlink(source))
        elif source.is_file():  # a tracked file deleted in the working tree is left out
            shutil.copy2(source, target)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", default=None, metavar="ID", help="run these entries only")
    ap.add_argument("--catalogue", type=Path, default=CATALOGUE)
    ap.add_argument("--repo", type=Path, default=REPO, help="the working tree to copy (default: this repository)")
    args = ap.parse_args(argv)
    entries = load_catalogue(args.catalogue)
    if args.only:
        unknown = set(args.only) - {m["id"] for m in entries}
        if unknown:
            print(f"{args.catalogue}: no entry {sorted(unknown)}", file=sys.stderr)
            return 2
        entries = [m for m in entries if m["id"] in args.only]
    repo = args.repo.resolve()
    shared = Path(os.environ.get("MSMT_SHARED_DATA", repo.parent / "shared" / "data")).resolve()
    bad = 0
    with tempfile.TemporaryDirectory(prefix="msmt-mutation-") as tmp:
        root = Path(tmp) / "repo"
        copy_tree(repo, root)
        (Path(tmp) / "shared").mkdir()  # configs name their data as ../shared/data, beside the repository
        if shared.is_dir():
            (Path(tmp) / "shared" / "data").symlink_to(shared, target_is_directory=True)
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
