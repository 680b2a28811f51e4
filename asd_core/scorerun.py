"""A scoring run from the listing to the published night, without Ray: options, the
output's lease, clip items, incremental carry-over, the commit, metrics, alerts and the
submission, the summary and the exit status.

The Ray Data pipeline itself is passed in (``jobs.score`` wires it), so everything
here runs in tests without a cluster, and a run whose clips all carry an error already
(no model, bad names) is published without one.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from . import results
from .artifact import extras_of
from .catalog import ListedClip, list_clips
from .holdout import HoldOut
from .kinds import DEFAULT_KIND
from .pipeline import clip_items, model_index
from .runs import DEFAULT_LEASE_TTL_S, Lease, new_run_id, validate_run_id
from .runstore import (
    EVALUATED,
    LATEST,
    LEASE,
    METRICS,
    SCORES,
    RunStore,
    alert_summary,
    release_on_signals,
    write_table,
)
from .storage import Location, open_location

log = logging.getLogger(__name__)

# More than half the clips unreadable is an outage (or a wrong endpoint), not bad files.
DEFAULT_MAX_READ_FAILURE_RATE = 0.5
STAGE_ROWS_PER_FILE = 200_000  # score rows per staged Parquet file
_NOT_LISTABLE = ("bad_name", "unsupported_format", "bad_manifest_row", "not_found")


@dataclass(frozen=True)
class ScoreOptions:
    """Everything a scoring run is told, written once: ``asd score``'s options map
    onto these fields by name."""

    data_uri: str
    models_uri: str
    out_uri: str
    machines: list[str] | None = None
    split: str = "test"
    n_masks: int | None = None  # masks per tile K (None: each artifact's)
    run_id: str | None = None
    incremental: bool = False
    actors: int = 1
    gpus_per_actor: float = 0.0
    cpus_per_actor: float | None = None  # None: 0.5, so the decode tasks always find a CPU
    torch_threads: int | None = None  # CPU scoring; None: the node's cores / actors
    actor_memory_gb: float | None = None  # heap reserved per actor (width-64 U-Net: ~2.3 GiB on CPU)
    batch_size: int | None = None  # clips per scoring call; None: DEFAULT_BATCH on GPUs, CPU_BATCH on CPUs
    endpoint_url: str | None = None
    ground_truth: list[str] | None = None
    pattern: str | None = None
    manifest: str | None = None
    only: dict[str, Any] | None = None
    allow_roots: tuple[str, ...] = ()  # roots besides DATA_URI that manifest paths may name
    max_clip_seconds: float | None = None  # longer clips are too_long rows (None: each artifact's features.max_seconds)
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S
    max_error_rate: float | None = None
    max_read_failure_rate: float = DEFAULT_MAX_READ_FAILURE_RATE

    @property
    def source(self) -> str:
        return (f"manifest {self.manifest}" if self.manifest else f"pattern {self.pattern}" if self.pattern
                else "dcase layout")


# pipeline(items, models, stage_dir, out): score ``items`` (rows still to score have
# status None) with the artifacts ``models``; write the score rows as Parquet files
# under ``stage_dir`` (a path on ``out``'s filesystem).
Pipeline = Callable[[list[dict], dict[str, dict], str, Location], None]


def run_with_lease(opts: ScoreOptions, pipeline: Pipeline, listed: list[ListedClip] | None = None) -> dict[str, Any]:
    """:func:`score_run` under the output's lease (``OUT_URI/_lease.json``): a
    second run on the same OUT_URI while this one runs fails with
    :class:`asd_core.runs.LeaseHeld` before it lists or scores anything. The lease is
    released at the end, whatever happened; one left by a killed run expires after
    ``opts.lease_ttl_s``."""
    run_id = validate_run_id(opts.run_id or new_run_id())
    out = open_location(opts.out_uri, opts.endpoint_url)
    if out.protocol == "file":
        out.fs.makedirs(out.path, exist_ok=True)
    with Lease(out, f"{out.path}/{LEASE}", run_id, opts.lease_ttl_s):
        return score_run(opts, pipeline, listed, run_id=run_id)


@release_on_signals()  # SIGTERM (ray job stop) unwinds like Ctrl-C: the lease is released
def score_run(
    opts: ScoreOptions, pipeline: Pipeline, listed: list[ListedClip] | None = None, *, run_id: str | None = None
) -> dict[str, Any]:
    """Score every listed clip and publish the run (see :mod:`asd_core.runstore`).

    The clips: ``listed`` when given, else ``opts``' manifest, template or the DCASE
    layout ``<data_uri>/<machine_type>/<split>/``. Returns the run summary (also in
    ``runs/<run_id>.json``).
    """
    t0 = time.perf_counter()
    run_id = validate_run_id(run_id or opts.run_id or new_run_id())
    data = open_location(opts.data_uri, opts.endpoint_url)
    models_loc = open_location(opts.models_uri, opts.endpoint_url)
    out = open_location(opts.out_uri, opts.endpoint_url)
    if out.protocol == "file":
        out.fs.makedirs(out.path, exist_ok=True)
    store = RunStore(out)
    stage_dir = store.begin(run_id, ttl_s=opts.lease_ttl_s)
    started_at = datetime.now(timezone.utc)

    if listed is None:
        listed = list_clips(data, split=opts.split, machines=opts.machines, pattern=opts.pattern,
                            manifest=opts.manifest, endpoint_url=opts.endpoint_url, only=opts.only,
                            allow_roots=opts.allow_roots)
    bad_models: dict[str, str] = {}
    models = model_index(models_loc, bad=bad_models)
    gt = results.read_ground_truth(opts.ground_truth, opts.endpoint_url) if opts.ground_truth else None
    items = clip_items(listed, data, models, run_id, gt, bad_models, models_uri=models_loc.uri, n_masks=opts.n_masks)
    log.info("run %s: %d files listed under %s (%d machine types)", run_id, len(items), data.uri,
             len({i["machine_type"] for i in items}))
    unlisted = Counter(i.get("error_reason") for i in items if i.get("error_reason") in _NOT_LISTABLE)
    for reason, n in sorted(unlisted.items()):
        example = next(i["error"] for i in items if i.get("error_reason") == reason)
        log.warning("run %s: %d file(s) cannot be scored (%s), e.g. %s", run_id, n, reason, example)
    not_audio = [i["path"] for i in items if i.get("error_reason") in results.NOT_CLIP_REASONS]
    if not_audio:
        log.info("run %s: %d file(s) not audio, listed and not scored, e.g. %s", run_id, len(not_audio), not_audio[0])

    carried: list[dict] = []
    if opts.incremental:  # the index's rows that settle a clip (same path, size, fingerprint, model)
        carried, items = store.settled(items, split=opts.split, models_uri=models_loc.uri, n_masks=opts.n_masks)
        log.info("incremental: %d clips already scored in published runs, %d to score", len(carried), len(items))

    t_pipe = time.perf_counter()
    needed = sorted({i["machine_type"] for i in items if i["status"] is None})
    if items and not needed:  # every clip already has its error row: no Ray needed
        now = datetime.now(timezone.utc)
        write_table(out, f"{stage_dir}/part-00000.parquet", results.to_table([{**i, "scored_at": now} for i in items]))
    elif items:
        pipeline(items, {mt: models[mt] for mt in needed}, stage_dir, out)
    pipeline_s = time.perf_counter() - t_pipe

    new, record = store.publish(
        run_id,
        [i["path"] for i in items],
        {
            "split": opts.split,
            "date": started_at.strftime("%Y-%m-%d"),
            "data_uri": data.uri,
            "source": opts.source,
            "models_uri": models_loc.uri,
            "models": {mt: m["model_id"] for mt, m in models.items()},
            "model_kinds": sorted({m.get("model_kind", DEFAULT_KIND) for m in models.values()}),
            "bad_models": bad_models,
            "n_masks": opts.n_masks,
            "incremental": opts.incremental,
            "n_skipped": len(carried),
            "started_at": started_at.isoformat(),
        },
    )
    holdouts = {mt: r for mt, m in models.items() if (r := HoldOut.from_dict(extras_of(m).get("holdout")))}
    summary = _publish_outputs(store, record, new, carried, gt, opts.split, (holdouts, data.path))
    summary.update(
        n_listed=len(listed),
        pipeline_seconds=pipeline_s,
        seconds=time.perf_counter() - t0,
        clips_per_second=new.num_rows / pipeline_s if pipeline_s > 0 and new.num_rows else 0.0,
    )
    store.finish(record, summary)  # the commit: every table, the submission, the run record
    log.info(
        "run %s published: %d rows (%d ok, %d errors%s), %d skipped, %s, official score %s, %.1f s",
        run_id, new.num_rows, summary["n_ok"], summary["n_error"],
        f": {summary['errors_by_reason']}" if summary["n_error"] else "", len(carried), summary["alerts"],
        f"{summary['official_score']:.4f}" if summary["labelled"] else "- (no labelled clips)", summary["seconds"],
    )
    return summary


def _publish_outputs(
    store: RunStore, record: dict[str, Any], new: pa.Table, carried: list[dict], gt: results.GroundTruth | None,
    split: str, holdouts: tuple[dict[str, HoldOut], str] = ({}, ""),
) -> dict[str, Any]:
    """Metrics and submission over every listed clip's row (this run's and the carried
    ones) but the clips a model trained on (``holdouts``: each type's rule and the data
    root), alerts over this run's rows, all staged for the commit
    (:meth:`RunStore.finish`); returns the summary's run fields."""
    run_id = record["run_id"]
    view = pa.concat_tables([results.to_table(carried), new]).to_pandas()
    view = results.apply_ground_truth(view, gt)
    view, n_trained = results.drop_training_clips(view, *holdouts)
    sections, official = results.compute_metrics(view)
    metrics_uri = store.stage_output(record, METRICS, results.metrics_table(sections, run_id, official))
    evaluated_uri = store.stage_output(
        record, EVALUATED, results.conform(pa.Table.from_pandas(view, preserve_index=False)))
    alerts_uri, alerts = store.write_alerts(run_id, new)
    sub = results.submission_files(view) if split == "test" and sections else {}
    submission_uri = store.stage_submission(record, sub)
    n_evaluated = int(len(results.evaluable(view)))
    kinds = alerts["alert_kind"].to_pylist()
    n_not_audio = sum(record["errors_by_reason"].get(r, 0) for r in results.NOT_CLIP_REASONS)
    return {
        "run_id": run_id,
        "split": split,
        "n_skipped": len(carried),
        "n_scored": new.num_rows,
        "n_ok": record["n_ok"],
        # rows that only say a file is not audio are not errors of the night
        "n_error": record["n_error"] - n_not_audio,
        "errors_by_reason": {r: n for r, n in record["errors_by_reason"].items() if r not in results.NOT_CLIP_REASONS},
        "n_not_audio": n_not_audio,
        "n_evaluated": n_evaluated,
        "n_training_clips": n_trained,  # scored, but never evaluated: the model trained on them
        "labelled": n_evaluated > 0,
        "official_score": official,
        "sections": [m.to_dict() for m in sections],
        "n_alerts": alerts.num_rows,
        "n_anomaly_alerts": kinds.count("anomaly"),
        "n_sensor_alerts": kinds.count("sensor"),
        "alerts": alert_summary(alerts),
        "alerts_uri": alerts_uri,
        "scores_uri": store.tables.uri(SCORES),
        "latest_uri": store.tables.uri(LATEST),
        "metrics_uri": metrics_uri,
        "evaluated_uri": evaluated_uri,
        "submission_uri": submission_uri,
    }


def exit_status(summary: dict[str, Any], opts: ScoreOptions) -> tuple[int, str]:
    """``(1, why)`` when a published run must fail the night (every clip failed to read,
    an error rate over its limit), else ``(0, "")``."""
    n, reasons = summary["n_scored"] - summary.get("n_not_audio", 0), summary["errors_by_reason"]  # clips only
    read_failed = reasons.get("read_failed", 0)
    if n and read_failed == n:
        return 1, f"every clip ({n}) failed to read from {opts.data_uri}: storage unreachable?"
    if n and read_failed / n > opts.max_read_failure_rate:
        return 1, (f"read failure rate {read_failed / n:.3f} exceeds --max-read-failure-rate "
                   f"{opts.max_read_failure_rate}")
    if opts.max_error_rate is not None and n > 0:
        rate = summary["n_error"] / n
        if rate > opts.max_error_rate:
            return 1, f"error rate {rate:.3f} exceeds --max-error-rate {opts.max_error_rate}"
    return 0, ""


def format_summary(summary: dict[str, Any]) -> str:
    """The run's summary in two lines (counts, metrics, speed, where; alerts)."""
    off = summary["official_score"]
    metrics = (f"official score {100 * off:.2f}" if summary.get("labelled", True) and math.isfinite(off)
               else "no labelled clips: no metrics (labels come from names, --pattern/--manifest or --ground-truth)")
    if summary.get("n_training_clips"):
        metrics += (f" (held-out normals and anomalies only: {summary['n_training_clips']} clips the models "
                    "trained on are scored, not evaluated)")
    text = (
        f"run {summary['run_id']}: {summary['n_listed']} clips listed, {summary['n_skipped']} skipped, "
        f"{summary['n_scored']} scored ({summary['n_ok']} ok, {summary['n_error']} errors"
        + (f": {summary['errors_by_reason']}" if summary["n_error"] else "")
        + (f", {summary['n_not_audio']} not audio, not scored" if summary.get("n_not_audio") else "")
        + f"); {metrics}; {summary['clips_per_second']:.2f} clips/s; scores at {summary['scores_uri']}"
    )
    if "alerts" in summary:
        text += f"\n{summary['alerts']} (alerts at {summary['alerts_uri']})"
    return text
