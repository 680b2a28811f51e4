"""Training data of one machine type, prepared once before any epoch runs.

Reads the type's training clips (any fsspec location, concurrently in chunks),
decodes them one at a time into the model kind's feature rows (for the U-Net:
log-mel tiles, then the per-band normaliser and the normalised training tiles as one
compact float16 array, ready to be shared with every training worker). Clips that
cannot be read or decoded are skipped and listed; only a type with no usable clip at
all is an error.

Memory (U-Net): a 10-s clip gives 18 training tiles (hop 32 frames) of 64x64; 1,000
clips are 18,000 tiles = 147 MB as float16, plus 9 scoring tiles per clip (147 MB as
float32) for the threshold and the neighbour bank of the ``knn_*`` scoring rules.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .audio import AudioDecodeError, clip_level_db, decode, level_reference
from .catalog import ListedClip
from .config import ASDConfig
from .kinds import ClipRows, Prepared, get_kind
from .storage import Location, read_many

log = logging.getLogger(__name__)


class NoTrainingData(ValueError):
    """A machine type without a single usable training clip."""


@dataclass
class PreparedType:
    """One machine type's training inputs for its model kind.

    ``prepared.train_data``: what the epochs iterate over (the U-Net's normalised
    float16 tiles ``[N, n_mels, tile_frames]``, capped by ``train.max_train_tiles``;
    the autoencoder's frame vectors; the knn bank); ``prepared.score_rows``: per
    usable clip its scoring rows (threshold, banks, covariances); ``skipped``:
    ``(path, reason)`` of every clip left out.
    """

    machine_type: str
    prepared: Prepared
    n_clips: int  # usable clips
    skipped: list[tuple[str, str]] = field(default_factory=list)
    level_db: dict[str, float] = field(default_factory=dict)  # audio.level_reference of the usable clips

    @property
    def train_rows(self) -> np.ndarray:
        """What the epochs iterate over (the U-Net's tiles, the autoencoder's frame vectors)."""
        return self.prepared.train_data


def select_training_clips(
    listed: Sequence[ListedClip], *, dcase_layout: bool = True
) -> tuple[list[str], list[tuple[str, str]], dict[str, str | None]]:
    """Paths to train on, ``(path, reason)`` of the files left out, and each kept
    path's domain (None when unknown).

    In the DCASE layout everything directly in a ``train`` folder is normal training
    audio, whatever its name (plants name files their own way; the folder says what
    they are); files in a sub-folder are left out. Everywhere a clip labelled
    ``anomaly`` is left out.
    """
    keep: list[str] = []
    skipped: list[tuple[str, str]] = []
    domains: dict[str, str | None] = {}
    for c in listed:
        if not c.ok and not (dcase_layout and c.reason == "bad_name"):
            skipped.append((c.path, c.error))
        elif dcase_layout and posixpath.basename(posixpath.dirname(c.path)) != "train":
            skipped.append((c.path, "in a sub-folder of the train folder"))
        elif c.label == "anomaly":
            skipped.append((c.path, "labelled anomaly in the training data"))
        else:
            keep.append(c.path)
            domains[c.path] = c.domain
    return keep, skipped, domains


def prepare_type(
    loc: Location,
    machine_type: str,
    paths: Sequence[str],
    cfg: ASDConfig,
    *,
    skipped: Sequence[tuple[str, str]] = (),
    domains: dict[str, str | None] | None = None,
) -> PreparedType:
    """Read and decode ``paths`` (a type's training clips) and turn them into the
    training data of ``cfg.model.kind`` (:class:`PreparedType`).

    ``domains`` maps a path to its domain (``source``/``target``; from the listing);
    without it nothing is known about domains.
    Raises :class:`NoTrainingData` when no clip gives a single feature row.
    """
    fc = cfg.features
    kind = get_kind(cfg.model.kind)
    skip = list(skipped)
    rows: list[ClipRows] = []
    clip_domains: list[str | None] = []
    levels: list[float] = []
    for path, data in read_many(loc, paths):
        if isinstance(data, BaseException):
            skip.append((path, f"unreadable: {type(data).__name__}: {data}"))
            continue
        try:
            wav = decode(data, fc.sample_rate, fc.min_seconds, fc.max_seconds)
        except AudioDecodeError as e:
            skip.append((path, str(e)))
            continue
        r = kind.clip_rows(wav, cfg)
        if r.train.shape[0] == 0:
            skip.append((path, "too_short: no full training tile"))
            continue
        rows.append(r)
        clip_domains.append((domains or {}).get(path))
        levels.append(clip_level_db(wav))
    for path, reason in skip:
        log.warning("%s: skipping %s (%s)", machine_type, path, reason)
    if not rows:
        raise NoTrainingData(
            f"{machine_type}: no usable training clip ({len(paths)} listed, {len(skip)} skipped)"
        )
    return PreparedType(machine_type, kind.assemble(rows, clip_domains, cfg), len(rows), skip, level_reference(levels))
