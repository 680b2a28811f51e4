"""The scoring pipeline's stages, without Ray: the items a run scores, the CPU stage
that fetches, decodes and featurises a batch of clips, and the callable class that
holds the models and scores batches (a Ray Data actor in :mod:`jobs.score`).

Every stage maps a batch to one output row per input row: a clip that cannot be read,
decoded, featurised or scored becomes an error row with its reason; nothing raises
for a bad clip (Ray Data could only drop whole blocks).
"""

from __future__ import annotations

import contextlib
import logging
import math
import posixpath
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from . import results
from .artifact import artifact_uri, config_of, extras_of, list_artifacts, load_artifact, read_meta
from .catalog import ListedClip
from .kinds import DEFAULT_KIND, get_kind
from .results import STATUS_ERROR, STATUS_OK
from .storage import Location, open_location, read_many

log = logging.getLogger(__name__)

DECODE_BATCH = 8  # clips per decode task batch: bounds raw bytes held per task
DEFAULT_BATCH = 16  # clips per scoring call on a GPU
# on CPUs: a clip's tiles x masks already fill the cores, and the progress bar moves
# with every scoring call
CPU_BATCH = 4

# Rows between the stages carry the score columns plus the clip's feature rows.
# Decode -> score: the clip's feature rows, and its waveform vector where the kind reads one.
INTERNAL_SCHEMA = results.SCORE_SCHEMA.append(pa.field("tiles", pa.large_binary())).append(
    pa.field("vector", pa.large_binary()))


def _fs_path(uri: str) -> str:
    return uri[len("s3://") :] if uri.startswith("s3://") else uri


_FS_CACHE: dict[tuple[str, str | None], Location] = {}


def _location(uri: str, endpoint_url: str | None) -> Location:
    """One filesystem per worker process and (URI, endpoint)."""
    key = (uri, endpoint_url)
    if key not in _FS_CACHE:
        _FS_CACHE[key] = open_location(uri, endpoint_url)
    return _FS_CACHE[key]


def model_index(
    models: Location, machine_types: list[str] | None = None, bad: dict[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """``{machine_type: artifact metadata}`` (model id, config, normaliser) without weights.

    An artifact whose metadata cannot be read or does not make a feature config and a
    matching normaliser is left out and, when ``bad`` is given, recorded there as
    ``{machine_type: message naming its path}``: its clips become ``bad_model`` rows
    while the other types are scored.
    """
    out = {}
    for mt in list_artifacts(models):
        if machine_types is not None and mt not in machine_types:
            continue
        try:
            meta = read_meta(models, mt)
            cfg = config_of(meta)
            get_kind(cfg.model.kind)
            norm = extras_of(meta).get("normalizer")
            if norm is not None and not len(norm["mean"]) == len(norm["std"]) == cfg.features.n_mels:
                raise ValueError(f"normaliser has {len(norm['mean'])} bands, config {cfg.features.n_mels} mels")
            out[mt] = meta
        except Exception as e:  # noqa: BLE001 - one bad artifact fails its own type only
            msg = f"unusable model artifact at {artifact_uri(models, mt)}: {type(e).__name__}: {e}"
            log.error("%s", msg)
            if bad is not None:
                bad[mt] = msg
    return out


def clip_items(
    listed: list[ListedClip],
    data: Location,
    models: dict[str, dict[str, Any]],
    run_id: str,
    gt: results.GroundTruth | None = None,
    bad_models: dict[str, str] | None = None,
    *,
    models_uri: str = "",
    n_masks: int | None = None,
) -> list[dict[str, Any]]:
    """One pipeline item per listed clip; clips that cannot be scored (a name the
    layout or template does not match, not audio, a bad manifest row, no model, a bad
    model) already carry their error."""
    items = []
    bad_models = bad_models or {}
    for c in listed:
        meta = models.get(c.machine_type)
        row: dict[str, Any] = {
            "path": data.uri_of(c.path),
            "file_name": posixpath.basename(c.path),
            "machine_type": c.machine_type,
            "section": c.section,
            "domain": c.domain,
            "label": c.label,
            "split": c.split,
            "attributes": c.attributes_json(),
            "size": c.size,
            "fingerprint": c.fingerprint,
            "model_id": meta["model_id"] if meta else "",
            "model_kind": meta.get("model_kind", DEFAULT_KIND) if meta else "",
            "models_uri": models_uri,
            "n_masks": n_masks,
            "run_id": run_id,
            "status": None,
        }
        if gt is not None and c.section is not None:
            key = (c.machine_type, c.section, row["file_name"])
            row["label"] = gt.labels.get(key, row["label"])
            row["domain"] = gt.domains.get(key, row["domain"])
        if not c.ok:
            row.update(status=STATUS_ERROR, error_reason=c.reason, error=c.error)
        elif c.machine_type in bad_models:
            row.update(status=STATUS_ERROR, error_reason="bad_model", error=bad_models[c.machine_type])
        elif meta is None:
            row.update(
                status=STATUS_ERROR,
                error_reason="no_model",
                error=f"no model artifact for machine type {c.machine_type!r}",
            )
        items.append(row)
    return items


# ---------------------------------------------------------------- stage 1: fetch, decode, featurise
def fetch_decode(
    batch: pa.Table, *, data_uri: str, endpoint_url: str | None, models: dict[str, dict],
    max_seconds: float | None = None,
) -> pa.Table:
    """Fetch, decode and featurise a batch of clips; one output row per input row.

    Output rows still to be scored have ``status`` null and ``tiles``: normalised
    float32 tiles ``[n_tiles, n_mels, tile_frames]`` as bytes. Failures become error
    rows; nothing raises for a bad clip. ``max_seconds`` (default: the artifact's
    ``features.max_seconds``) refuses longer clips from their header (``too_long``); a
    clip far below the level of its type's training clips is a sensor fault
    (``low_level``), not scored.
    """
    from .audio import AudioDecodeError, clip_level_db, decode_with_rate, low_level

    rows = batch.to_pylist()
    todo = [r for r in rows if r.get("status") is None]
    paths = [_fs_path(r["path"]) for r in todo]
    fetched = read_many(_location(data_uri, endpoint_url), paths, chunk=max(1, len(paths)))
    for r, (_, data) in zip(todo, fetched, strict=True):
        if isinstance(data, BaseException):
            r.update(status=STATUS_ERROR, error_reason="read_failed", error=f"{type(data).__name__}: {data}")
            continue
        meta = models[r["machine_type"]]
        try:
            cfg = config_of(meta)
            fcfg = cfg.features
            wav, rate = decode_with_rate(data, fcfg.sample_rate, fcfg.min_seconds, max_seconds or fcfg.max_seconds)
            del data  # raw bytes are not needed past this point
            r["source_sample_rate"] = rate
            r["duration_s"] = wav.shape[0] / fcfg.sample_rate
            quiet = low_level(clip_level_db(wav), extras_of(meta).get("level_db"))
            if quiet:
                r.update(status=STATUS_ERROR, error_reason="low_level", error=quiet)
                continue
            if rate / 2 < fcfg.f_max:  # the top mel bands would be empty: not comparable with training
                r.update(status=STATUS_ERROR, error_reason="low_sample_rate",
                         error=f"recorded at {rate} Hz: no content above {rate / 2:.0f} Hz, mel range ends at "
                               f"{fcfg.f_max:.0f} Hz")
                continue
            kind = get_kind(cfg.model.kind)
            feats = kind.featurize(wav, cfg, extras_of(meta))
            if feats.shape[0] == 0:
                r.update(status=STATUS_ERROR, error_reason="too_short", error="too short for one feature row")
                continue
            r["n_tiles"] = int(feats.shape[0])
            r["tiles"] = feats.numpy().astype(np.float32, copy=False).tobytes()
            vec = kind.clip_vector(wav, cfg)
            r["vector"] = None if vec is None else np.asarray(vec, dtype=np.float64).tobytes()
        except AudioDecodeError as e:
            r.update(status=STATUS_ERROR, error_reason=e.reason, error=str(e))
        except Exception as e:  # a clip's failure must not take its batch down
            r.update(status=STATUS_ERROR, error_reason="decode_failed", error=f"{type(e).__name__}: {e}")
    return pa.Table.from_pylist([{c: r.get(c) for c in INTERNAL_SCHEMA.names} for r in rows], schema=INTERNAL_SCHEMA)


# ---------------------------------------------------------------- stage 2: score
@contextlib.contextmanager
def _quiet(logger: str):
    """Only errors from ``logger`` (and below it) inside the block."""
    lg = logging.getLogger(logger)
    level = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(level)



class ScoreActor:
    """Ray Data callable class: loads every needed model once, scores batches.

    ``loader()`` returns an :class:`asd_core.detector.Scorer` (any model kind); injected so the class
    runs without Ray or storage in tests.
    """

    def __init__(
        self,
        models_uri: str | None = None,
        endpoint_url: str | None = None,
        machine_types: list[str] | None = None,
        n_masks: int | None = None,
        device: str = "cpu",
        torch_threads: int | None = None,
        loader=None,
    ):
        import torch

        from .detector import Scorer

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.bad: dict[str, str] = {}  # machine type -> why its artifact is unusable
        if loader is not None:
            self.scorer = loader()
            return
        loc = open_location(models_uri, endpoint_url)
        arts = {}
        for mt in machine_types or []:
            try:  # load and run one tile with one mask: a bad artifact fails its own type only
                art = load_artifact(loc, mt)
                with _quiet("asd_core.kinds"):  # the check's one mask is not a K the user asked for
                    probe = Scorer({mt: art}, device=device, n_masks=1)
                    probe.score_features(mt, [torch.zeros(1, *probe.item_shape(mt))])
                arts[mt] = art
            except Exception as e:  # noqa: BLE001
                self.bad[mt] = str(e) if loc.join(mt).uri in str(e) else f"model artifact {loc.join(mt).uri}: {e}"
        self.scorer = Scorer(arts, device=device, n_masks=n_masks) if arts else None

    def __call__(self, batch: pa.Table) -> pa.Table:
        import torch

        rows = batch.to_pylist()
        by_type: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            if r.get("status") is None:
                by_type[r["machine_type"]].append(r)
        for mt, group in by_type.items():
            if mt in self.bad:
                for r in group:
                    r.update(status=STATUS_ERROR, error_reason="bad_model", error=self.bad[mt])
                continue
            if self.scorer is None or not self.scorer.has_model(mt):
                for r in group:
                    r.update(status=STATUS_ERROR, error_reason="no_model", error=f"scorer has no model for {mt!r}")
                continue
            shape = self.scorer.item_shape(mt)
            tiles = [
                torch.from_numpy(np.frombuffer(r["tiles"], dtype=np.float32).reshape(-1, *shape).copy())
                for r in group
            ]
            vectors = [None if r.get("vector") is None else np.frombuffer(r["vector"], dtype=np.float64)
                       for r in group]
            try:
                scored = self.scorer.score_features(mt, tiles, vectors)
            except Exception:  # isolate the clip that fails
                scored = []
                for t, v in zip(tiles, vectors, strict=True):
                    try:
                        scored.append(self.scorer.score_features(mt, [t], [v])[0])
                    except Exception as e:
                        scored.append(e)
            for r, s in zip(group, scored, strict=True):
                if isinstance(s, BaseException):
                    r.update(status=STATUS_ERROR, error_reason="score_failed", error=f"{type(s).__name__}: {s}")
                elif not math.isfinite(s.score):
                    r.update(status=STATUS_ERROR, error_reason="score_failed", error="non-finite score")
                else:
                    r.update(
                        status=STATUS_OK,
                        anomaly_score=s.score,
                        decision=s.decision,
                        threshold=s.threshold,
                        model_id=s.model_id,
                        model_kind=s.model_kind,
                        n_tiles=s.n_tiles,
                    )
        now = datetime.now(timezone.utc)
        for r in rows:
            r["scored_at"] = now
        return results.to_table(rows)
