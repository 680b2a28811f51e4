"""Training data of one machine type, prepared once before any epoch runs.

Reads the type's training clips (any fsspec location, concurrently in chunks),
decodes them, cuts log-mel tiles, fits the per-band normaliser and returns the
normalised training tiles as one compact float16 array, ready to be shared with
every training worker. Clips that cannot be read or decoded are skipped and
listed; only a type with no usable clip at all is an error.

Memory: a 10-s clip gives 18 training tiles (hop 32 frames) of 64x64; 1,000 clips
are 18,000 tiles = 147 MB as float16 (fp32 only transiently, one clip at a time
after the normaliser is fitted). Scoring tiles are kept only for the clips the
threshold will be fitted on (``score.threshold_max_clips``).
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .audio import AudioDecodeError, decode
from .config import ASDConfig
from .detector import ListedClip, cap_tiles, clip_domain, domain_repeats, threshold_clip_indices
from .features import Normalizer, clip_tiles
from .storage import Location, read_many

log = logging.getLogger(__name__)


class NoTrainingData(ValueError):
    """A machine type without a single usable training clip."""


@dataclass
class PreparedType:
    """One machine type's training inputs.

    ``tiles``: normalised training tiles ``[N, n_mels, tile_frames]`` float16 (capped
    by ``train.max_train_tiles``); ``score_tiles``: raw (dB) scoring tiles of the
    clips used for the threshold, one ``[N_c, n_mels, tile_frames]`` float32 tensor
    per clip; ``skipped``: ``(path, reason)`` of every clip left out.
    """

    machine_type: str
    tiles: np.ndarray
    score_tiles: list[torch.Tensor]
    normalizer: Normalizer
    n_clips: int  # usable clips
    n_tiles_total: int  # training tiles before the cap
    skipped: list[tuple[str, str]] = field(default_factory=list)


def select_training_clips(listed: Sequence[ListedClip]) -> tuple[list[str], list[tuple[str, str]]]:
    """Paths to train on and ``(path, reason)`` of the files left out.

    Everything in a ``train`` folder is normal training audio; a file whose name says
    ``anomaly`` is left out. Files with non-DCASE names are kept (plants name files
    their own way) — the folder, not the name, says what they are.
    """
    keep: list[str] = []
    skipped: list[tuple[str, str]] = []
    for c in listed:
        if c.clip is None and c.reason != "bad_name":
            skipped.append((c.path, c.error))
        elif posixpath.basename(posixpath.dirname(c.path)) != "train":
            skipped.append((c.path, "in a sub-folder of the train folder"))
        elif c.clip is not None and c.clip.label == "anomaly":
            skipped.append((c.path, "labelled anomaly in a train folder"))
        else:
            keep.append(c.path)
    return keep, skipped


def fit_normalizer(tiles: Sequence[torch.Tensor], min_std: float = 1e-3) -> Normalizer:
    """:meth:`Normalizer.fit` over a list of ``[N_i, n_mels, frames]`` tiles without
    concatenating them (two passes in float64; same mean and unbiased std)."""
    tiles = [t for t in tiles if t.shape[0] > 0]
    if not tiles:
        raise ValueError("need at least one tile to fit the normaliser")
    n_mels = tiles[0].shape[1]
    count = sum(t.shape[0] * t.shape[2] for t in tiles)
    total = torch.zeros(n_mels, dtype=torch.float64)
    for t in tiles:
        total += t.to(torch.float64).sum(dim=(0, 2))
    mean = total / count
    sq = torch.zeros(n_mels, dtype=torch.float64)
    for t in tiles:
        sq += ((t.to(torch.float64) - mean[None, :, None]) ** 2).sum(dim=(0, 2))
    std = (sq / max(count - 1, 1)).sqrt().clamp_min(min_std)
    return Normalizer(mean.numpy().astype(np.float32), std.numpy().astype(np.float32))


def prepare_type(
    loc: Location,
    machine_type: str,
    paths: Sequence[str],
    cfg: ASDConfig,
    *,
    skipped: Sequence[tuple[str, str]] = (),
) -> PreparedType:
    """Read, decode and tile ``paths`` (a type's training clips) into a :class:`PreparedType`.

    Raises :class:`NoTrainingData` when no clip gives a single tile.
    """
    fc = cfg.features
    skip = list(skipped)
    raw: list[torch.Tensor] = []  # per clip [N_c, n_mels, tile_frames] float32 dB
    score: list[torch.Tensor] = []
    domains: list[str | None] = []
    for path, data in read_many(loc, paths):
        if isinstance(data, BaseException):
            skip.append((path, f"unreadable: {type(data).__name__}: {data}"))
            continue
        try:
            wav = decode(data, fc.sample_rate, fc.min_seconds)
        except AudioDecodeError as e:
            skip.append((path, str(e)))
            continue
        t = clip_tiles(wav, fc, train=True)
        if t.shape[0] == 0:
            skip.append((path, "too_short: no full training tile"))
            continue
        raw.append(t)
        score.append(clip_tiles(wav, fc, train=False))
        domains.append(clip_domain(path))
    for path, reason in skip:
        log.warning("%s: skipping %s (%s)", machine_type, path, reason)
    if not raw:
        raise NoTrainingData(
            f"{machine_type}: no usable training clip ({len(paths)} listed, {len(skip)} skipped)"
        )
    # target-domain clips repeated to make up train.target_share of the tiles
    repeats = domain_repeats(domains, cfg.train.target_share)
    normalizer = fit_normalizer([t for t, r in zip(raw, repeats, strict=True) for _ in range(r)])
    n_total = sum(t.shape[0] * r for t, r in zip(raw, repeats, strict=True))
    out = np.empty((n_total, fc.n_mels, fc.tile_frames), dtype=np.float16)
    pos = 0
    for i, (t, r) in enumerate(zip(raw, repeats, strict=True)):
        z = normalizer(t).numpy().astype(np.float16)
        for _ in range(r):
            out[pos : pos + t.shape[0]] = z
            pos += t.shape[0]
        raw[i] = t.new_zeros(0)  # release as we go
    tiles = cap_tiles(torch.from_numpy(out), cfg.train.max_train_tiles, cfg.train.seed).numpy()
    score = [score[i] for i in threshold_clip_indices(len(score), cfg)]
    return PreparedType(machine_type, np.ascontiguousarray(tiles), score, normalizer, len(raw), n_total, skip)
