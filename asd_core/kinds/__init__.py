"""Model kinds: the U-Net (the technical report's method), the DCASE 2023 autoencoder
baseline and a nearest-neighbour reference, behind one protocol (:mod:`.base`).

Each kind is one folder holding its network or bank, its training and scoring pieces,
its settings and its adapter; the adapter's ``@register_kind`` is its registration and
the import below makes it known. Artifacts, the scorer, the Ray jobs and the reports
go through :func:`get_kind` and never test a kind by name.
"""

from __future__ import annotations

from ..stages import DEFAULT_KIND
from .base import (
    ClipRows,
    Detector,
    Fitted,
    ModelKind,
    Prepared,
    get_kind,
    kind_names,
    kind_stages,
    register_kind,
    run_epochs,
)

# One line per kind: importing the folder registers it.
from . import unet, baseline_ae, knn  # noqa: E402,F401,I001  isort: skip

KINDS = kind_names()

__all__ = [
    "DEFAULT_KIND", "KINDS", "ClipRows", "Detector", "Fitted", "ModelKind", "Prepared", "get_kind", "kind_names",
    "kind_stages", "register_kind",
    "run_epochs",
]
