"""docs/config-reference.md is generated from the typed config models and kept current."""

from __future__ import annotations

import re

from helpers import REPO
from msmt.spec.config import ExperimentConfig
from msmt.spec.reference import COMMAND, config_reference
from msmt.spec.sections import model_names, model_section


def test_the_reference_page_is_current():
    page = (REPO / "docs" / "config-reference.md").read_text()
    assert page == config_reference(), f"docs/config-reference.md is out of date: run {COMMAND}"


def test_the_reference_lists_every_key_with_a_description():
    page = config_reference()
    keys = set(re.findall(r"^\| `([^`]+)` \|", page, re.M))
    for section in ("model", "train", "loss", "meta"):
        cls = ExperimentConfig.model_fields[section].annotation
        assert {f"{section}.{k}" for k in cls.model_fields} <= keys
    for name in model_names():
        assert {f"model.{name}.{k}" for k in model_section(name).model_fields} <= keys
    undocumented = re.findall(r"^\| `([^`]+)` \|[^|]*\|[^|]*\| (?:\([^)]*\))? \|$", page, re.M)
    assert undocumented == []
