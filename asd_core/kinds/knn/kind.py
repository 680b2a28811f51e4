"""The nearest-neighbour reference kind: the floor every other model must beat.

``knn.knn_level = "clip"``: a clip is the mean and std over time of each log-mel band
(2 x n_mels numbers, the features of :mod:`.features`); its score is the mean
distance to the k nearest training clips after standardising on the training clips.
``"frame"``: a clip is its 0.25-s segments (mean log-mel per band); its score is the
largest over its segments of the distance to the nearest training segments, so a
short event that clip statistics average away still counts. ``"clip_env"``: the clip
statistics joined with the waveform's envelope spectrum
(:func:`asd_core.features.envelope_spectrum`, 128 numbers: how fast four carrier bands
swell and fade), standardised together; a clip level. Training stores the features in
the artifact: seconds, no GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ...features import ENVELOPE_SIZE, envelope_spectrum
from ...metrics import gamma_threshold
from ...neighbours import DomainBanks, NeighbourBank
from ..base import ClipRows, Config, Fitted, Prepared, register_kind
from .config import KnnConfig
from .features import clip_statistics, segments

MAX_BANK_SEGMENTS = 50_000
CLIP_LEVELS = ("clip", "clip_env")  # one row per clip


class _KnnDetector:
    def __init__(self, bank: NeighbourBank | DomainBanks, level: str):
        self.bank, self.level = bank, level

    def score(self, clips: Sequence[torch.Tensor], vectors=None) -> np.ndarray:
        out = np.full(len(clips), np.nan)
        for i, c in enumerate(clips):
            if c.shape[0]:
                d = self.bank.score(c)
                out[i] = float(d.max() if self.level == "frame" else d.mean())
        return out


@register_kind
@dataclass(frozen=True)
class KnnKind:
    name: str = "knn"
    config_stage: ClassVar[tuple[str, type] | None] = ("knn", KnnConfig)

    def item_shape(self, cfg: Config) -> tuple[int, ...]:
        level = cfg.knn.knn_level
        return ({"frame": cfg.features.n_mels, "clip_env": 2 * cfg.features.n_mels + ENVELOPE_SIZE}
                .get(level, 2 * cfg.features.n_mels),)

    def _rows(self, wav: np.ndarray, cfg: Config) -> torch.Tensor:
        if cfg.knn.knn_level == "clip":
            return clip_statistics(wav, cfg.features)
        if cfg.knn.knn_level == "clip_env":
            env = torch.from_numpy(envelope_spectrum(wav, cfg.features.sample_rate)).float()[None]
            return torch.cat([clip_statistics(wav, cfg.features), env], 1)
        if cfg.knn.knn_level == "frame":
            return segments(wav, cfg.features)
        raise ValueError(f"knn.knn_level must be 'clip', 'clip_env' or 'frame', got {cfg.knn.knn_level!r}")

    def clip_rows(self, wav: np.ndarray, cfg: Config) -> ClipRows:
        r = self._rows(wav, cfg)
        return ClipRows(r, r)

    def assemble(self, clips: list[ClipRows], domains: list[str | None], cfg: Config) -> Prepared:
        rows = [c.train for c in clips if c.train.shape[0]]
        if not rows:
            raise ValueError("no training features")
        data = torch.cat(rows)
        if data.shape[0] > MAX_BANK_SEGMENTS:
            g = torch.Generator().manual_seed(cfg.train.seed)
            data = data[torch.randperm(data.shape[0], generator=g)[:MAX_BANK_SEGMENTS]]
        return Prepared(data.numpy(), [c.score for c in clips], list(domains), {}, int(data.shape[0]))

    def epochs(self, cfg: Config) -> int:
        return 0

    def build(self, cfg: Config):
        return None

    def optimizer(self, model, cfg):  # pragma: no cover - nothing to train
        raise TypeError("the knn kind has no trainable model")

    def train_epoch(self, *a, **k) -> float:  # pragma: no cover
        raise TypeError("the knn kind has no trainable model")

    def finalize(self, model, prep: Prepared, cfg: Config) -> Fitted:
        if cfg.knn.knn_banks not in ("domain", "one"):
            raise ValueError(f"knn.knn_banks must be 'domain' or 'one', got {cfg.knn.knn_banks!r}")
        doms = prep.domains if len(prep.domains) == len(prep.train_data) else [None] * len(prep.train_data)
        several = len({d or "source" for d in doms}) > 1  # one domain known: one bank, as before
        if cfg.knn.knn_level in CLIP_LEVELS and cfg.knn.knn_banks == "domain" and several:  # a row per clip, in order
            banks = DomainBanks.fit(prep.train_data, doms, k=cfg.knn.knn_k)
            scores = banks.score(prep.train_data, self_domain=banks.domain)  # each clip without itself
            scores = scores[np.isfinite(scores)]
            return Fitted(banks.state_dict("bank."), {}, gamma_threshold(scores, cfg.score.threshold_quantile), scores)
        bank = NeighbourBank.fit(prep.train_data, k=cfg.knn.knn_k)
        if cfg.knn.knn_level in CLIP_LEVELS:
            scores = bank.score(prep.train_data, exclude_self=True)
        else:  # a clip's own segments are in the bank: score each clip against the others
            scores = np.array([_without(prep, i, cfg).score(c).max() for i, c in enumerate(prep.score_rows[:50])])
        scores = scores[np.isfinite(scores)]
        return Fitted(bank.state_dict("bank."), {}, gamma_threshold(scores, cfg.score.threshold_quantile), scores)

    def featurize(self, wav: np.ndarray, cfg: Config, extras: dict[str, Any]) -> torch.Tensor:
        return self._rows(wav, cfg)

    def clip_vector(self, wav: np.ndarray, cfg: Config) -> None:
        return None

    def load(self, state, extras, cfg, device, n_masks=None) -> _KnnDetector:
        banks = DomainBanks.from_state(state, "bank.") if "bank.domain" in state else None
        return _KnnDetector(banks or NeighbourBank.from_state(state, "bank."), cfg.knn.knn_level)


def _without(prep: Prepared, i: int, cfg: Config) -> NeighbourBank:
    others = [c for j, c in enumerate(prep.score_rows) if j != i and c.shape[0]]
    return NeighbourBank.fit(torch.cat(others), k=cfg.knn.knn_k)


KIND = KnnKind()
