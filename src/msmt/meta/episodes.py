"""Groups -> episodes: each sampled group's rows are split into a support and a query set.

An episode is ``groups_per_episode`` groups drawn without replacement among the groups that
have at least ``support_min + 1`` rows, and one support size k drawn from
[``support_min``, ``support_size``] (so one meta-model serves every K; k = 0 scores the block's
start unadapted, the forecast of a group without rows). Per group:

* ``time`` (the default where the rows have a time): the group's rows in time order, a cut c
  drawn uniformly with k ≤ c < n; support = the k rows before the cut, query = up to
  ``query_size`` rows from the cut on. No query row is earlier than a support row of its group:
  the split evaluation and deployment make (adapt on the latest rows, forecast what follows).
* ``random``: the group's rows permuted; the first k are the support, the next ones the query.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from msmt.data.io import source_of
from msmt.spec.batch import Batch, take
from msmt.spec.errors import ConfigError, DataError


def group_values(frame: pd.DataFrame, column: str, allow_missing: bool = False) -> np.ndarray:
    """[N] group ids as text; a missing column is a DataError, missing values too unless allowed."""
    if column not in frame.columns:
        raise DataError(source_of(frame), column, "group column not found")
    values = frame[column].astype("string")
    if not allow_missing and values.isna().any():
        raise DataError(source_of(frame), column, f"{int(values.isna().sum())} rows have no group value")
    return values.fillna("<NA>").to_numpy(dtype=object)


class GroupIndex:
    """Row indices of every group of a table (``rows[g]``: LongTensor of that group's rows, in
    time order when ``times`` [N] is given, else in table order)."""

    def __init__(self, groups: np.ndarray, times: np.ndarray | None = None):
        codes, uniques = pd.factorize(pd.Series(groups), sort=True)
        order = np.lexsort((times, codes)) if times is not None else np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
        self.names: list[str] = [str(u) for u in uniques]
        self.rows: list[torch.Tensor] = [
            torch.from_numpy(order[bounds[i] : bounds[i + 1]].astype(np.int64)) for i in range(len(uniques))
        ]

    def __len__(self) -> int:
        return len(self.names)

    def sizes(self) -> np.ndarray:
        return np.array([len(r) for r in self.rows])

    def eligible(self, min_rows: int) -> list[int]:
        return [i for i, r in enumerate(self.rows) if len(r) >= min_rows]

    def sampler(
        self, support_size: int, query_size: int, groups_per_episode: int, seed: int, support_min: int | None = None,
        ordered: bool = False,
    ) -> EpisodeSampler:
        return EpisodeSampler(self, support_size, query_size, groups_per_episode, seed, support_min, ordered)


class EpisodeSampler:
    """Draws episodes: a list of (support row indices, query row indices) per group.

    ``ordered``: the time-ordered split of the module docstring (the index's rows are in time
    order); else the random one. ``support_min`` (default ``support_size``): the smallest
    support size an episode draws.
    """

    def __init__(
        self, index: GroupIndex, support_size: int, query_size: int, groups_per_episode: int, seed: int,
        support_min: int | None = None, ordered: bool = False,
    ):
        self.support_min = support_size if support_min is None else min(support_min, support_size)
        need = self.support_min + 1
        self.eligible = index.eligible(need)
        if not self.eligible:
            largest = int(index.sizes().max()) if len(index) else 0
            raise ConfigError(
                f"meta: no group has support_min + 1 = {need} rows (the largest has {largest}); lower meta.support_min"
            )
        self.index, self.support_size, self.query_size, self.ordered = index, support_size, query_size, ordered
        self.groups_per_episode = min(groups_per_episode, len(self.eligible))
        self.generator = torch.Generator().manual_seed(seed)

    def _split(self, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(rows)
        k = min(k, n - 1)
        if self.ordered:  # a cut c in [k, n-1]: support before it, query from it on
            cut = int(torch.randint(k, n, (1,), generator=self.generator))
            return rows[cut - k : cut], rows[cut : cut + self.query_size]
        perm = rows[torch.randperm(n, generator=self.generator)]
        return perm[:k], perm[k : k + self.query_size]

    def sample(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        k = int(torch.randint(self.support_min, self.support_size + 1, (1,), generator=self.generator))
        pick = torch.randperm(len(self.eligible), generator=self.generator)[: self.groups_per_episode]
        return [self._split(self.index.rows[self.eligible[i]], k) for i in pick.tolist()]

    def sample_batches(self, data: Batch) -> list[tuple[Batch, Batch]]:
        return [(take(data, s), take(data, q)) for s, q in self.sample()]
