"""The run directory's manifest (msmt.rundir.manifest): every file's size and sha256 and the weights'
tensor shapes, checked before a run is loaded; each check names the file (and tensor) that fails."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from msmt.rundir.manifest import MANIFEST, verify, write_manifest
from msmt.spec.errors import RunDirError

VERSION = "0.2.0"


@pytest.fixture
def run_dir(tmp_path):
    save_file({"experts.weight": torch.zeros(4, 3), "out.bias": torch.zeros(2)}, tmp_path / "model.safetensors")
    (tmp_path / "config.yaml").write_text("model: {name: mmoe}\n")
    write_manifest(tmp_path)
    return tmp_path


def test_an_untouched_run_passes_and_lists_every_file_and_tensor(run_dir):
    manifest = verify(run_dir, VERSION)
    assert sorted(manifest["files"]) == ["config.yaml", "model.safetensors"]
    assert manifest["weights"] == {"model.safetensors": {"experts.weight": [4, 3], "out.bias": [2]}}


def test_a_file_changed_at_equal_size_fails_on_its_hash(run_dir):
    (run_dir / "config.yaml").write_text("model: {name: mmoX}\n")
    with pytest.raises(RunDirError, match=r"config.yaml: content differs .*sha256"):
        verify(run_dir, VERSION)


def test_weights_whose_shapes_differ_from_the_manifest_fail_naming_the_tensor(run_dir):
    """The manifest's record of shapes is checked against the file itself: a manifest rewritten for
    other weights (its hashes updated, its shapes not) is refused, naming the tensor."""
    manifest = json.loads((run_dir / MANIFEST).read_text())
    manifest["weights"]["model.safetensors"]["experts.weight"] = [4, 5]
    (run_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(RunDirError, match=r"tensor 'experts.weight' has shape \[4, 3\], manifest.json says \[4, 5\]"):
        verify(run_dir, VERSION)


def test_a_run_of_a_version_that_writes_manifests_needs_one(run_dir):
    (run_dir / MANIFEST).unlink()
    with pytest.raises(RunDirError, match="manifest.json: missing"):
        verify(run_dir, VERSION)
    assert verify(run_dir, "0.1.4") is None  # 0.1.x runs never had one
