"""FeatureEncoder (msmt.layers.embedding): one fused table, fields in a fixed order."""

from __future__ import annotations

import torch

from helpers import encoded
from msmt.layers import FeatureEncoder


def naive_fields(enc: FeatureEncoder, batch) -> torch.Tensor:
    """Field by field from the table: each sparse feature, each multi-valued one mean-pooled over
    its non-padding ids, then the scenario id."""
    table, off = enc.table.weight, enc.offsets
    S = enc.num_sparse
    cols = [table[batch["sparse"][:, i] + off[i]] for i in range(S)]
    for j, name in enumerate(enc.multi_names):
        ids = batch[f"multi.{name}"]
        rows = []
        for b in range(ids.shape[0]):
            kept = ids[b][ids[b] > 0]
            rows.append(table[kept + off[S + j]].mean(0) if len(kept) else torch.zeros(enc.dim))
        cols.append(torch.stack(rows))
    cols.append(table[batch["scenario"] + off[-1]])
    return torch.stack(cols, dim=1)


def test_fields_and_table_gradient_match_per_field_lookups(tiny_train, tiny_schema):
    torch.manual_seed(0)
    enc = FeatureEncoder(tiny_schema, 4, with_scenario=True)
    assert enc.multi_names, "the tiny data has a multi-valued feature"
    batch = {k: v[:64] for k, v in encoded(tiny_train, tiny_schema).items()}
    got = enc.embed_fields(batch)
    want = naive_fields(enc, batch)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    weights = torch.randn_like(want)
    (grad_fast,) = torch.autograd.grad((got * weights).sum(), enc.table.weight)
    (grad_naive,) = torch.autograd.grad((naive_fields(enc, batch) * weights).sum(), enc.table.weight)
    torch.testing.assert_close(grad_fast, grad_naive, atol=1e-5, rtol=0)
    flat = enc(batch)
    assert flat.shape == (64, enc.out_dim)
