"""The mutation catalogue (tests/mutations.yaml, run by .ci/mutation_check.py) stays runnable: every
entry's line still exists exactly once in its file, its breakage changes it and its tests exist.
One cheap entry is run end to end, and a harmless edit is reported as surviving; on a small tree of its
own, the check's copy holds what tests read and a test failing without the mutation is not a kill."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CHECK = REPO / ".ci" / "mutation_check.py"
ENTRIES = yaml.safe_load((REPO / "tests" / "mutations.yaml").read_text())


def test_every_entry_matches_its_source_once_and_names_existing_tests():
    assert len({e["id"] for e in ENTRIES}) == len(ENTRIES)
    for e in ENTRIES:
        source = (REPO / "src" / "msmt" / e["file"]).read_text()
        assert source.count(e["old"]) == 1, f"{e['id']}: `old` matches {source.count(e['old'])} times in {e['file']}"
        assert e["new"] != e["old"] and e["breaks"], e["id"]
        assert e["tests"] and all((REPO / t.split("::")[0]).is_file() for t in e["tests"]), e["id"]  # files or node ids


def test_the_check_kills_a_real_breakage_and_reports_a_harmless_one(tmp_path):
    entry = next(e for e in ENTRIES if e["id"] == "pepnet-gamma")
    harmless = {**entry, "id": "harmless", "new": entry["old"] + " "}  # a space inside the call changes nothing
    catalogue = tmp_path / "catalogue.yaml"
    catalogue.write_text(yaml.safe_dump([entry, harmless]))
    proc = subprocess.run([sys.executable, str(CHECK), "--catalogue", str(catalogue)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines() if line.startswith(("pepnet-gamma", "harmless"))}
    assert lines == {"pepnet-gamma": "killed", "harmless": "SURVIVED"}, proc.stdout
    assert "1 of 2 mutations killed; 1 not" in proc.stdout
    source = REPO / "src" / "msmt" / entry["file"]
    assert source.read_text().count(entry["old"]) == 1  # the working tree is untouched


def _fake_repository(root: Path, shared: Path) -> None:
    """A git working tree with a package, a config beside it (and a link to it inside the package,
    as src/msmt/configs links configs/) and tests that read them and ../shared/data."""
    (root / "src" / "msmt").mkdir(parents=True)
    (root / "src" / "msmt" / "__init__.py").write_text("")  # a regular package: found before the installed msmt
    (root / "src" / "msmt" / "thing.py").write_text("VALUE = 1\n")
    (root / "configs").mkdir()
    (root / "configs" / "value.txt").write_text("1")
    (root / "src" / "msmt" / "configs").symlink_to("../../configs", target_is_directory=True)
    (root / "tests").mkdir()
    (root / "tests" / "test_thing.py").write_text(
        "from pathlib import Path\n\nfrom msmt.thing import VALUE\n\nHERE = Path(__file__).resolve().parent\n\n\n"
        "def test_value_from_the_config():\n    assert VALUE == int((HERE.parent / 'src' / 'msmt' / 'configs' / 'value.txt').read_text())\n\n\n"
        "def test_value_from_shared_data():\n    assert VALUE == int((HERE.parents[1] / 'shared' / 'data' / 'value.txt').read_text())\n\n\n"
        "def test_needs_a_file_nobody_wrote():\n    assert (HERE / 'absent.txt').is_file()\n"
    )
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    shared.mkdir()
    (shared / "value.txt").write_text("1")


def test_a_test_that_fails_without_the_mutation_is_not_a_kill(tmp_path):
    """The copy holds the files tests read beside src/ and tests/ (configs/, a link to it, and
    ../shared/data), and a failure counts as a kill only if the failing test passes on the unmutated
    copy: a test failing for another reason (a file the copy lacks) would otherwise prove every
    mutation it is named for."""
    repo, shared = tmp_path / "repo", tmp_path / "data"
    _fake_repository(repo, shared)
    mutation = {"breaks": "VALUE changed", "file": "thing.py", "old": "VALUE = 1", "new": "VALUE = 2"}
    catalogue = tmp_path / "catalogue.yaml"
    catalogue.write_text(yaml.safe_dump([
        {**mutation, "id": "read-config", "tests": ["tests/test_thing.py::test_value_from_the_config"]},
        {**mutation, "id": "read-shared", "tests": ["tests/test_thing.py::test_value_from_shared_data"]},
        {**mutation, "id": "fails-anyway", "tests": ["tests/test_thing.py::test_needs_a_file_nobody_wrote"]},
    ]))
    env = {**os.environ, "MSMT_SHARED_DATA": str(shared)}
    proc = subprocess.run([sys.executable, str(CHECK), "--repo", str(repo), "--catalogue", str(catalogue)], capture_output=True, text=True, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("read-", "fails-"))]
    verdicts = {line.split()[0]: "test fails unmutated" if "test fails unmutated" in line else line.split()[1] for line in lines}
    assert verdicts == {"read-config": "killed", "read-shared": "killed", "fails-anyway": "test fails unmutated"}, proc.stdout
    assert "2 of 3 mutations killed; 1 not" in proc.stdout
    assert (repo / "src" / "msmt" / "thing.py").read_text() == "VALUE = 1\n"
