"""Model artifacts: one directory per machine type, everything scoring needs.

::

    <models>/<machine_type>/
        weights.pt        state_dict (loaded with weights_only=True)
        artifact.json     model kind, model id, resolved config, normalisation
                          stats, decision threshold, training summary

``weights.pt`` holds every tensor of the model's state (a kind's weights, neighbour
bank, covariances). ``model_id`` is ``<kind>-<first 12 hex of the weights' sha256>``: it names the model
kind and changes whenever the weights do, so score rows say exactly which model
produced them.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from . import __version__
from .config import ASDConfig
from .kinds import Fitted
from .storage import Location, open_location, read_bytes, write_bytes

WEIGHTS = "weights.pt"
META = "artifact.json"


class ArtifactError(RuntimeError):
    """A missing, unreadable or incompatible model artifact."""


@dataclass
class Artifact:
    """One machine type's trained model of any kind: tensors (``state``: weights,
    neighbour banks, covariances), JSON ``extras`` (e.g. the U-Net's normaliser),
    the resolved config and the decision threshold."""

    machine_type: str
    config: ASDConfig
    state: dict[str, torch.Tensor]
    extras: dict[str, Any]
    threshold: float
    model_id: str = ""
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.config.model.kind


def state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, buf)
    return buf.getvalue()


def save_artifact(
    loc: Location | str,
    machine_type: str,
    fitted: Fitted,
    config: ASDConfig,
    summary: dict[str, Any] | None = None,
) -> str:
    """Write ``<loc>/<machine_type>/``; returns the model id.

    Weights are written first and the metadata last, so a directory with an
    ``artifact.json`` is always complete.
    """
    if isinstance(loc, str):
        loc = open_location(loc)
    blob = state_bytes(fitted.state)
    model_id = f"{config.model.kind}-{hashlib.sha256(blob).hexdigest()[:12]}"
    meta = {
        "format": 2,
        "machine_type": machine_type,
        "model_kind": config.model.kind,
        "model_id": model_id,
        "asd_core_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config.to_dict(),
        "extras": fitted.extras,
        "threshold": float(fitted.threshold),
        "summary": summary or {},
    }
    if "normalizer" in fitted.extras:  # format 1 readers found it here
        meta["normalizer"] = fitted.extras["normalizer"]
    d = loc.join(machine_type)
    write_bytes(loc, f"{d.path}/{WEIGHTS}", blob)
    write_bytes(loc, f"{d.path}/{META}", json.dumps(meta, indent=2).encode())
    return model_id


def list_artifacts(loc: Location | str) -> list[str]:
    """Machine types that have a complete artifact under ``loc``."""
    if isinstance(loc, str):
        loc = open_location(loc)
    if not loc.fs.exists(loc.path):
        return []
    out = []
    for entry in loc.fs.ls(loc.path, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if loc.fs.exists(f"{entry.rstrip('/')}/{META}"):
            out.append(name)
    return sorted(out)


def read_meta(loc: Location, machine_type: str) -> dict[str, Any]:
    """``<loc>/<machine_type>/artifact.json`` (model id, config, normaliser, threshold)
    without the weights."""
    return json.loads(read_bytes(loc, f"{loc.join(machine_type).path}/{META}"))


def load_artifact(
    loc: Location | str,
    machine_type: str,
    *,
    expect_config: ASDConfig | None = None,
) -> Artifact:
    """Load ``<loc>/<machine_type>/`` (weights as tensors; :class:`asd_core.detector.Scorer`
    turns them into a ready model of the artifact's kind).

    With ``expect_config``, refuses an artifact whose feature or mask config
    differs from the caller's: its scores would not mean what the caller thinks.
    """
    if isinstance(loc, str):
        loc = open_location(loc)
    d = loc.join(machine_type)
    try:
        meta = read_meta(loc, machine_type)
        blob = read_bytes(loc, f"{d.path}/{WEIGHTS}")
    except FileNotFoundError as e:
        raise ArtifactError(f"no model artifact for {machine_type!r} at {d.uri}") from e
    except (OSError, ValueError) as e:
        raise ArtifactError(f"unreadable model artifact at {d.uri}: {e}") from e
    config = config_of(meta)
    if expect_config is not None:
        for stage in ("features", "masks"):
            have, want = getattr(config, stage), getattr(expect_config, stage)
            if have != want:
                raise ArtifactError(
                    f"artifact {d.uri} was trained with {stage} {have}, caller expects {want}; retrain or "
                    "use the matching config"
                )
    state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    if meta.get("format", 1) == 1:  # format 1: a bare U-Net state dict
        state = {f"model.{k}": v for k, v in state.items()}
    return Artifact(
        machine_type=machine_type,
        config=config,
        state=state,
        extras=extras_of(meta),
        threshold=float(meta["threshold"]),
        model_id=meta["model_id"],
        summary=meta.get("summary", {}),
    )


def config_of(meta: dict[str, Any]) -> ASDConfig:
    """The resolved config an artifact's metadata records."""
    return ASDConfig.from_dict(meta["config"])


def extras_of(meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON state a kind's featuriser needs (format 1 kept only the normaliser)."""
    extras = dict(meta.get("extras") or {})
    if "normalizer" in meta and "normalizer" not in extras:
        extras["normalizer"] = meta["normalizer"]
    return extras
