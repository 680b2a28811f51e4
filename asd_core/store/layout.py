"""The output's layout: table names and partitions, the files beside the tables,
the commit steps, and the ``runs`` table's row. Shared by the store's modules, which
import it and never each other upwards.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from ..results import finite
from .rows import CLIP_PART, RUN_DATE, json_default

SCORES, LATEST, METRICS, EVALUATED, ALERTS, RUNS = "scores", "latest", "metrics", "evaluated", "alerts", "runs"
TABLES = (SCORES, LATEST, METRICS, EVALUATED, ALERTS, RUNS)
PARTITIONS = {SCORES: [RUN_DATE], LATEST: [CLIP_PART], METRICS: [RUN_DATE], EVALUATED: [RUN_DATE],
              ALERTS: [RUN_DATE], RUNS: None}
LEASE = "_lease.json"  # the output's lease (asd_core.runs.Lease), beside the tables, not inside one
STAGING = "_staging"  # _staging/<run_id>/: the pipeline's Parquet parts, then _out/ (staged outputs)
OUTPUTS = "_out"
INTENT = "COMMIT.json"  # _staging/<run_id>/_out/COMMIT.json: written last; from then on the night is committed
OWNER = "_owner.json"  # _staging/<run_id>/_owner.json: which run stages there, until when
REPAIR = "_repair"  # what --repair set aside (unreadable commits, staging)
OPTIMIZE_EVERY = 30  # runs between automatic compactions (0: only asd scores OUT --optimize)
MIGRATE_LATEST = "asd-migrate:latest"
STEPS = ("checked", "outputs", "intent", SCORES, METRICS, EVALUATED, ALERTS, LATEST, "submission", RUNS, "done")

RECORD_SCHEMA = pa.schema([
    pa.field("run_id", pa.string()), pa.field("published_at", pa.timestamp("us", tz="UTC")),
    pa.field("split", pa.string()), pa.field("n_rows", pa.int64()), pa.field("n_ok", pa.int64()),
    pa.field("n_error", pa.int64()), pa.field("n_skipped", pa.int64()), pa.field("n_alerts", pa.int64()),
    pa.field("official_score", pa.float64()), pa.field("record", pa.string()), pa.field(RUN_DATE, pa.string()),
])



def app_id(run_id: str) -> str:
    """The Delta transaction id a run's commits carry (one per table)."""
    return f"asd-run:{run_id}"



def record_row(rec: dict[str, Any]) -> pa.Table:
    """A run record as the ``runs`` table holds it: the counts as columns, the whole
    record as JSON."""
    summary = rec.get("summary") or {}
    published = rec.get("published_at")
    try:
        at = datetime.fromisoformat(published) if published else datetime.now(timezone.utc)
    except ValueError:
        at = datetime.now(timezone.utc)
    off = summary.get("official_score")
    row = {"run_id": rec["run_id"], "published_at": at, "split": rec.get("split"), "n_rows": rec.get("n_rows"),
           "n_ok": rec.get("n_ok"), "n_error": rec.get("n_error"), "n_skipped": rec.get("n_skipped"),
           "n_alerts": summary.get("n_alerts"),
           "official_score": off if isinstance(off, int | float) and off == off else None,
           "record": json.dumps(finite(rec), default=json_default), RUN_DATE: rec["date"]}
    return pa.Table.from_pylist([row], schema=RECORD_SCHEMA)
