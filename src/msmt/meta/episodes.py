"""Groups -> episodes: each sampled group's rows are split into a support and a query set.

An episode is ``groups_per_episode`` groups drawn without replacement among the groups that
have at least ``support_size + query_size`` rows; each group's rows are permuted and the first
``support_size`` become its support set, the next ``query_size`` its query set (disjoint).
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
    """Row indices of every group of a table (``rows[g]``: LongTensor of that group's rows)."""

    def __init__(self, groups: np.ndarray):
        codes, uniques = pd.factorize(pd.Series(groups), sort=True)
        order = np.argsort(codes, kind="stable")
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

    def sampler(self, support_size: int, query_size: int, groups_per_episode: int, seed: int) -> EpisodeSampler:
        return EpisodeSampler(self, support_size, query_size, groups_per_episode, seed)


class EpisodeSampler:
    """Draws episodes: a list of (support row indices, query row indices) per group."""

    def __init__(self, index: GroupIndex, support_size: int, query_size: int, groups_per_episode: int, seed: int):
        need = support_size + query_size
        self.eligible = index.eligible(need)
        if not self.eligible:
            largest = int(index.sizes().max()) if len(index) else 0
            raise ConfigError(
                f"meta: no group has support_size + query_size = {need} rows (the largest has {largest}); "
                "lower meta.support_size / meta.query_size"
            )
        self.index, self.support_size, self.query_size = index, support_size, query_size
        self.groups_per_episode = min(groups_per_episode, len(self.eligible))
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        pick = torch.randperm(len(self.eligible), generator=self.generator)[: self.groups_per_episode]
        out = []
        for i in pick.tolist():
            rows = self.index.rows[self.eligible[i]]
            perm = rows[torch.randperm(len(rows), generator=self.generator)]
            out.append((perm[: self.support_size], perm[self.support_size : self.support_size + self.query_size]))
        return out

    def sample_batches(self, data: Batch) -> list[tuple[Batch, Batch]]:
        return [(take(data, s), take(data, q)) for s, q in self.sample()]
