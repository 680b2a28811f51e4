"""Model artifacts: one directory per machine type, everything scoring needs.

::

    <models>/<machine_type>/
        weights.pt        state_dict (loaded with weights_only=True)
        artifact.json     model kind, model id, resolved config, normalisation
                          stats, decision threshold, training summary

``model_id`` is ``<kind>-<12 hex>`` of a sha256 over everything that decides a score:
the weights (their sha256, recorded as ``weights_sha256``), the resolved config, the
normaliser and the threshold (:func:`compute_model_id`). It is computed at save time
and recomputed from the files whenever an artifact is read: an edited ``artifact.json``
(another ``n_fft``, threshold, ...) simply gets a different id, so its scores are never
mixed with the old ones and incremental runs score again. Weights that do not match
``weights_sha256`` (replaced or corrupted) are refused (:class:`ArtifactError`).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import __version__
from .config import ASDConfig
from .features import Normalizer
from .storage import Location, open_location, read_bytes, write_bytes
from .unet import build_model

WEIGHTS = "weights.pt"
META = "artifact.json"


class ArtifactError(RuntimeError):
    """A missing, unreadable or incompatible model artifact."""


@dataclass
class Artifact:
    machine_type: str
    config: ASDConfig
    model: nn.Module
    normalizer: Normalizer
    threshold: float
    model_id: str = ""
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.config.model.kind


def weights_bytes(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, buf)
    return buf.getvalue()


def compute_model_id(meta: dict[str, Any], blob: bytes | None = None) -> str:
    """The model id of an artifact from its metadata (and weights ``blob``, else the
    recorded ``weights_sha256``): kind + sha256 over weights, config, normaliser and
    threshold."""
    weights = hashlib.sha256(blob).hexdigest() if blob is not None else meta["weights_sha256"]
    ident = {k: meta[k] for k in ("config", "normalizer")}
    ident.update(weights_sha256=weights, threshold=float(meta["threshold"]))
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"{meta['config']['model']['kind']}-{digest[:12]}"


def save_artifact(
    loc: Location | str,
    machine_type: str,
    model: nn.Module,
    config: ASDConfig,
    normalizer: Normalizer,
    threshold: float,
    summary: dict[str, Any] | None = None,
) -> str:
    """Write ``<loc>/<machine_type>/``; returns the model id.

    Weights are written first and the metadata last, so a directory with an
    ``artifact.json`` is always complete.
    """
    if isinstance(loc, str):
        loc = open_location(loc)
    blob = weights_bytes(model)
    meta = {
        "format": 2,
        "machine_type": machine_type,
        "model_kind": config.model.kind,
        "model_id": "",
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "asd_core_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config.to_dict(),
        "normalizer": normalizer.to_dict(),
        "threshold": float(threshold),
        "summary": summary or {},
    }
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
    """``<loc>/<machine_type>/artifact.json`` (config, normaliser, threshold) with its
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
    device: str | torch.device = "cpu",
) -> Artifact:
    """Load ``<loc>/<machine_type>/`` as a ready model in eval mode on ``device``.

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
        return _build(meta, blob, machine_type, d.uri, expect_config, device)
    except ArtifactError:
        raise
    except Exception as e:  # bad config, weights of another shape, not a torch file
        raise ArtifactError(f"unusable model artifact at {d.uri}: {type(e).__name__}: {e}") from e


def _build(meta: dict, blob: bytes, machine_type: str, uri: str, expect_config, device) -> Artifact:
    config = ASDConfig.from_dict(meta["config"])
    if expect_config is not None:
        for stage in ("features", "masks"):
            have, want = getattr(config, stage), getattr(expect_config, stage)
            if have != want:
                raise ArtifactError(
                    f"artifact {uri} was trained with {stage} {have}, caller expects {want}; retrain or "
                    "use the matching config"
                )
    model = build_model(config.model)
    state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.to(device).eval()
    return Artifact(
        machine_type=machine_type,
        config=config,
        model=model,
        normalizer=Normalizer.from_dict(meta["normalizer"]),
        threshold=float(meta["threshold"]),
        model_id=meta["model_id"],
        summary=meta.get("summary", {}),
    )
