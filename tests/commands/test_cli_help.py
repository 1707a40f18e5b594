"""What ``msmt -h`` shows a new user: the version, every command in workflow order, the choices
of enumerated options and ``KEY=VALUE`` for ``--set``."""

from __future__ import annotations

import re

import pytest

import msmt
from helpers import run_main
from msmt.commands import BACKEND_CHOICES, FORMAT_CHOICES, PRECISION_CHOICES, WORKFLOW, app


def help_text(capsys, *args: str) -> str:
    assert run_main(*args) == 0
    return capsys.readouterr().out


def test_version(capsys):
    assert help_text(capsys, "--version").strip() == f"msmt {msmt.__version__}"


def test_top_level_help_lists_every_command_in_workflow_order(capsys):
    for flag in ("-h", "--help"):
        text = help_text(capsys, flag)
        registered = [c.name for c in app.registered_commands] + [g.name for g in app.registered_groups]
        assert set(registered) <= set(WORKFLOW), "a new command needs its place in WORKFLOW"
        order = [name for name in WORKFLOW if name in registered]
        positions = [re.search(rf"^\W*{name}\s", text, re.M) for name in order]
        assert all(positions), text
        starts = [m.start() for m in positions]
        assert starts == sorted(starts), text
        assert "--version" in text


@pytest.mark.parametrize("command", ["init", "train", "evaluate", "predict", "adapt", "export", "serve", "bench", "tune", "synth", "synth simple"])
def test_every_command_answers_dash_h(capsys, command):
    assert "Usage:" in help_text(capsys, *command.split(), "-h")


def test_enumerated_options_show_the_values_the_code_accepts(capsys):
    from msmt.runtime.device import PRECISIONS
    from msmt.scoring.export import FORMATS

    assert PRECISION_CHOICES == "[" + "|".join(PRECISIONS) + "]"
    assert FORMAT_CHOICES == "[" + "|".join(FORMATS) + "]"
    assert BACKEND_CHOICES == "[torch|onnx]"
    assert PRECISION_CHOICES in help_text(capsys, "predict", "-h")
    assert PRECISION_CHOICES in help_text(capsys, "evaluate", "-h")
    assert FORMAT_CHOICES in help_text(capsys, "export", "-h")
    assert BACKEND_CHOICES in help_text(capsys, "serve", "-h")
    for command in ("train", "bench", "tune"):
        assert "KEY=VALUE" in help_text(capsys, command, "-h")
