"""Single-task baseline: one independent network per task, nothing shared.

Task t's output must depend on its own embedding table and MLP only: its gradient reaches
``encoders.<t>`` and ``nets.<t>`` and no parameter of another task, and replacing another task's
weights leaves it unchanged.
"""

from __future__ import annotations

import torch

from helpers import encoded, model_config
from msmt.models import build_model


def test_each_task_reads_only_its_own_network(tiny_train, tiny_schema):
    batch = encoded(tiny_train.iloc[:64].reset_index(drop=True), tiny_schema, with_labels=False)
    torch.manual_seed(0)
    model = build_model(tiny_schema, model_config("single_task")).eval()
    tasks = model.task_names
    assert len(tasks) >= 2
    named = dict(model.named_parameters())
    mine = {t: {n for n in named if n.startswith((f"encoders.{t}.", f"nets.{t}."))} for t in tasks}
    assert set().union(*mine.values()) == set(named)  # every parameter belongs to exactly one task
    for t in tasks:
        model.zero_grad(set_to_none=True)
        model(batch)[t].sum().backward()
        moved = {n for n, p in named.items() if p.grad is not None and p.grad.abs().sum() > 0}
        assert moved and moved <= mine[t], (t, sorted(moved - mine[t]))
        assert any(n.startswith(f"encoders.{t}.") for n in moved)  # its own embeddings are read
    with torch.no_grad():
        before = model(batch)
        for n in mine[tasks[0]]:
            named[n].add_(torch.randn_like(named[n]))  # scramble task 0's network
        after = model(batch)
    assert not torch.allclose(after[tasks[0]], before[tasks[0]])
    for t in tasks[1:]:
        torch.testing.assert_close(after[t], before[t], rtol=0, atol=0)
