"""The method end to end on one machine: training a machine type's model of any kind,
and a :class:`Scorer` that routes clips to their type's model.

The Ray jobs call exactly these functions inside their workers and actors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .artifact import Artifact, load_artifact, score_quantiles
from .audio import clip_level_db, decode, level_reference
from .config import ASDConfig
from .kinds import Fitted, get_kind
from .kinds.base import run_epochs
from .runtime import prepare_model
from .storage import Location


# ---------------------------------------------------------------- training
@dataclass
class TrainedType:
    """One machine type's model, trained in this process."""

    fitted: Fitted
    config: ASDConfig
    summary: dict = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        return self.fitted.threshold

    def artifact(self, machine_type: str, model_id: str = "local") -> Artifact:
        return Artifact(machine_type, self.config, self.fitted.state, self.fitted.extras, self.fitted.threshold,
                        model_id, self.summary)


def train_type(
    wavs: Sequence[np.ndarray],
    cfg: ASDConfig,
    *,
    domains: Sequence[str | None] | None = None,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainedType:
    """Train one machine type's model of kind ``cfg.model.kind`` on its normal training
    clips (single process). ``domains`` (``"source"``/``"target"``/None per clip)
    enables domain balancing and per-domain statistics."""
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

        def each(epoch: int, loss: float, seconds: float) -> None:
            losses.append(loss)
            if on_epoch:
                on_epoch(epoch, loss)

        run_epochs(kind, model, data, opt, cfg, device=device, on_epoch=each)
        model.eval()
    t_train = time.perf_counter() - t1
    fitted = kind.finalize(model, prep, cfg)
    fitted.extras = {**fitted.extras, "level_db": level_reference([clip_level_db(w) for w in wavs])}
    scores = fitted.train_scores
    summary = {
        "n_clips": len(wavs),
        "n_train_rows": int(prep.train_data.shape[0]),
        "losses": losses,
        "train_seconds": t_train,
        "total_seconds": time.perf_counter() - t0,
        "train_score_mean": float(np.nanmean(scores)) if len(scores) else float("nan"),
        "train_score_std": float(np.nanstd(scores)) if len(scores) else float("nan"),
        "train_score_quantiles": score_quantiles(scores),
    }
    return TrainedType(fitted, cfg, summary)


# ---------------------------------------------------------------- scoring
@dataclass
class ClipScore:
    score: float
    n_tiles: int  # feature rows the score came from (tiles, frame vectors, segments)
    decision: int
    threshold: float
    model_id: str
    model_kind: str = ""


class Scorer:
    """Holds one artifact per machine type and scores decoded clips with its kind.

    Artifacts are passed in (tests build them in memory); :meth:`from_location` loads
    them from a models URI. Scoring masks are made once per scorer (fixed seed), so
    scores are deterministic and do not depend on batch-mates.
    """

    def __init__(self, artifacts: dict[str, Artifact], device: str | torch.device = "cpu", n_masks: int | None = None):
        self.device = torch.device(device)
        self.artifacts = artifacts
        self.detectors = {
            mt: get_kind(art.kind).load(art.state, art.extras, art.config, self.device, n_masks)
            for mt, art in artifacts.items()
        }

    @classmethod
    def from_location(
        cls,
        loc: Location,
        machine_types: Iterable[str],
        *,
        device: str | torch.device = "cpu",
        n_masks: int | None = None,
        expect_config: ASDConfig | None = None,
    ) -> Scorer:
        arts = {mt: load_artifact(loc, mt, expect_config=expect_config) for mt in machine_types}
        return cls(arts, device=device, n_masks=n_masks)

    def has_model(self, machine_type: str) -> bool:
        return machine_type in self.artifacts

    def item_shape(self, machine_type: str) -> tuple[int, ...]:
        art = self.artifacts[machine_type]
        return get_kind(art.kind).item_shape(art.config)

    def features(self, machine_type: str, wav: np.ndarray) -> torch.Tensor:
        """A decoded clip's feature rows ``[n, *item_shape]`` for its type's model."""
        art = self.artifacts[machine_type]
        return get_kind(art.kind).featurize(wav, art.config, art.extras)

    def vector(self, machine_type: str, wav: np.ndarray) -> np.ndarray | None:
        """A decoded clip's waveform vector for its type's model (None: it reads none)."""
        art = self.artifacts[machine_type]
        return get_kind(art.kind).clip_vector(wav, art.config)

    def score_features(
        self, machine_type: str, clips: Sequence[torch.Tensor], vectors: Sequence[np.ndarray | None] | None = None,
    ) -> list[ClipScore]:
        """Score several clips' feature rows (and waveform vectors) of one machine type together."""
        art = self.artifacts[machine_type]
        scores = self.detectors[machine_type].score(list(clips), vectors)
        return [
            ClipScore(float(s), int(t.shape[0]), int(s > art.threshold), art.threshold, art.model_id, art.kind)
            for s, t in zip(scores, clips, strict=True)
        ]

    def score_wav(self, machine_type: str, wav: np.ndarray) -> ClipScore:
        return self.score_features(machine_type, [self.features(machine_type, wav)],
                                   [self.vector(machine_type, wav)])[0]

    def score_bytes(self, machine_type: str, data: bytes) -> ClipScore:
        art = self.artifacts[machine_type]
        cfg = art.config.features
        return self.score_wav(machine_type, decode(data, cfg.sample_rate, cfg.min_seconds, cfg.max_seconds))
