"""The method end to end on one machine: archive listing, training a machine type,
and a :class:`Scorer` that routes clips to their type's model.

The Ray jobs call exactly these functions inside their workers and actors.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .artifact import Artifact, load_artifact
from .audio import decode
from .config import ASDConfig
from .dcase import AUDIO_SUFFIXES, ClipName, ClipNameError, parse_path
from .features import Normalizer, clip_tiles
from .masks import RandomMaskSource
from .metrics import gamma_threshold
from .scoring import score_clips
from .storage import Location, fingerprint
from .training import fit
from .unet import build_model


# ---------------------------------------------------------------- archive listing
@dataclass(frozen=True)
class ListedClip:
    path: str  # path on the location's filesystem (no scheme)
    size: int
    clip: ClipName | None  # None when the name could not be parsed
    error: str = ""
    machine_type: str = ""  # folder name, known even when the file name is not DCASE
    fingerprint: str = ""  # storage.fingerprint: ETag (S3) or mtime (local)
    reason: str = "bad_name"  # error reason when clip is None: bad_name / unsupported_format


def list_archive(loc: Location, split: str | None = "test", machines: Sequence[str] | None = None) -> list[ListedClip]:
    """Every file under ``<loc>/<machine_type>/<split>/`` (sub-folders included), sorted by path.

    Machine types are whatever folders the archive holds (optionally filtered by
    ``machines``). Nothing is dropped: a file that is not .wav/.flac is listed with
    reason ``unsupported_format``, one in a sub-folder of the split or with a
    non-DCASE name with ``bad_name``, each with ``error`` set.
    """
    out: list[ListedClip] = []
    splits = [split] if split else ["train", "test"]
    for mt_path in sorted(loc.fs.ls(loc.path, detail=False)):
        mt = mt_path.rstrip("/").rsplit("/", 1)[-1]
        if machines and mt not in machines:
            continue
        for sp in splits:
            d = f"{mt_path.rstrip('/')}/{sp}"
            if not loc.fs.isdir(d):
                continue
            for name, info in sorted(loc.fs.find(d, detail=True).items()):
                if info.get("type") != "file":
                    continue
                size, fp = int(info.get("size") or 0), fingerprint(info)
                if not name.lower().endswith(AUDIO_SUFFIXES):
                    out.append(ListedClip(name, size, None, f"{name!r}: not a .wav or .flac file", mt, fp,
                                          "unsupported_format"))
                    continue
                try:
                    out.append(ListedClip(name, size, parse_path(name), machine_type=mt, fingerprint=fp))
                except ClipNameError as e:
                    out.append(ListedClip(name, size, None, str(e), machine_type=mt, fingerprint=fp))
    return out


def machine_types(loc: Location) -> list[str]:
    """The machine-type folders of an archive."""
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in loc.fs.ls(loc.path, detail=False) if loc.fs.isdir(p))


# ---------------------------------------------------------------- training
@dataclass
class TrainedType:
    model: torch.nn.Module
    normalizer: Normalizer
    threshold: float
    summary: dict = field(default_factory=dict)


def training_tiles(
    wavs: Sequence[np.ndarray], cfg: ASDConfig, domains: Sequence[str | None] | None = None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Raw (un-normalised) training tiles ``[N, n_mels, tile_frames]`` of all clips, with
    target-domain clips repeated per ``train.target_share``, and each clip's scoring
    tiles (for the threshold)."""
    repeats = domain_repeats(domains or [None] * len(wavs), cfg.train.target_share)
    train, score = [], []
    for wav, r in zip(wavs, repeats, strict=True):
        t = clip_tiles(wav, cfg.features, train=True)
        train.extend([t] * r)
        score.append(clip_tiles(wav, cfg.features, train=False))
    if not train or sum(t.shape[0] for t in train) == 0:
        raise ValueError("no training tiles: no clip is long enough for one tile")
    return torch.cat(train), score


def clip_domain(path: str) -> str | None:
    """The domain a DCASE path names, or None (evaluation or non-DCASE names)."""
    try:
        return parse_path(path).domain
    except ClipNameError:
        return None


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


def threshold_from_training(
    model: torch.nn.Module, normalizer: Normalizer, score_tiles_raw: Sequence[torch.Tensor], cfg: ASDConfig
) -> tuple[float, np.ndarray]:
    """Score (up to ``threshold_max_clips``) training clips and fit the gamma threshold."""
    clips = [score_tiles_raw[i] for i in threshold_clip_indices(len(score_tiles_raw), cfg)]
    masks = RandomMaskSource(cfg.score.n_masks, cfg.masks, cfg.score.mask_seed).masks(
        cfg.features.n_mels, cfg.features.tile_frames
    )
    model.eval()
    scores = score_clips(
        model, [normalizer(t) for t in clips], masks, forward_batch=cfg.score.forward_batch, fill=cfg.masks.fill
    )
    scores = scores[np.isfinite(scores)]
    return gamma_threshold(scores, cfg.score.threshold_quantile), scores


def train_type(
    wavs: Sequence[np.ndarray],
    cfg: ASDConfig,
    *,
    domains: Sequence[str | None] | None = None,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainedType:
    """Train one machine type's model on its normal training clips (single process).

    ``domains`` (``"source"``/``"target"``/None per clip) enables domain balancing.
    """
    t0 = time.perf_counter()
    raw, score_raw = training_tiles(wavs, cfg, domains)
    normalizer = Normalizer.fit(raw)
    tiles = cap_tiles(normalizer(raw), cfg.train.max_train_tiles, cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    result = fit(model, tiles, cfg.train, cfg.masks, device=device, on_epoch=on_epoch)
    threshold, train_scores = threshold_from_training(model, normalizer, score_raw, cfg)
    summary = {
        "n_clips": len(wavs),
        "n_tiles": int(tiles.shape[0]),
        "losses": result.losses,
        "train_seconds": result.seconds,
        "total_seconds": time.perf_counter() - t0,
        "train_score_mean": float(np.mean(train_scores)),
        "train_score_std": float(np.std(train_scores)),
    }
    return TrainedType(model.cpu().eval(), normalizer, threshold, summary)


# ---------------------------------------------------------------- scoring
@dataclass
class ClipScore:
    score: float
    n_tiles: int
    decision: int
    threshold: float
    model_id: str


class Scorer:
    """Holds one artifact per machine type and scores decoded clips.

    ``loader(machine_type) -> Artifact`` is injected so the class can be built
    without storage or Ray in tests; :meth:`from_location` loads from a models URI.
    Masks are made once per scorer (fixed seed), so scores are deterministic.
    """

    def __init__(self, artifacts: dict[str, Artifact], device: str | torch.device = "cpu", n_masks: int | None = None):
        if not artifacts:
            raise ValueError("a Scorer needs at least one model artifact")
        self.device = torch.device(device)
        self.artifacts = artifacts
        self._masks: dict[str, torch.Tensor] = {}
        for mt, art in artifacts.items():
            art.model.to(self.device).eval()
            sc = art.config.score
            k = n_masks or sc.n_masks
            src = RandomMaskSource(k, art.config.masks, sc.mask_seed)
            self._masks[mt] = src.masks(art.config.features.n_mels, art.config.features.tile_frames, self.device)

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
        arts = {mt: load_artifact(loc, mt, expect_config=expect_config, device=device) for mt in machine_types}
        return cls(arts, device=device, n_masks=n_masks)

    def masks(self, machine_type: str) -> torch.Tensor:
        """The K scoring masks ``[K, n_mels, tile_frames]`` (bool) of a machine type."""
        return self._masks[machine_type]

    def has_model(self, machine_type: str) -> bool:
        return machine_type in self.artifacts

    def tiles(self, machine_type: str, wav: np.ndarray) -> torch.Tensor:
        """Normalised scoring tiles ``[N, n_mels, tile_frames]`` of one decoded clip."""
        art = self.artifacts[machine_type]
        raw = clip_tiles(wav, art.config.features, train=False, device=self.device)
        return art.normalizer(raw)

    def score_tiles(self, machine_type: str, clips: Sequence[torch.Tensor]) -> list[ClipScore]:
        """Score several clips' tiles of one machine type in shared forward batches."""
        art = self.artifacts[machine_type]
        scores = score_clips(
            art.model,
            clips,
            self._masks[machine_type],
            forward_batch=art.config.score.forward_batch,
            fill=art.config.masks.fill,
        )
        return [
            ClipScore(float(s), int(t.shape[0]), int(s > art.threshold), art.threshold, art.model_id)
            for s, t in zip(scores, clips, strict=True)
        ]

    def score_wav(self, machine_type: str, wav: np.ndarray) -> ClipScore:
        return self.score_tiles(machine_type, [self.tiles(machine_type, wav)])[0]

    def score_bytes(self, machine_type: str, data: bytes) -> ClipScore:
        cfg = self.artifacts[machine_type].config.features
        return self.score_wav(machine_type, decode(data, cfg.sample_rate, cfg.min_seconds))
