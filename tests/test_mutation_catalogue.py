"""The mutation catalogue (tests/mutations.yaml, run by .ci/mutation_check.py) stays runnable: every
entry's line still exists exactly once in its file, its breakage changes it and its tests exist.
One cheap entry is run end to end, and a harmless edit is reported as surviving."""

from __future__ import annotations

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
