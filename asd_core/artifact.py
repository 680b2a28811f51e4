"""Model artifacts: every trained version of a machine type's model, and a pointer to
the one scoring uses.

::

    <models>/<machine_type>/
        <model_id>/           one folder per trained version (a training that gives
                              an identical model, the same id, reuses its folder)
            weights.pt        state_dict (loaded with weights_only=True)
            artifact.json     model kind, model id, resolved config, normalisation
                              stats, decision threshold, training summary
        current.json          {"model_id": ...}: the version scoring uses; written
                              last, so a crash mid-save leaves the old one current

Artifacts of the first layout (``weights.pt`` and ``artifact.json`` directly under
``<machine_type>/``) still load: without ``current.json`` they are the type's model,
and they are listed as a version once newer ones are saved beside them.

``weights.pt`` holds every tensor of the model's state (a kind's weights, neighbour
bank, covariances). ``model_id`` is ``<kind>-<12 hex>`` of a sha256 over everything
that decides a score: the weights (their sha256, recorded as ``weights_sha256``), the
resolved config, the kind's extras (the U-Net's normaliser) and the threshold
(:func:`compute_model_id`). It is computed at save time (and names the version's
folder) and recomputed from the files whenever an artifact is read: an edited
``artifact.json`` (another ``n_fft``, threshold, ...) simply gets a different id, so
its scores are never mixed with the old ones and incremental runs score again. Weights
that do not match ``weights_sha256`` (replaced or corrupted) are refused
(:class:`ArtifactError`).
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from . import __version__
from .config import ASDConfig
from .kinds import Fitted, get_kind
from .paths import check_segment, is_segment
from .storage import Location, open_location, read_bytes, write_bytes

WEIGHTS = "weights.pt"
META = "artifact.json"
CURRENT = "current.json"
# 3: weights.pt holds the kind's whole state ("model.*" weights, banks); 1-2 held a
# bare U-Net state dict (2 added weights_sha256).
FORMAT = 3


class ArtifactError(RuntimeError):
    """A missing, unreadable or incompatible model artifact, or a machine type or model
    id that is not one folder name."""


def _name(value: str, what: str) -> str:
    """``value`` if it is one folder name (:func:`asd_core.paths.check_segment`), else
    :class:`ArtifactError`: a machine type or model id never leads out of MODELS_URI."""
    try:
        return check_segment(value, what)
    except ValueError as e:
        raise ArtifactError(str(e)) from None


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


def _now() -> str:
    """UTC time as ``2026-11-26T15:05:17.123Z``."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


TRAIN_SCORE_LEVELS = 101  # quantiles kept of the training clips' scores: 0, 1, ..., 100 %


def score_quantiles(scores: Any) -> list[float]:
    """The 0 %, 1 %, ..., 100 % quantiles of the training clips' scores (finite ones;
    ``[]`` when none): what a report draws a night's scores against, in 101 numbers.
    Kept in an artifact's ``summary`` (``train_score_quantiles``), outside its model id."""
    import numpy as np

    s = np.asarray(scores, dtype=float).ravel()
    s = s[np.isfinite(s)]
    return np.quantile(s, np.linspace(0.0, 1.0, TRAIN_SCORE_LEVELS)).tolist() if s.size else []


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
    """Write a new version ``<loc>/<machine_type>/<model_id>/`` and make it current;
    returns the model id.

    Weights are written first, the metadata next (a version folder with an
    ``artifact.json`` is complete) and the ``current.json`` pointer last, so a crash
    anywhere before leaves the previous version current. Earlier versions are kept
    (:func:`list_versions`, :func:`set_current`).
    """
    _name(machine_type, "machine type")
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
        "created_at": _now(),  # ms: versions saved within a second still sort
        "config": config.to_dict(),
        "extras": fitted.extras,
        "threshold": float(fitted.threshold),
        "summary": summary or {},
    }
    if "normalizer" in fitted.extras:  # format 1 readers found it here
        meta["normalizer"] = fitted.extras["normalizer"]
    meta["model_id"] = model_id = _name(compute_model_id(meta), "model id")
    d = loc.join(machine_type, model_id)
    write_bytes(loc, f"{d.path}/{WEIGHTS}", blob)
    write_bytes(loc, f"{d.path}/{META}", json.dumps(meta, indent=2).encode())
    _write_pointer(loc, machine_type, model_id)
    return model_id


def list_artifacts(loc: Location | str) -> list[str]:
    """Machine types that have a current model under ``loc`` (a ``current.json``
    pointer, or an artifact of the first layout)."""
    if isinstance(loc, str):
        loc = open_location(loc)
    if not loc.fs.exists(loc.path):
        return []
    out = []
    for entry in loc.fs.ls(loc.path, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        base = entry.rstrip("/")
        if loc.fs.exists(f"{base}/{CURRENT}") or loc.fs.exists(f"{base}/{META}"):
            out.append(name)
    return sorted(out)


def read_meta(loc: Location | str, machine_type: str, model_id: str | None = None) -> dict[str, Any]:
    """The current (or the ``model_id``) version's ``artifact.json`` (config, extras,
    threshold) with its ``model_id`` recomputed (:func:`compute_model_id`); reads the
    weights only for artifacts saved before ``weights_sha256`` was recorded."""
    if isinstance(loc, str):
        loc = open_location(loc)
    return _read_meta_at(loc, artifact_dir(loc, machine_type, model_id))


def _read_meta_at(loc: Location, d: Location) -> dict[str, Any]:
    meta = json.loads(read_bytes(loc, f"{d.path}/{META}"))
    blob = None if "weights_sha256" in meta else read_bytes(loc, f"{d.path}/{WEIGHTS}")
    meta["model_id"] = compute_model_id(meta, blob)
    return meta


def load_artifact(
    loc: Location | str,
    machine_type: str,
    *,
    expect_config: ASDConfig | None = None,
    model_id: str | None = None,
) -> Artifact:
    """Load the current version of ``<loc>/<machine_type>/`` (or the ``model_id``
    version): weights as tensors; :class:`asd_core.detector.Scorer` turns them into a
    ready model of the artifact's kind.

    With ``expect_config``, refuses an artifact whose feature or mask config
    differs from the caller's: its scores would not mean what the caller thinks.
    """
    if isinstance(loc, str):
        loc = open_location(loc)
    d = artifact_dir(loc, machine_type, model_id)
    try:
        meta = _read_meta_at(loc, d)
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
    get_kind(art.kind).load(art.state, art.extras, art.config, "cpu")  # refuses weights of another shape
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


# ---------------------------------------------------------------- versions
def current_id(loc: Location, machine_type: str) -> str | None:
    """The model id ``<loc>/<machine_type>/current.json`` names; None without a pointer
    (no model, or an artifact of the first layout)."""
    path = f"{loc.join(_name(machine_type, 'machine type')).path}/{CURRENT}"
    try:
        raw = read_bytes(loc, path)
    except FileNotFoundError:
        return None
    try:
        model_id = json.loads(raw)["model_id"]
        check_segment(model_id, "model_id")
    except (ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"unreadable pointer {loc.uri_of(path)}: {e}") from e
    return model_id


def artifact_dir(loc: Location, machine_type: str, model_id: str | None = None) -> Location:
    """The folder holding the ``artifact.json`` of ``machine_type``'s current version
    (or of version ``model_id``): ``<type>/<model_id>/``, or ``<type>/`` itself for an
    artifact of the first layout. Without a pointer and without a first-layout
    artifact it is ``<type>/`` (reading it then fails naming that folder)."""
    tdir = loc.join(_name(machine_type, "machine type"))
    pointer = model_id is None
    if pointer:
        model_id = current_id(loc, machine_type)
        if model_id is None:
            return tdir
    _name(model_id, "model id")
    vdir = tdir.join(model_id)
    if loc.fs.exists(f"{vdir.path}/{META}"):
        return vdir
    if loc.fs.exists(f"{tdir.path}/{META}"):  # first layout: its id is computed from its files
        try:
            if _read_meta_at(loc, tdir)["model_id"] == model_id:
                return tdir
        except Exception:  # noqa: BLE001 - an unreadable first-layout artifact is not this version
            pass
    where = f"{tdir.uri}/{CURRENT} names {model_id!r}, which" if pointer else f"version {model_id!r}"
    raise ArtifactError(f"{where} has no {META} under {tdir.uri} (see 'asd models {loc.uri}')")


def artifact_uri(loc: Location, machine_type: str) -> str:
    """The URI of the current version's folder for messages; the type's folder when the
    pointer itself is unusable."""
    try:
        return artifact_dir(loc, machine_type).uri
    except Exception:  # noqa: BLE001 - a message must not fail
        return loc.join(machine_type).uri


def _write_pointer(loc: Location, machine_type: str, model_id: str) -> None:
    path = f"{loc.join(_name(machine_type, 'machine type')).path}/{CURRENT}"
    _name(model_id, "model id")
    data = json.dumps({"model_id": model_id, "updated_at": _now()})
    if loc.protocol == "file":  # a rename is atomic: a reader sees the old or the new pointer
        tmp = f"{path}.{os.getpid()}.tmp"
        write_bytes(loc, tmp, data.encode())
        os.replace(tmp, path)
    else:  # one PUT: the object is replaced whole
        write_bytes(loc, path, data.encode())


def list_versions(loc: Location | str, machine_type: str) -> list[dict[str, Any]]:
    """Every saved version of ``machine_type``'s model, oldest first: ``model_id``,
    ``kind``, ``created_at``, ``current``, ``uri``, ``layout`` (``versioned`` or
    ``first``), the training metrics the artifact holds (``threshold``, ``epochs``,
    ``final_loss``, ``n_clips``, ``train_score_mean``, ``run_id``) and, when its
    ``artifact.json`` was edited after saving, ``scores_model_id`` (the id its score
    rows carry). A version that cannot be read has ``error`` instead of metrics."""
    if isinstance(loc, str):
        loc = open_location(loc)
    tdir = loc.join(_name(machine_type, "machine type"))
    if not loc.fs.isdir(tdir.path):
        return []
    try:
        cur = current_id(loc, machine_type)
    except ArtifactError:
        cur = None
    found: list[tuple[str, Location, str]] = []
    for entry in loc.fs.ls(tdir.path, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if is_segment(name) and loc.fs.exists(f"{tdir.path}/{name}/{META}"):
            found.append((name, tdir.join(name), "versioned"))
    if loc.fs.exists(f"{tdir.path}/{META}"):
        found.append(("", tdir, "first"))
    rows = []
    for name, d, layout in found:
        row: dict[str, Any] = {"machine_type": machine_type, "model_id": name, "uri": d.uri, "layout": layout}
        try:
            meta = _read_meta_at(loc, d)
        except Exception as e:  # noqa: BLE001 - listed with its error
            row.update(kind="", created_at="", error=f"{type(e).__name__}: {e}")
        else:
            summary = meta.get("summary") or {}
            losses = summary.get("losses") or []
            row["model_id"] = name or meta["model_id"]
            if meta["model_id"] != row["model_id"]:
                row["scores_model_id"] = meta["model_id"]
            row.update(
                kind=meta.get("model_kind") or config_of(meta).model.kind,
                created_at=meta.get("created_at", ""),
                threshold=float(meta["threshold"]),
                epochs=summary.get("epochs"),
                final_loss=float(losses[-1]) if losses else None,
                n_clips=summary.get("n_clips"),
                train_score_mean=summary.get("train_score_mean"),
                run_id=summary.get("run_id"),
            )
        row["current"] = row["model_id"] == cur if cur is not None else layout == "first"
        rows.append(row)
    return sorted(rows, key=lambda r: (r["created_at"], r["model_id"]))


def set_current(loc: Location | str, machine_type: str, model_id: str) -> str | None:
    """Make version ``model_id`` the one scoring uses (roll back or forward); returns
    the previously current id (None for none or a first-layout artifact). The version
    must exist and its metadata must read."""
    if isinstance(loc, str):
        loc = open_location(loc)
    d = artifact_dir(loc, machine_type, model_id)  # raises when there is no such version
    try:
        _read_meta_at(loc, d)
    except Exception as e:
        raise ArtifactError(f"version {model_id!r} at {d.uri} cannot be read: {type(e).__name__}: {e}") from e
    if not loc.fs.exists(d.join(WEIGHTS).path):
        raise ArtifactError(f"version {model_id!r} at {d.uri} has no {WEIGHTS}; it cannot score")
    try:
        previous = current_id(loc, machine_type)
    except ArtifactError:
        previous = None
    _write_pointer(loc, machine_type, model_id)
    return previous


def all_versions(loc: Location | str, machine_types: list[str] | None = None) -> list[dict[str, Any]]:
    """:func:`list_versions` of every machine type under ``loc`` (folders not starting
    with ``_``: ``_runs`` holds checkpoints), or of ``machine_types``."""
    if isinstance(loc, str):
        loc = open_location(loc)
    if machine_types is None:
        if not loc.fs.isdir(loc.path):
            return []
        entries = [e.rstrip("/") for e in loc.fs.ls(loc.path, detail=False)]
        machine_types = sorted(e.rsplit("/", 1)[-1] for e in entries if loc.fs.isdir(e))
        machine_types = [m for m in machine_types if not m.startswith("_")]
    return [r for mt in machine_types for r in list_versions(loc, mt)]


def format_versions(rows: list[dict[str, Any]]) -> str:
    """A text table of :func:`list_versions` rows; ``*`` marks the current version."""

    def num(x: Any, fmt: str) -> str:
        return "" if x is None else format(x, fmt)

    head = ["type", "", "model id", "kind", "created", "epochs", "final loss", "threshold", "clips", "train run"]
    body = [
        [
            r["machine_type"], "*" if r.get("current") else "", r["model_id"] + (" (first layout)" if r["layout"] == "first" else ""),
            r.get("kind", ""), r.get("created_at", ""), num(r.get("epochs") or None, "d") or "-", num(r.get("final_loss"), ".5f"),
            num(r.get("threshold"), ".4g"), num(r.get("n_clips"), "d"), r.get("run_id") or r.get("error", ""),
        ]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    lines = [" | ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip() for row in [head, *body]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines) + "\n* = current: the version 'asd score' uses"
