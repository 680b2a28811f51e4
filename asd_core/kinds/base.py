"""What a model kind is: the protocol every kind implements, the data it passes
between stages, the registry, and the pieces every kind may use (domain balancing,
row caps, the threshold's clip sample, per-epoch generators).

Nothing here imports a kind; kinds import this module, never each other.

A kind turns a decoded clip into feature rows (``clip_rows``), assembles a machine
type's training data from them (``assemble``), optionally trains a torch module epoch
by epoch (``build`` / ``train_epoch``: what Ray Train workers run), and ``finalize``s
the trained state (banks, covariances, the decision threshold). For scoring,
``featurize`` needs only the artifact's JSON metadata (it runs in the CPU decode
stage) and ``load`` gives a :class:`Detector` whose ``score`` maps each clip's feature
rows to one number (higher = more anomalous).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from ..stages import FeatureConfig, MaskConfig, ModelConfig, ScoreConfig, TrainConfig


class Config(Protocol):
    """What a kind reads of the whole configuration (:class:`asd_core.config.ASDConfig`,
    assembled above the kinds): the shared stages, and its own stage by its name
    (``cfg.knn``, ``cfg.ae``)."""

    features: FeatureConfig
    masks: MaskConfig
    model: ModelConfig
    train: TrainConfig
    score: ScoreConfig

    def __getattr__(self, stage: str) -> Any: ...


@dataclass
class ClipRows:
    """One training clip's features: rows to train on and rows to score it with."""

    train: torch.Tensor  # [n_train, *item_shape]
    score: torch.Tensor  # [n_score, *item_shape]
    vector: np.ndarray | None = None  # the clip's own view of its waveform (ModelKind.clip_vector)


@dataclass
class Prepared:
    """A machine type's training inputs for one kind.

    ``train_data``: what the training epochs iterate over (float16/float32 array,
    shared through Ray's object store); ``score_rows``: per training clip its scoring
    rows (already in the kind's scoring space: e.g. normalised tiles); ``domains``:
    per training clip; ``extras``: JSON-able state the featuriser needs (e.g. the
    normaliser); ``score_vectors``: per training clip its :meth:`ModelKind.clip_vector`
    (None where the kind's configuration reads none).
    """

    train_data: np.ndarray
    score_rows: list[torch.Tensor]
    domains: list[str | None]
    extras: dict[str, Any] = field(default_factory=dict)
    n_rows_total: int = 0
    score_vectors: list[np.ndarray | None] | None = None


@dataclass
class Fitted:
    """What an artifact stores: tensors (weights, banks) and JSON extras."""

    state: dict[str, torch.Tensor]
    extras: dict[str, Any]
    threshold: float
    train_scores: np.ndarray


class Detector(Protocol):
    def score(self, clips: Sequence[torch.Tensor], vectors: Sequence[np.ndarray | None] | None = None) -> np.ndarray:
        """Per clip feature rows ``[n_c, *item_shape]`` (and, where the kind reads one,
        its :meth:`ModelKind.clip_vector`) -> ``[C]`` scores (NaN for empty)."""
        ...


class ModelKind(Protocol):
    """A model kind: features, training and scoring of one family of detectors.

    A new kind is a folder ``asd_core/kinds/<name>/`` whose class carries
    ``@register_kind`` and implements every method below; its settings are a frozen
    dataclass named by ``config_stage`` (``("knn", KnnConfig)`` makes ``cfg.knn``
    and ``--set knn.knn_k=7``). Everything above the kinds (artifacts, the scorer,
    the Ray jobs, the reports) reaches it only through :func:`get_kind`.
    """

    name: str
    config_stage: ClassVar[tuple[str, type] | None]

    def item_shape(self, cfg: Config) -> tuple[int, ...]:
        """Shape of one feature row (a U-Net tile ``(n_mels, frames)``, a vector ``(D,)``)."""
        ...

    def clip_rows(self, wav: np.ndarray, cfg: Config) -> ClipRows:
        """A decoded training clip (mono float32 at ``features.sample_rate``) -> its
        training rows and its scoring rows (before any normalisation)."""
        ...

    def assemble(self, clips: list[ClipRows], domains: list[str | None], cfg: Config) -> Prepared:
        """A machine type's clips -> the data its epochs iterate over, each clip's
        scoring rows in scoring space, and JSON extras (e.g. the normaliser)."""
        ...

    def epochs(self, cfg: Config) -> int:
        """Epochs to train; 0 for a kind with nothing to train (no Ray Train then)."""
        ...

    def build(self, cfg: Config) -> nn.Module | None:
        """A freshly initialised network (None when :meth:`epochs` is 0)."""
        ...

    def optimizer(self, model: nn.Module, cfg: Config) -> torch.optim.Optimizer: ...

    def train_epoch(
        self, model: nn.Module, data: torch.Tensor, opt: torch.optim.Optimizer, epoch: int, cfg: Config, *,
        device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
    ) -> float:
        """One epoch over ``data`` (this rank's share of every global batch); returns
        the epoch's mean loss. Order and augmentation come from ``(seed, epoch)``
        alone (:func:`epoch_generator`), so a resumed or distributed run repeats them."""
        ...

    def finalize(self, model: nn.Module | None, prep: Prepared, cfg: Config) -> Fitted:
        """The trained state to store (weights, banks, covariances) and the decision
        threshold fitted on the training clips' scores."""
        ...

    def featurize(self, wav: np.ndarray, cfg: Config, extras: dict[str, Any]) -> torch.Tensor:
        """A decoded clip -> its scoring rows ``[n, *item_shape]``; needs only the
        artifact's JSON (it runs in the CPU decode stage, without the weights)."""
        ...

    def clip_vector(self, wav: np.ndarray, cfg: Config) -> np.ndarray | None:
        """A decoded clip -> one vector of the whole waveform that rows cannot carry
        (the U-Net's envelope spectrum), or None when ``cfg`` reads none. Scoring
        computes it beside :meth:`featurize` in the decode stage and hands it to
        :meth:`Detector.score` with the clip's rows; in training :meth:`clip_rows`
        puts it in ``ClipRows.vector``."""
        ...

    def load(
        self, state: dict[str, torch.Tensor], extras: dict[str, Any], cfg: Config, device: torch.device | str,
        n_masks: int | None = None,
    ) -> Detector:
        """A ready :class:`Detector` from an artifact's tensors and extras."""
        ...


# ---------------------------------------------------------------- registry
_KINDS: dict[str, ModelKind] = {}


def register_kind(cls: type) -> type:
    """Class decorator: register a kind under its ``name`` (one line per kind)."""
    kind = cls()
    if kind.name in _KINDS:
        raise ValueError(f"model kind {kind.name!r} registered twice")
    _KINDS[kind.name] = kind
    return cls


def kind_names() -> tuple[str, ...]:
    return tuple(_KINDS)


def get_kind(name: str) -> ModelKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise ValueError(f"unknown model kind {name!r}; choose one of {', '.join(_KINDS)}") from None


def kind_stages() -> dict[str, type]:
    """``{stage name: config dataclass}`` of every registered kind that has settings."""
    return {k.config_stage[0]: k.config_stage[1] for k in _KINDS.values() if k.config_stage}


# ---------------------------------------------------------------- shared pieces
def domain_repeats(domains: Sequence[str | None], target_share: float) -> list[int]:
    """How often to repeat each training clip so that target-domain clips make up at
    least ``target_share`` of them (source and unknown domains once each)."""
    n_t = sum(d == "target" for d in domains)
    n_other = len(domains) - n_t
    if n_t == 0 or n_other == 0 or target_share <= 0:
        return [1] * len(domains)
    r = max(1, math.ceil(target_share * n_other / ((1.0 - target_share) * n_t)))
    return [r if d == "target" else 1 for d in domains]


def cap_rows(rows: torch.Tensor, max_rows: int, seed: int) -> torch.Tensor:
    """At most ``max_rows`` of ``rows`` (a seeded draw; 0 = all)."""
    if max_rows and rows.shape[0] > max_rows:
        g = torch.Generator().manual_seed(seed)
        return rows[torch.randperm(rows.shape[0], generator=g)[:max_rows]]
    return rows


def threshold_clip_indices(n_clips: int, cfg: Config) -> list[int]:
    """Which of ``n_clips`` training clips are scored to fit the threshold (at most
    ``score.threshold_max_clips``, a seeded draw)."""
    cap = cfg.score.threshold_max_clips
    if cap and n_clips > cap:
        return sorted(np.random.default_rng(cfg.train.seed).choice(n_clips, cap, replace=False).tolist())
    return list(range(n_clips))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Fresh order and masks every epoch, identical on every rank and every resume."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def run_epochs(
    kind: ModelKind,
    model: nn.Module,
    data: torch.Tensor,
    opt: torch.optim.Optimizer,
    cfg: Config,
    *,
    start: int = 0,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> None:
    """The one training loop: epochs ``start`` .. ``kind.epochs(cfg) - 1`` of ``kind``
    over ``data``; after each, ``on_epoch(epoch, loss, seconds)`` (a Ray Train worker
    reports and checkpoints there, after averaging the loss over ranks)."""
    import time

    for epoch in range(start, kind.epochs(cfg)):
        t0 = time.perf_counter()
        loss = kind.train_epoch(model, data, opt, epoch, cfg, device=device, rank=rank, world_size=world_size)
        if on_epoch:
            on_epoch(epoch, loss, time.perf_counter() - t0)
