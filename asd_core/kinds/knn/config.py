"""Settings of the ``knn`` kind (config stage ``knn``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KnnConfig:
    """Nearest-neighbour reference on log-mel statistics (model kind ``knn``)."""

    knn_k: int = 5
    knn_level: str = "clip"  # "clip": per-band mean and std; "frame": also short events
