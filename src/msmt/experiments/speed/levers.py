"""Levers of the speed benchmark: changes measured against msmt as adopted, applied to a built
model. Some are the layouts msmt used before (the A/B of a change that was adopted: previous
expert layers, two embedding lookups, out-of-place ReLU; they compute the same function from the
same weights), others were measured and not adopted (sparse gradients as the default,
``torch.compile`` of the training forward)."""

from __future__ import annotations

import torch
from torch import nn

from msmt.experiments.speed.models import BF16, optimizer
from msmt.layers.experts import ExpertBank
from msmt.spec.config import TrainConfig
from msmt.training.optim import build_optimizers

# model -> [(lever, precision)]: the previous expert layouts are timed in both precisions because
# ExpertBank's gain is in bfloat16
LEVERS = {
    "shared_bottom": [("sparse embedding grads", "fp32"), ("two embedding lookups", "fp32"), ("two embedding lookups", "bf16")],
    "mmoe": [
        ("sparse embedding grads", "fp32"), ("separate expert MLPs", "fp32"), ("separate expert MLPs", "bf16"),
        ("stacked experts", "fp32"), ("stacked experts", "bf16"), ("two embedding lookups", "fp32"),
        ("two embedding lookups", "bf16"), ("out-of-place ReLU", "fp32"), ("out-of-place ReLU", "bf16"),
        ("torch.compile", "fp32"), ("torch.compile", "bf16"),
    ],
    "m2m": [("stacked experts", "fp32"), ("stacked experts", "bf16"), ("torch.compile", "fp32")],
}
SAME_FUNCTION = ("separate expert MLPs", "stacked experts", "two embedding lookups", "out-of-place ReLU")


class Optimizers:
    """Several optimisers zeroed and stepped together (AdamW + SparseAdam of ``train.sparse_embeddings``)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()


class SeparateExperts(nn.Module):
    """MMoE's experts before ExpertBank: k independent MLPs, each with its own first GEMM, stacked.
    [B, in] -> [B, k, out], from the weights of ``bank``."""

    def __init__(self, bank: ExpertBank):
        super().__init__()
        h = bank.width
        self.mlps = nn.ModuleList()
        for j, deeper in enumerate(bank.deeper):
            first = nn.Linear(bank.first.in_features, h)
            with torch.no_grad():
                first.weight.copy_(bank.first.weight[j * h : (j + 1) * h])
                first.bias.copy_(bank.first.bias[j * h : (j + 1) * h])
            self.mlps.append(nn.Sequential(first, nn.ReLU(inplace=True), deeper))

    def forward(self, x):
        return torch.stack([m(x) for m in self.mlps], dim=1)


class StackedExperts(nn.Module):
    """M2M's experts before ExpertBank: [k, in, out] weights, the first layer one GEMM, deeper
    layers one batched matmul over the expert axis (``einsum("bki,kio->bko")``).
    [B, in] -> [B, k, out], from the weights of ``bank``."""

    def __init__(self, bank: ExpertBank):
        super().__init__()
        k, h = bank.k, bank.width
        ws = [bank.first.weight.detach().view(k, h, -1).transpose(1, 2)]
        bs = [bank.first.bias.detach().view(k, h)]
        for linears in zip(*[[m for m in d.net if isinstance(m, nn.Linear)] for d in bank.deeper]):
            ws.append(torch.stack([lin.weight.detach().t() for lin in linears]))
            bs.append(torch.stack([lin.bias.detach() for lin in linears]))
        self.weights = nn.ParameterList(nn.Parameter(w.contiguous()) for w in ws)
        self.biases = nn.ParameterList(nn.Parameter(b.contiguous()) for b in bs)

    def forward(self, x):
        k, i, o = self.weights[0].shape
        x = torch.relu((x @ self.weights[0].permute(1, 0, 2).reshape(i, k * o)).view(-1, k, o) + self.biases[0])  # [B, k, o]
        for w, b in zip(self.weights[1:], self.biases[1:]):
            x = torch.relu(torch.einsum("bki,kio->bko", x, w) + b)
        return x


def two_lookups(encoder):
    """FeatureEncoder.embed_fields before the one-lookup encoder: the sparse features and the
    scenario id in two lookups (two dense table gradients), then concatenated (no multi-valued
    features here). Returns the replacement ``embed_fields(batch) -> [B, S + 1, dim]``."""

    def embed_fields(batch):
        S = encoder.num_sparse
        sparse = encoder.table(batch["sparse"] + encoder.offsets[:S])
        scenario = encoder.table(batch["scenario"] + encoder.offsets[-1]).unsqueeze(1)
        return torch.cat([sparse, scenario], dim=1)

    return embed_fields


def lever_variant(model: nn.Module, lever: str):
    """``model`` changed by ``lever`` (in place where it can be): returns (model, optimiser)."""
    if lever == "sparse embedding grads":  # what train.sparse_embeddings=true builds
        tc = TrainConfig(lr=1e-3, weight_decay=0.0, sparse_embeddings=True)
        return model, Optimizers(build_optimizers(model, [], tc, distributed=False))
    if lever == "separate expert MLPs":  # the previous MMoE experts (same weights, same math)
        model.experts = SeparateExperts(model.experts)
    elif lever == "stacked experts":  # the previous M2M experts (same weights, same math)
        model.experts = StackedExperts(model.experts)
    elif lever == "two embedding lookups":  # the previous FeatureEncoder (same table, same math)
        model.encoder.embed_fields = two_lookups(model.encoder)
    elif lever == "out-of-place ReLU":  # MLP's ReLUs as before
        for mod in model.modules():
            if isinstance(mod, nn.ReLU):
                mod.inplace = False
    elif lever == "torch.compile":  # the training forward compiled by TorchInductor (default mode)
        return torch.compile(model), optimizer(model)
    else:
        raise ValueError(f"unknown lever {lever!r}")
    return model, optimizer(model)


def lever_impl(lever: str, precision: str) -> str:
    """The variant's label: ``'msmt + <lever>'`` or ``'msmt bf16 + <lever>'``."""
    return f"{'msmt' if precision == 'fp32' else BF16} + {lever}"


def split_impl(impl: str) -> tuple[str, str | None]:
    """'msmt bf16 + stacked experts' -> ('msmt bf16', 'stacked experts'); 'msmt' -> ('msmt', None)."""
    base, _, lever = impl.partition(" + ")
    return base, lever or None
