"""Settings of the ``knn`` kind (config stage ``knn``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KnnConfig:
    """Nearest-neighbour reference on log-mel statistics (model kind ``knn``)."""

    knn_k: int = 5
    knn_level: str = "clip"  # "clip": per-band mean and std; "frame": also short events
    # "domain": one bank per training domain, a clip's distance is the smallest over them
    # (the 10 target clips of a DCASE type are neighbours of their own); "one": one bank.
    # Per-domain banks lifted the clip-statistics reference from 0.783 to 0.816 official
    # (7 synthetic types x 3 seeds, README). Clip level only; "frame" keeps one bank.
    knn_banks: str = "domain"
