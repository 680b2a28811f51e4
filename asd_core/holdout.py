"""Held-out normals for archives without a split (a MIMII-style tree
``fan/id_00/normal/*.wav`` + ``abnormal/``, a plant's folders, a manifest without a
``split`` column): training leaves a seeded share of the normal clips out, and the
artifact records the rule, so scoring evaluates exactly those clips and the anomalies
and never a clip the model was trained on.

The rule is a hash of the clip's path below DATA_URI (and the seed), not a list: it
costs nothing to store and gives the same answer for the same tree on any night.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

DEFAULT_SHARE = 0.2  # of the normal clips; the rest train the model


@dataclass(frozen=True)
class HoldOut:
    share: float = DEFAULT_SHARE
    seed: int = 0

    def held_out(self, relpath: str) -> bool:
        """Whether the normal clip at ``relpath`` (below DATA_URI) is kept for evaluation."""
        h = zlib.crc32(f"{self.seed}:{relpath.strip('/')}".encode()) % 10_000
        return h < round(self.share * 10_000)

    def to_dict(self) -> dict[str, Any]:
        return {"share": self.share, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> HoldOut | None:
        return cls(float(d["share"]), int(d["seed"])) if d else None


def relative(path: str, root: str) -> str:
    """``path`` below ``root`` (both paths on one filesystem, no scheme)."""
    root = root.rstrip("/")
    return path[len(root) + 1 :] if path.startswith(root + "/") else path
