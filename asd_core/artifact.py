"""Model artifacts: one directory per machine type, everything scoring needs.

::

    <models>/<machine_type>/
        weights.pt        state_dict (loaded with weights_only=True)
        artifact.json     model kind, model id, resolved config, normalisation
                          stats, decision threshold, training summary

``weights.pt`` holds every tensor of the model's state (a kind's weights, neighbour
bank, covariances). ``model_id`` is ``<kind>-<12 hex>`` of a sha256 over everything
that decides a score: the weights (their sha256, recorded as ``weights_sha256``), the
resolved config, the kind's extras (the U-Net's normaliser) and the threshold
(:func:`compute_model_id`). It is computed at save time and recomputed from the files
whenever an artifact is read: an edited ``artifact.json`` (another ``n_fft``,
threshold, ...) simply gets a different id, so its scores are never mixed with the old
ones and incremental runs score again. Weights that do not match ``weights_sha256``
(replaced or corrupted) are refused (:class:`ArtifactError`).
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
from .kinds import Fitted, get_kind
from .storage import Location, open_location, read_bytes, write_bytes

WEIGHTS = "weights.pt"
META = "artifact.json"
# 3: weights.pt holds the kind's whole state ("model.*" weights, banks); 1-2 held a
# bare U-Net state dict (2 added weights_sha256).
FORMAT = 3


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


def compute_model_id(meta: dict[str, Any], blob: bytes | None = None) -> str:
    """The model id of an artifact from its metadata (and weights ``blob``, else the
    recorded ``weights_sha256``): kind + sha256 over weights, config, extras
    (normaliser) and threshold."""
    weights = hashlib.sha256(blob).hexdigest() if blob is not None else meta["weights_sha256"]
    ident = {"config": meta["config"], "extras": extras_of(meta)}
    ident.update(weights_sha256=weights, threshold=float(meta["threshold"]))
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"{meta['config'].get('model', {}).get('kind', 'unet')}-{digest[:12]}"


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
    meta = {
        "format": FORMAT,
        "machine_type": machine_type,
        "model_kind": config.model.kind,
        "model_id": "",
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "asd_core_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config.to_dict(),
        "extras": fitted.extras,
        "threshold": float(fitted.threshold),
        "summary": summary or {},
    }
    if "normalizer" in fitted.extras:  # format 1 readers found it here
        meta["normalizer"] = fitted.extras["normalizer"]
    meta["model_id"] = model_id = compute_model_id(meta)
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
    """``<loc>/<machine_type>/artifact.json`` (config, extras, threshold) with its
    ``model_id`` recomputed (:func:`compute_model_id`); reads the weights only for
    artifacts saved before ``weights_sha256`` was recorded."""
    d = loc.join(machine_type).path
    meta = json.loads(read_bytes(loc, f"{d}/{META}"))
    blob = None if "weights_sha256" in meta else read_bytes(loc, f"{d}/{WEIGHTS}")
    meta["model_id"] = compute_model_id(meta, blob)
    return meta


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
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"unreadable model artifact at {d.uri}: {e}") from e
    sha = hashlib.sha256(blob).hexdigest()
    if meta.get("weights_sha256", sha) != sha:
        raise ArtifactError(f"{d.uri}/{WEIGHTS} does not match the weights_sha256 of its {META} (replaced or corrupted)")
    try:
        return _build(meta, blob, machine_type, d.uri, expect_config)
    except ArtifactError:
        raise
    except Exception as e:  # bad config, weights of another shape, not a torch file
        raise ArtifactError(f"unusable model artifact at {d.uri}: {type(e).__name__}: {e}") from e


def _build(meta: dict, blob: bytes, machine_type: str, uri: str, expect_config: ASDConfig | None) -> Artifact:
    config = config_of(meta)
    if expect_config is not None:
        for stage in ("features", "masks"):
            have, want = getattr(config, stage), getattr(expect_config, stage)
            if have != want:
                raise ArtifactError(
                    f"artifact {uri} was trained with {stage} {have}, caller expects {want}; retrain or "
                    "use the matching config"
                )
    state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ArtifactError(f"{uri}/{WEIGHTS} is not a state dict")
    if meta.get("format", 1) < 3:  # a bare U-Net state dict
        state = {f"model.{k}": v for k, v in state.items()}
    art = Artifact(
        machine_type=machine_type,
        config=config,
        state=state,
        extras=extras_of(meta),
        threshold=float(meta["threshold"]),
        model_id=meta["model_id"],
        summary=meta.get("summary", {}),
    )
    get_kind(art.kind).load(art.state, art.extras, art.config, "cpu", 1)  # refuses weights of another shape
    return art


def config_of(meta: dict[str, Any]) -> ASDConfig:
    """The resolved config an artifact's metadata records."""
    return ASDConfig.from_dict(meta["config"])


def extras_of(meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON state a kind's featuriser needs (format 1 kept only the normaliser)."""
    extras = dict(meta.get("extras") or {})
    if "normalizer" in meta and "normalizer" not in extras:
        extras["normalizer"] = meta["normalizer"]
    return extras
