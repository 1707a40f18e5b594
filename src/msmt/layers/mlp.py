"""A plain multilayer perceptron: Linear -> activation -> dropout, per hidden layer."""

from __future__ import annotations

from torch import Tensor, nn

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


def activation(name: str, inplace: bool = False) -> nn.Module:
    """The activation module ``name``; ``inplace`` where it has an in-place form (ReLU, SiLU).

    In place is safe right after a Linear (whose backward does not read its output) and saves
    one [B, d] allocation and write per layer.
    """
    if inplace and name in ("relu", "silu"):
        return _ACTIVATIONS[name](inplace=True)
    return _ACTIVATIONS[name]()


class MLP(nn.Module):
    """[B, in_dim] -> [B, dims[-1]] (or [B, out_dim] with a final linear output layer).

    No batch normalisation on purpose: a row's output must not depend on its batch-mates.
    """

    def __init__(
        self,
        in_dim: int,
        dims: list[int] | tuple[int, ...],
        out_dim: int | None = None,
        act: str = "relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_dim
        for d in dims:
            layers += [nn.Linear(prev, d), activation(act, inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = d
        if out_dim is not None:
            layers.append(nn.Linear(prev, out_dim))
            prev = out_dim
        self.net = nn.Sequential(*layers)
        self.out_dim = prev

    def last_linear(self) -> nn.Linear | None:
        """The last linear layer (GradNorm's anchor when this MLP is the shared bottom)."""
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        return linears[-1] if linears else None

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
