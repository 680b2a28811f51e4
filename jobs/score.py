"""Nightly batch scoring on Ray Data: archive in, Parquet scores, metrics and
DCASE submission files out.

    asd score DATA_URI MODELS_URI OUT_URI [--machines fan,valve] [--masks K] ...
    ray job submit --working-dir . -- python -m jobs.score DATA_URI MODELS_URI OUT_URI ...

Pipeline (streaming; memory bounded by batch sizes, not by the archive)::

    driver: asd_core.catalog.list_clips (DCASE layout, --pattern or --manifest)
            -> one item per file (path, size, fingerprint, fields, model id)
    from_arrow ─► map_batches(fetch_decode)            CPU tasks, 8 clips a batch:
                  s3fs cat of the batch (concurrent, per-file errors), decode,
                  features normalised with the type's stats; bytes dropped here
               ─► map_batches(ScoreActor, ActorPoolStrategy(size=N))
                  each actor loads the models once and routes clips by machine type
               ─► write_parquet(OUT/_staging/<run_id>/)
    driver: asd_core.runstore.RunStore.publish: check rows == items, paths unique ->
            move under OUT/scores/date=<day>/run=<run_id>/ -> _SUCCESS (the commit)
            -> latest/scores.parquet -> metrics, alerts, submission -> runs/<run_id>.json

Why list on the driver and fetch inside the UDF rather than ``read_binary_files``: a
file that cannot be read (deleted after listing, permissions, a flaky endpoint) fails
the whole read task, and Ray Data can only drop whole blocks (``max_errored_blocks``);
here each file gets its own error row. Only one batch of raw bytes per task is ever in
memory, and ``s3fs.cat`` of a batch fetches its objects concurrently.

Output layout: see :mod:`asd_core.runstore` (``latest/scores.parquet`` has each clip
once; ``scores/`` is the partitioned history; ``alerts/<run_id>.parquet`` the clips
over threshold).

Incremental runs (``--incremental``) skip clips whose (path, size, fingerprint, model
id) already has a final row in the index (``latest/scores.parquet``) for the same
split, models URI and K (an ok row, or an error that a retry cannot fix; read
failures and bad artifacts are retried). A run publishes all or nothing; its metrics
and submission cover every listed clip: this run's rows plus the index rows they
skipped, so a crashed night re-run with ``--incremental`` yields the same metrics as
one clean run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import posixpath
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from asd_core import results
from asd_core.artifact import list_artifacts, read_meta
from asd_core.catalog import ListedClip, list_clips, listing_problem, parse_only
from asd_core.results import STATUS_ERROR, STATUS_OK
from asd_core.runs import DEFAULT_LEASE_TTL_S, Lease, validate_run_id
from asd_core.runstore import LATEST, LEASE, RunStore, alert_summary, json_default, write_table
from asd_core.storage import Location, open_location, read_many, write_bytes

log = logging.getLogger("jobs.score")

DECODE_BATCH = 8  # clips per decode task batch: bounds raw bytes held per task
DEFAULT_BATCH = 16  # clips per scoring call
STAGE_ROWS_PER_FILE = 200_000  # score rows per staged Parquet file
# More than half the clips unreadable is an outage (or a wrong endpoint), not bad files.
DEFAULT_MAX_READ_FAILURE_RATE = 0.5

# Rows between the stages carry the score columns plus the tiles.
_INTERNAL_SCHEMA = results.SCORE_SCHEMA.append(pa.field("tiles", pa.large_binary()))


# ---------------------------------------------------------------- small helpers
def new_run_id() -> str:
    """``20260124T021500Z-1a2b3c``: sortable by start time, unique."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


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
    from asd_core.artifact import artifact_uri, config_of, extras_of
    from asd_core.kinds import get_kind

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
            "model_kind": meta.get("model_kind", "unet") if meta else "",
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
def fetch_decode(batch: pa.Table, *, data_uri: str, endpoint_url: str | None, models: dict[str, dict]) -> pa.Table:
    """Fetch, decode and featurise a batch of clips; one output row per input row.

    Output rows still to be scored have ``status`` null and ``tiles``: normalised
    float32 tiles ``[n_tiles, n_mels, tile_frames]`` as bytes. Failures become error
    rows; nothing raises for a bad clip.
    """
    from asd_core.artifact import config_of, extras_of
    from asd_core.audio import AudioDecodeError, decode_with_rate
    from asd_core.kinds import get_kind

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
            wav, rate = decode_with_rate(data, fcfg.sample_rate, fcfg.min_seconds)
            del data  # raw bytes are not needed past this point
            r["source_sample_rate"] = rate
            if rate / 2 < fcfg.f_max:  # the top mel bands would be empty: not comparable with training
                r.update(status=STATUS_ERROR, error_reason="low_sample_rate",
                         error=f"recorded at {rate} Hz: no content above {rate / 2:.0f} Hz, mel range ends at "
                               f"{fcfg.f_max:.0f} Hz")
                continue
            feats = get_kind(cfg.model.kind).featurize(wav, cfg, extras_of(meta))
            r["duration_s"] = wav.shape[0] / fcfg.sample_rate
            if feats.shape[0] == 0:
                r.update(status=STATUS_ERROR, error_reason="too_short", error="too short for one feature row")
                continue
            r["n_tiles"] = int(feats.shape[0])
            r["tiles"] = feats.numpy().astype(np.float32, copy=False).tobytes()
        except AudioDecodeError as e:
            r.update(status=STATUS_ERROR, error_reason=e.reason, error=str(e))
        except Exception as e:  # a clip's failure must not take its batch down
            r.update(status=STATUS_ERROR, error_reason="decode_failed", error=f"{type(e).__name__}: {e}")
    return pa.Table.from_pylist([{c: r.get(c) for c in _INTERNAL_SCHEMA.names} for r in rows], schema=_INTERNAL_SCHEMA)


# ---------------------------------------------------------------- stage 2: score
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

        from asd_core.detector import Scorer

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.bad: dict[str, str] = {}  # machine type -> why its artifact is unusable
        if loader is not None:
            self.scorer = loader()
            return
        from asd_core.artifact import load_artifact

        loc = open_location(models_uri, endpoint_url)
        arts = {}
        for mt in machine_types or []:
            try:  # load and run one tile with one mask: a bad artifact fails its own type only
                art = load_artifact(loc, mt)
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
            try:
                scored = self.scorer.score_features(mt, tiles)
            except Exception:  # isolate the clip that fails
                scored = []
                for t in tiles:
                    try:
                        scored.append(self.scorer.score_features(mt, [t])[0])
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


# ---------------------------------------------------------------- the job
def run_scoring(
    data_uri: str,
    models_uri: str,
    out_uri: str,
    *,
    run_id: str | None = None,
    endpoint_url: str | None = None,
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`score_run` under the output's lease (``OUT_URI/scores/_lease.json``): a
    second run on the same OUT_URI while this one runs fails with :class:`LeaseHeld`
    before it lists or scores anything. The lease is released at the end, whatever
    happened; one left by a killed run expires after ``lease_ttl_s``."""
    run_id = validate_run_id(run_id or new_run_id())
    out = open_location(out_uri, endpoint_url)
    if out.protocol == "file":
        out.fs.makedirs(out.path, exist_ok=True)
    with Lease(out, f"{out.path}/{LEASE}", run_id, lease_ttl_s):
        return score_run(data_uri, models_uri, out_uri, run_id=run_id, endpoint_url=endpoint_url, **kwargs)


def score_run(
    data_uri: str,
    models_uri: str,
    out_uri: str,
    *,
    machines: list[str] | None = None,
    split: str = "test",
    n_masks: int | None = None,
    run_id: str | None = None,
    incremental: bool = False,
    actors: int = 1,
    gpus_per_actor: float = 0.0,
    cpus_per_actor: float | None = None,
    torch_threads: int | None = None,
    actor_memory_gb: float | None = None,
    batch_size: int = DEFAULT_BATCH,
    endpoint_url: str | None = None,
    ground_truth: list[str] | None = None,
    pattern: str | None = None,
    manifest: str | None = None,
    listed: list[ListedClip] | None = None,
    only: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Score every clip of an archive and publish the run (see :mod:`asd_core.runstore`).

    The clips: ``listed`` when given, else a ``manifest`` (CSV/Parquet), a ``pattern``
    (path template), or the DCASE layout ``<data_uri>/<machine_type>/<split>/``.
    Uses Ray only when some clip needs scoring (``ray.init`` /
    :func:`jobs.common.init_ray` first; a local one is started otherwise): a run whose
    clips all carry an error already (no model, bad names) is written and published
    without it. ``n_masks`` overrides each artifact's K; ``gpus_per_actor``
    > 0 scores on CUDA. ``cpus_per_actor`` defaults to 0.5 so the decode tasks always
    find a CPU; ``torch_threads`` (CPU scoring) defaults to the node's cores / actors.
    ``actor_memory_gb`` reserves heap per actor (a width-64 U-Net with 256-pair forward
    batches peaks at ~2.3 GiB on CPU), so Ray does not pack more actors than fit.
    Returns the run summary (also in ``runs/<run_id>.json``).
    """
    import ray

    t0 = time.perf_counter()
    run_id = validate_run_id(run_id or new_run_id())
    data = open_location(data_uri, endpoint_url)
    models_loc = open_location(models_uri, endpoint_url)
    out = open_location(out_uri, endpoint_url)
    if out.protocol == "file":
        out.fs.makedirs(out.path, exist_ok=True)
    store = RunStore(out)
    stage_dir = store.begin(run_id)
    started_at = datetime.now(timezone.utc)

    if listed is None:
        listed = list_clips(data, split=split, machines=machines, pattern=pattern, manifest=manifest,
                            endpoint_url=endpoint_url, only=only)
    bad_models: dict[str, str] = {}
    models = model_index(models_loc, bad=bad_models)
    gt = results.read_ground_truth(ground_truth, endpoint_url) if ground_truth else None
    items = clip_items(listed, data, models, run_id, gt, bad_models, models_uri=models_loc.uri, n_masks=n_masks)
    log.info("run %s: %d files listed under %s (%d machine types)", run_id, len(items), data.uri,
             len({i["machine_type"] for i in items}))
    unlisted = Counter(i.get("error_reason") for i in items
                       if i.get("error_reason") in ("bad_name", "unsupported_format", "bad_manifest_row", "not_found"))
    for reason, n in sorted(unlisted.items()):
        example = next(i["error"] for i in items if i.get("error_reason") == reason)
        log.warning("run %s: %d file(s) cannot be scored (%s), e.g. %s", run_id, n, reason, example)

    carried: list[dict] = []
    if incremental:  # the index's rows that settle a clip (same path, size, fingerprint, model)
        carried, items = store.settled(items, split=split, models_uri=models_loc.uri, n_masks=n_masks)
        log.info("incremental: %d clips already scored in published runs, %d to score", len(carried), len(items))

    t_pipe = time.perf_counter()
    needed = sorted({i["machine_type"] for i in items if i["status"] is None})
    if items and not needed:  # every clip already has its error row: no Ray needed
        now = datetime.now(timezone.utc)
        write_table(out, f"{stage_dir}/part-00000.parquet", results.to_table([{**i, "scored_at": now} for i in items]))
    elif items:
        if gpus_per_actor > 0:
            from jobs.common import require_resources

            require_resources({"GPU": gpus_per_actor}, f"--gpus-per-actor {gpus_per_actor:g} (one scoring actor)")
        _run_pipeline(
            items,
            data_uri=data.uri,
            models_uri=models_loc.uri,
            stage_uri=out.uri_of(stage_dir),
            out=out,
            endpoint_url=endpoint_url,
            models={mt: models[mt] for mt in needed},
            n_masks=n_masks,
            actors=actors,
            gpus_per_actor=gpus_per_actor,
            cpus_per_actor=cpus_per_actor,
            torch_threads=torch_threads,
            actor_memory_gb=actor_memory_gb,
            batch_size=batch_size,
            ray=ray,
        )
    pipeline_s = time.perf_counter() - t_pipe

    new, record = store.publish(
        run_id,
        [i["path"] for i in items],
        {
            "split": split,
            "date": started_at.strftime("%Y-%m-%d"),
            "data_uri": data.uri,
            "source": f"manifest {manifest}" if manifest else f"pattern {pattern}" if pattern else "dcase layout",
            "models_uri": models_loc.uri,
            "models": {mt: m["model_id"] for mt, m in models.items()},
            "model_kinds": sorted({m.get("model_kind", "unet") for m in models.values()}),
            "bad_models": bad_models,
            "n_masks": n_masks,
            "incremental": incremental,
            "n_skipped": len(carried),
            "started_at": started_at.isoformat(),
        },
    )

    # Metrics and submission over every listed clip's row; alerts over this run's rows.
    view = pa.concat_tables([results.to_table(carried), new]).to_pandas()
    view = results.apply_ground_truth(view, gt)
    sections, official = results.compute_metrics(view)
    metrics_path = store.run_output("metrics", record, "metrics.parquet")
    write_table(out, metrics_path, results.metrics_table(sections, run_id, official))
    evaluated_path = store.run_output("evaluated", record, "evaluated.parquet")
    write_table(out, evaluated_path, results.conform(pa.Table.from_pandas(view, preserve_index=False)))
    alerts_path, alerts = store.write_alerts(run_id, new)
    sub_dir = f"{out.path}/submission/{run_id}"
    sub = results.submission_files(view) if split == "test" and sections else {}
    for name, text in sub.items():
        write_bytes(out, f"{sub_dir}/{name}", text.encode())

    seconds = time.perf_counter() - t0
    n_evaluated = int(len(results.evaluable(view)))
    summary = {
        "run_id": run_id,
        "split": split,
        "n_listed": len(listed),
        "n_skipped": len(carried),
        "n_scored": new.num_rows,
        "n_ok": record["n_ok"],
        "n_error": record["n_error"],
        "errors_by_reason": record["errors_by_reason"],
        "n_evaluated": n_evaluated,
        "labelled": n_evaluated > 0,
        "official_score": official,
        "sections": [m.to_dict() for m in sections],
        "n_alerts": alerts.num_rows,
        "alerts": alert_summary(alerts),
        "alerts_uri": out.uri_of(alerts_path),
        "scores_uri": out.uri_of(record["scores_path"]),
        "latest_uri": out.uri_of(store.p(LATEST)),
        "metrics_uri": out.uri_of(metrics_path),
        "evaluated_uri": out.uri_of(evaluated_path),
        "submission_uri": out.uri_of(sub_dir) if sub else None,
        "pipeline_seconds": pipeline_s,
        "seconds": seconds,
        "clips_per_second": new.num_rows / pipeline_s if pipeline_s > 0 and new.num_rows else 0.0,
    }
    store.finish(record, summary)
    log.info(
        "run %s published: %d rows (%d ok, %d errors%s), %d skipped, %s, official score %s, %.1f s",
        run_id, new.num_rows, record["n_ok"], record["n_error"],
        f": {record['errors_by_reason']}" if record["n_error"] else "", len(carried), summary["alerts"],
        f"{official:.4f}" if n_evaluated else "- (no labelled clips)", seconds,
    )
    return summary


def _run_pipeline(
    items: list[dict],
    *,
    data_uri: str,
    models_uri: str,
    stage_uri: str,
    out: Location,
    endpoint_url: str | None,
    models: dict[str, dict],
    n_masks: int | None,
    actors: int,
    gpus_per_actor: float,
    cpus_per_actor: float | None,
    torch_threads: int | None,
    actor_memory_gb: float | None,
    batch_size: int,
    ray,
) -> None:
    import ray.data

    from asd_core.progress import Progress

    if not ray.is_initialized():
        ray.init()
    ctx = ray.data.DataContext.get_current()  # configured before the dataset exists
    ctx.max_errored_blocks = 0  # a lost block is a bug: fail loudly (bad clips are rows)
    ctx.enable_progress_bars = log.isEnabledFor(logging.DEBUG)  # ours counts clips (see Progress); Ray's with -v
    gpu = gpus_per_actor > 0
    if torch_threads is None and not gpu:
        torch_threads = max(1, (os.cpu_count() or 1) // max(actors, 1))
    # Small input blocks (a few decode batches each) so decode runs as many tasks.
    table = results.to_table(items)
    rows_per_block = max(DECODE_BATCH, math.ceil(len(items) / 2000))
    ds = ray.data.from_arrow([table.slice(i, rows_per_block) for i in range(0, len(items), rows_per_block)])
    ds = ds.map_batches(
        fetch_decode,
        batch_size=DECODE_BATCH,
        batch_format="pyarrow",
        fn_kwargs={"data_uri": data_uri, "endpoint_url": endpoint_url, "models": models},
        num_cpus=1,
    )
    ds = ds.map_batches(
        ScoreActor,
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        fn_constructor_kwargs={
            "models_uri": models_uri,
            "endpoint_url": endpoint_url,
            "machine_types": sorted(models),
            "n_masks": n_masks,
            "device": "cuda" if gpu else "cpu",
            "torch_threads": torch_threads,
        },
        num_cpus=cpus_per_actor if cpus_per_actor is not None else 0.5,
        num_gpus=gpus_per_actor or None,
        **({"memory": int(actor_memory_gb * 2**30)} if actor_memory_gb else {}),
    )
    # The score rows are small (the tiles stay in the pipeline): the driver writes them,
    # so it sees every finished batch and can report progress.
    stage = _fs_path(stage_uri)
    pending: list[pa.Table] = []
    n_pending = part = 0
    with Progress("scoring", len(items), "clips", log=log) as progress:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=2):
            pending.append(batch)
            n_pending += batch.num_rows
            progress.update(batch.num_rows)
            if n_pending >= STAGE_ROWS_PER_FILE:
                write_table(out, f"{stage}/part-{part:05d}.parquet", pa.concat_tables(pending))
                pending, n_pending, part = [], 0, part + 1
        if pending:
            write_table(out, f"{stage}/part-{part:05d}.parquet", pa.concat_tables(pending))


# ---------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    from jobs.common import HelpFormatter, add_ray_args, add_storage_args, describe

    p = argparse.ArgumentParser(prog="asd score", description=describe(__doc__), formatter_class=HelpFormatter)
    p.add_argument("data_uri", help="archive root (s3:// or a folder); by default in the DCASE layout "
                                    "<root>/<machine_type>/<split>/<clip>.wav")
    p.add_argument("models_uri", help="model artifacts: <models>/<machine_type>/")
    p.add_argument("out_uri", help="output root (scores/, latest/, metrics/, alerts/, runs/, submission/)")
    p.add_argument("--machines", default=None, help="comma-separated machine types (default: every folder)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--manifest", default=None, metavar="URI",
                     help="CSV/Parquet listing exactly the clips to score (path, machine_type; optional section, "
                          "domain, label, split, attributes); paths relative to DATA_URI or URIs")
    src.add_argument("--pattern", default=None, metavar="TEMPLATE",
                     help="path template below DATA_URI, e.g. '{date}/{machine_type}/{name}.flac'; "
                          "placeholders become columns ('asd manifest' shows the mapping first)")
    p.add_argument("--only", action="append", default=[], metavar="PLACEHOLDER=VALUE",
                   help="with --pattern: fix a placeholder, e.g. --only date=2026-11-24 (lists only that folder)")
    p.add_argument("--split", default="test", choices=["test", "train"], help="which folder of each type to score")
    p.add_argument("--masks", type=int, default=None, dest="n_masks", help="masks per tile K (default: the artifact's)")
    p.add_argument("--run-id", default=None, help="run id (default: UTC time + random suffix)")
    p.add_argument("--incremental", action="store_true", help="skip clips already scored in published runs")
    p.add_argument("--actors", type=int, default=1, help="scoring actors")
    p.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per scoring actor (0 = CPU)")
    p.add_argument("--cpus-per-actor", type=float, default=None, help="CPUs reserved per actor (default 0.5)")
    p.add_argument("--torch-threads", type=int, default=None, help="torch threads per CPU actor (default cores/actors)")
    p.add_argument("--actor-memory-gb", type=float, default=None, help="heap reserved per scoring actor (GiB)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="clips per scoring call")
    p.add_argument("--ground-truth", nargs="+", default=None, metavar="CSV_URI",
                   help="official ground-truth CSVs or folders (ground_truth_data/, ground_truth_domain/)")
    p.add_argument("--max-error-rate", type=float, default=None,
                   help="exit 1 when more than this fraction of this run's clips failed (any reason; default: off)")
    p.add_argument("--max-read-failure-rate", type=float, default=DEFAULT_MAX_READ_FAILURE_RATE,
                   help="exit 1 when more than this fraction of this run's clips could not be read from storage "
                        f"(read_failed: an outage, not bad files; default {DEFAULT_MAX_READ_FAILURE_RATE}); "
                        "a run in which every clip failed to read always exits 1. The run is published either way")
    p.add_argument("--lease-ttl-hours", type=float, default=DEFAULT_LEASE_TTL_S / 3600,
                   help="expiry of the OUT_URI/scores/_lease.json lease that keeps a second run out "
                        "(default %(default)g; must exceed the longest run)")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    p.add_argument("-v", "--verbose", action="store_true")
    add_storage_args(p)
    add_ray_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Exit 0: published, within the error limits; 1: published, but every clip failed
    to read or an error rate was exceeded; 2: nothing could start (no model at all:
    the error rows are still published; another run holds the output's lease; the
    cluster lacks the requested GPUs; a bad run id)."""
    import contextlib

    from asd_core.runs import LeaseHeld
    from jobs.common import ResourcesUnavailable, parse_machines, ray_session, setup_logging, storage_errors

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    # Everything is checked before Ray starts; each problem is one line naming the fix.
    try:
        if args.run_id is not None:
            validate_run_id(args.run_id)
        machines = parse_machines(args.machines)
        data = open_location(args.data_uri, args.endpoint_url)
        models_loc = open_location(args.models_uri, args.endpoint_url)
        open_location(args.out_uri, args.endpoint_url)
        with storage_errors("models", args.models_uri):
            no_models = not list_artifacts(models_loc)  # no Ray is needed then
        with storage_errors("data", args.data_uri):
            listed = list_clips(data, split=args.split, machines=machines, pattern=args.pattern,
                                manifest=args.manifest, endpoint_url=args.endpoint_url, only=parse_only(args.only))
        layout = f"manifest {args.manifest}" if args.manifest else f"--pattern {args.pattern!r}" if args.pattern \
            else "dcase"
        problem = listing_problem(listed, data, machines=machines, split=args.split, layout=layout)
        if problem:
            raise ValueError(problem)
    except ValueError as e:  # a bad run id, URI scheme, manifest, template, an empty listing
        print(f"asd score: {e}")
        return 2
    session = contextlib.nullcontext() if no_models else ray_session(args.address, args.endpoint_url)
    try:
        with session:
            summary = _run_from_args(args, machines, listed)
    except (LeaseHeld, ResourcesUnavailable) as e:
        print(f"asd score: {e}")
        return 2
    if args.json:
        print(json.dumps(summary, default=json_default))
    else:
        _print_summary(summary)
    if no_models:
        print(f"asd score: no model artifact under {models_loc.uri} (expected <models>/<machine_type>/current.json); "
              f"{summary['n_scored']} clips published as errors")
        return 2
    n, reasons = summary["n_scored"], summary["errors_by_reason"]
    read_failed = reasons.get("read_failed", 0)
    if n and read_failed == n:
        print(f"every clip ({n}) failed to read from {args.data_uri}: storage unreachable?")
        return 1
    if n and read_failed / n > args.max_read_failure_rate:
        print(f"read failure rate {read_failed / n:.3f} exceeds --max-read-failure-rate {args.max_read_failure_rate}")
        return 1
    if args.max_error_rate is not None and n:
        rate = summary["n_error"] / n
        if rate > args.max_error_rate:
            print(f"error rate {rate:.3f} exceeds --max-error-rate {args.max_error_rate}")
            return 1
    return 0


def _run_from_args(args: argparse.Namespace, machines: list[str] | None, listed: list[ListedClip]) -> dict[str, Any]:
    return run_scoring(
        args.data_uri,
        args.models_uri,
        args.out_uri,
        machines=machines,
        split=args.split,
        n_masks=args.n_masks,
        run_id=args.run_id,
        incremental=args.incremental,
        actors=args.actors,
        gpus_per_actor=args.gpus_per_actor,
        cpus_per_actor=args.cpus_per_actor,
        torch_threads=args.torch_threads,
        actor_memory_gb=args.actor_memory_gb,
        batch_size=args.batch_size,
        endpoint_url=args.endpoint_url,
        ground_truth=args.ground_truth,
        lease_ttl_s=args.lease_ttl_hours * 3600,
        pattern=args.pattern,
        manifest=args.manifest,
        listed=listed,
    )


def _print_summary(summary: dict[str, Any]) -> None:
    off = summary["official_score"]
    metrics = (f"official score {100 * off:.2f}" if summary.get("labelled", True) and math.isfinite(off)
               else "no labelled clips: no metrics (labels come from names, --pattern/--manifest or --ground-truth)")
    print(
        f"run {summary['run_id']}: {summary['n_listed']} clips listed, {summary['n_skipped']} skipped, "
        f"{summary['n_scored']} scored ({summary['n_ok']} ok, {summary['n_error']} errors"
        + (f": {summary['errors_by_reason']}" if summary["n_error"] else "")
        + f"); {metrics}; {summary['clips_per_second']:.2f} clips/s; scores at {summary['scores_uri']}"
    )
    if "alerts" in summary:
        print(f"{summary['alerts']} (alerts at {summary['alerts_uri']})")


if __name__ == "__main__":
    raise SystemExit(main())
