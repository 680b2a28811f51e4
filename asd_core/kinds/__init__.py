"""Model kinds: the U-Net, the DCASE 2023 autoencoder baseline and a nearest-neighbour
reference, behind one interface.

Artifacts, the scorer, the Ray jobs and the reports go through :func:`get_kind` and
never test a kind by name, so another kind (or another scoring rule of the U-Net) is
one module and one line in :data:`KINDS`.

A kind turns a decoded clip into feature rows (``clip_rows``), assembles a machine
type's training data from them (``assemble``), optionally trains a torch module epoch
by epoch (``build`` / ``train_epoch``: what Ray Train workers run), and ``finalize``s
the trained state (banks, covariances, the decision threshold). For scoring,
``featurize`` needs only the artifact's JSON metadata (it runs in the CPU decode
stage) and ``load`` gives a :class:`Detector` whose ``score`` maps each clip's feature
rows to one number (higher = more anomalous).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ..config import ASDConfig


@dataclass
class ClipRows:
    """One training clip's features: rows to train on and rows to score it with."""

    train: torch.Tensor  # [n_train, *item_shape]
    score: torch.Tensor  # [n_score, *item_shape]


@dataclass
class Prepared:
    """A machine type's training inputs for one kind.

    ``train_data``: what the training epochs iterate over (float16/float32 array,
    shared through Ray's object store); ``score_rows``: per training clip its scoring
    rows (already in the kind's scoring space: e.g. normalised tiles); ``domains``:
    per training clip; ``extras``: JSON-able state the featuriser needs (e.g. the
    normaliser).
    """

    train_data: np.ndarray
    score_rows: list[torch.Tensor]
    domains: list[str | None]
    extras: dict[str, Any] = field(default_factory=dict)
    n_rows_total: int = 0


@dataclass
class Fitted:
    """What an artifact stores: tensors (weights, banks) and JSON extras."""

    state: dict[str, torch.Tensor]
    extras: dict[str, Any]
    threshold: float
    train_scores: np.ndarray


class Detector(Protocol):
    def score(self, clips: Sequence[torch.Tensor]) -> np.ndarray:
        """Per clip feature rows ``[n_c, *item_shape]`` -> ``[C]`` scores (NaN for empty)."""
        ...


class ModelKind(Protocol):
    name: str

    def item_shape(self, cfg: ASDConfig) -> tuple[int, ...]: ...

    def clip_rows(self, wav: np.ndarray, cfg: ASDConfig) -> ClipRows: ...

    def assemble(self, clips: list[ClipRows], domains: list[str | None], cfg: ASDConfig) -> Prepared: ...

    def epochs(self, cfg: ASDConfig) -> int: ...

    def build(self, cfg: ASDConfig) -> nn.Module | None: ...

    def optimizer(self, model: nn.Module, cfg: ASDConfig) -> torch.optim.Optimizer: ...

    def train_epoch(
        self, model: nn.Module, data: torch.Tensor, opt: torch.optim.Optimizer, epoch: int, cfg: ASDConfig, *,
        device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
    ) -> float: ...

    def finalize(self, model: nn.Module | None, prep: Prepared, cfg: ASDConfig) -> Fitted: ...

    def featurize(self, wav: np.ndarray, cfg: ASDConfig, extras: dict[str, Any]) -> torch.Tensor: ...

    def load(
        self, state: dict[str, torch.Tensor], extras: dict[str, Any], cfg: ASDConfig, device: torch.device | str,
        n_masks: int | None = None,
    ) -> Detector: ...


def get_kind(name: str) -> ModelKind:
    from . import baseline_ae, knn, unet

    kinds: dict[str, ModelKind] = {"unet": unet.KIND, "baseline-ae": baseline_ae.KIND, "knn": knn.KIND}
    try:
        return kinds[name]
    except KeyError:
        raise ValueError(f"unknown model kind {name!r}; choose one of {', '.join(KINDS)}") from None


KINDS = ("unet", "baseline-ae", "knn")


def fit_kind(
    wavs: Sequence[np.ndarray],
    cfg: ASDConfig,
    *,
    domains: Sequence[str | None] | None = None,
    device: str | torch.device = "cpu",
    on_epoch=None,
) -> tuple[Fitted, dict[str, Any]]:
    """Train one machine type's model of ``cfg.model.kind`` in this process.

    Returns the fitted state and a summary (losses, seconds, row counts).
    """
    import time

    from ..runtime import prepare_model

    t0 = time.perf_counter()
    kind = get_kind(cfg.model.kind)
    doms = list(domains) if domains is not None else [None] * len(wavs)
    prep = kind.assemble([kind.clip_rows(w, cfg) for w in wavs], doms, cfg)
    torch.manual_seed(cfg.train.seed)  # same initial weights as a Ray Train worker's
    model = kind.build(cfg)
    losses: list[float] = []
    t1 = time.perf_counter()
    if model is not None:
        prepare_model(model.to(device), cfg.model.channels_last)
        data = torch.from_numpy(np.asarray(prep.train_data, dtype=np.float32))
        opt = kind.optimizer(model, cfg)
        for epoch in range(kind.epochs(cfg)):
            losses.append(kind.train_epoch(model, data, opt, epoch, cfg, device=device))
            if on_epoch:
                on_epoch(epoch, losses[-1])
        model.eval()
    t_train = time.perf_counter() - t1
    fitted = kind.finalize(model, prep, cfg)
    summary = {
        "n_clips": len(wavs),
        "n_train_rows": int(prep.train_data.shape[0]),
        "losses": losses,
        "train_seconds": t_train,
        "total_seconds": time.perf_counter() - t0,
        "train_score_mean": float(np.nanmean(fitted.train_scores)) if len(fitted.train_scores) else float("nan"),
        "train_score_std": float(np.nanstd(fitted.train_scores)) if len(fitted.train_scores) else float("nan"),
    }
    return fitted, summary
