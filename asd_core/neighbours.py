"""Nearest-neighbour scoring against a bank of training features.

Features are standardised with the bank's per-dimension mean and std, and a query's
score is its mean Euclidean distance to its ``k`` nearest bank rows. With source and
target clips in one bank, a target-domain normal finds its neighbours among the few
target clips, which is why this rule copes with the domain shift better than a
global error level (measured in the README's study).

The bank is plain tensors, so it is stored in a model artifact's weights file and
loaded with ``weights_only=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class NeighbourBank:
    mean: torch.Tensor  # [D]
    std: torch.Tensor  # [D]
    bank: torch.Tensor  # [N, D], standardised
    k: int = 5

    @classmethod
    def fit(cls, feats: torch.Tensor | np.ndarray, k: int = 5, min_std: float = 1e-6) -> NeighbourBank:
        """Bank of ``feats [N, D]`` (float)."""
        f = torch.as_tensor(np.asarray(feats), dtype=torch.float32)
        if f.ndim != 2 or f.shape[0] == 0:
            raise ValueError(f"need features [N, D] with N > 0, got {tuple(f.shape)}")
        mean = f.mean(0)
        std = f.std(0, unbiased=False).clamp_min(min_std) if f.shape[0] > 1 else torch.ones_like(mean)
        return cls(mean, std, (f - mean) / std, k)

    def score(self, feats: torch.Tensor | np.ndarray, *, exclude_self: bool = False) -> np.ndarray:
        """``[M, D]`` -> ``[M]`` mean distance to the ``k`` nearest bank rows.

        ``exclude_self``: the queries are the bank's own rows (scoring the training
        clips for the threshold); each query's nearest row, itself, is left out.
        """
        q = (torch.as_tensor(np.asarray(feats), dtype=torch.float32) - self.mean) / self.std
        skip = 1 if exclude_self else 0
        k = min(self.k, self.bank.shape[0] - skip)
        if k < 1:
            return np.full(q.shape[0], np.nan)
        out = []
        for start in range(0, q.shape[0], 1024):  # bounds the [chunk, N] distance matrix
            d = torch.cdist(q[start : start + 1024].double(), self.bank.double())
            out.append(d.topk(k + skip, dim=1, largest=False).values[:, skip:].mean(1))
        return torch.cat(out).numpy() if out else np.zeros(0)

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        return {
            f"{prefix}mean": self.mean,
            f"{prefix}std": self.std,
            f"{prefix}bank": self.bank,
            f"{prefix}k": torch.tensor(self.k),
        }

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], prefix: str = "") -> NeighbourBank:
        return cls(state[f"{prefix}mean"], state[f"{prefix}std"], state[f"{prefix}bank"], int(state[f"{prefix}k"]))
