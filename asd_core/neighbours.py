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


@dataclass
class DomainBanks:
    """One standardisation, one bank per training domain; a query's score is the
    smallest over the domains of its mean distance to the ``k_d`` nearest rows of
    that domain's bank, with ``k_d = min(k, max(1, n_d // 10))``: the 10 target
    clips of a DCASE type count as one neighbour, not as half of five.

    The query's own domain is not needed (evaluation clips do not name it): a normal
    clip is near the normals of its own domain, wherever that is.
    """

    mean: torch.Tensor  # [D]
    std: torch.Tensor  # [D]
    bank: torch.Tensor  # [N, D], standardised
    domain: torch.Tensor  # [N] int: index of each row's domain
    ks: torch.Tensor  # [n_domains] int

    @classmethod
    def fit(
        cls, feats: torch.Tensor | np.ndarray, domains: list[str | None], k: int = 5, min_std: float = 1e-6
    ) -> DomainBanks:
        whole = NeighbourBank.fit(feats, k=k, min_std=min_std)
        names = sorted({d or "source" for d in domains})
        idx = torch.tensor([names.index(d or "source") for d in domains])
        ks = torch.tensor([min(k, max(1, int((idx == i).sum()) // 10)) for i in range(len(names))])
        return cls(whole.mean, whole.std, whole.bank, idx, ks)

    def score(self, feats: torch.Tensor | np.ndarray, *, self_domain: torch.Tensor | None = None) -> np.ndarray:
        """``[M, D]`` -> ``[M]``. ``self_domain`` (``[M]``): the queries are the bank's
        own rows in order (the threshold), each left out of its own domain's bank."""
        q = torch.as_tensor(np.asarray(feats), dtype=torch.float32)
        best = torch.full((q.shape[0],), float("inf"), dtype=torch.float64)
        for i, k in enumerate(self.ks.tolist()):
            rows = self.domain == i
            sub = NeighbourBank(self.mean, self.std, self.bank[rows], int(k))
            if self_domain is None:
                s = torch.from_numpy(sub.score(q))
            else:  # queries of domain i are rows of this bank: leave each one out
                s = _loo(sub, q, self_domain == i)
            best = torch.minimum(best, torch.nan_to_num(s, nan=float("inf")))
        return best.numpy()

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        return {f"{prefix}mean": self.mean, f"{prefix}std": self.std, f"{prefix}bank": self.bank,
                f"{prefix}domain": self.domain, f"{prefix}ks": self.ks}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], prefix: str = "") -> DomainBanks:
        return cls(*(state[f"{prefix}{n}"] for n in ("mean", "std", "bank", "domain", "ks")))


def _loo(sub: NeighbourBank, q: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """Scores of queries against ``sub``, leaving each of the ``own`` queries (which
    are ``sub``'s rows, in order) out of it."""
    out = torch.from_numpy(sub.score(q)).double()
    if own.any():
        out[own] = torch.from_numpy(sub.score(q[own], exclude_self=True)).double()
    return out
