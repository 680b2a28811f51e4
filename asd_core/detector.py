"""The method end to end on one machine: archive listing, training a machine type,
and a :class:`Scorer` that routes clips to their type's model.

The Ray jobs call exactly these functions inside their workers and actors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .artifact import Artifact, load_artifact
from .audio import decode
from .config import ASDConfig
from .kinds import Fitted, fit_kind, get_kind
from .storage import Location


# ---------------------------------------------------------------- training
def domain_repeats(domains: Sequence[str | None], target_share: float) -> list[int]:
    """How often to repeat each training clip so that target-domain clips make up at
    least ``target_share`` of them (source and unknown domains once each)."""
    n_t = sum(d == "target" for d in domains)
    n_other = len(domains) - n_t
    if n_t == 0 or n_other == 0 or target_share <= 0:
        return [1] * len(domains)
    r = max(1, math.ceil(target_share * n_other / ((1.0 - target_share) * n_t)))
    return [r if d == "target" else 1 for d in domains]


def cap_tiles(tiles: torch.Tensor, max_tiles: int, seed: int) -> torch.Tensor:
    if max_tiles and tiles.shape[0] > max_tiles:
        g = torch.Generator().manual_seed(seed)
        return tiles[torch.randperm(tiles.shape[0], generator=g)[:max_tiles]]
    return tiles


def threshold_clip_indices(n_clips: int, cfg: ASDConfig) -> list[int]:
    """Which of ``n_clips`` training clips are scored to fit the threshold (at most
    ``score.threshold_max_clips``, a seeded draw)."""
    cap = cfg.score.threshold_max_clips
    if cap and n_clips > cap:
        return sorted(np.random.default_rng(cfg.train.seed).choice(n_clips, cap, replace=False).tolist())
    return list(range(n_clips))


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
    fitted, summary = fit_kind(wavs, cfg, domains=domains, device=device, on_epoch=on_epoch)
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

    def score_features(self, machine_type: str, clips: Sequence[torch.Tensor]) -> list[ClipScore]:
        """Score several clips' feature rows of one machine type together."""
        art = self.artifacts[machine_type]
        scores = self.detectors[machine_type].score(list(clips))
        return [
            ClipScore(float(s), int(t.shape[0]), int(s > art.threshold), art.threshold, art.model_id, art.kind)
            for s, t in zip(scores, clips, strict=True)
        ]

    def score_wav(self, machine_type: str, wav: np.ndarray) -> ClipScore:
        return self.score_features(machine_type, [self.features(machine_type, wav)])[0]

    def score_bytes(self, machine_type: str, data: bytes) -> ClipScore:
        art = self.artifacts[machine_type]
        cfg = art.config.features
        return self.score_wav(machine_type, decode(data, cfg.sample_rate, cfg.min_seconds))
