"""The scoring output store on Delta Lake (``deltalake``); no Ray.

Layout under ``OUT_URI``::

    scores/     history: every run's rows, appended; partitioned by run_date (the run's UTC day)
    latest/     one row per clip and (split, models URI, K), by MERGE; partitioned by clip_part
    metrics/    per run, machine type, section and kind; partitioned by run_date
    evaluated/  the rows each run's metrics were computed on (evaluated_run_id); by run_date
    alerts/     per run: clips over threshold (alert_kind 'anomaly') and dead sensors ('sensor')
    runs/       the run records (the registry): counts as columns, the whole record as JSON
    submission/<run_id>/   DCASE submission CSVs
    _staging/<run_id>/     a run in flight: the pipeline's Parquet parts, _out/ (staged outputs,
                           COMMIT.json), _owner.json
    _lease.json            one run at a time (asd_core.runs.Lease)
    _legacy/               outputs of the former layout, after conversion (a backup)

``clip_part`` is the clip's ``date`` field (template or manifest) when it has one, else
``h00``..``h15``, a hash bucket of its path; a night's MERGE and its incremental lookup
name only the partitions of the night's clips. Template and manifest fields are columns
(``date``, ``unit``, ...) in scores, latest, evaluated and alerts, besides the
``attributes`` JSON.

A run's commit (:meth:`RunStore.finish`): the staged rows and outputs are complete,
then ``_staging/<run_id>/_out/COMMIT.json`` is written: from that moment the night is
committed. The tables follow (scores, metrics, evaluated, alerts, latest), then the
submission files and last the run's row in ``runs`` (what makes it "published"); every
table commit carries the Delta transaction ``asd-run:<run_id>``, so a step that already
happened is skipped. A run killed before COMMIT.json left nothing visible (its staging
is removed); one killed after it is finished by the next run (:meth:`RunStore.recover`),
so after that every table has the whole night. Delta's optimistic commits (put-if-absent
on S3) keep concurrent runs from losing rows; a run whose lease was taken over commits
nothing, and latest's MERGE never replaces a row by one scored earlier.
"""

from .rows import (
    ALERT_COLUMNS,
    ALERT_KIND,
    CLIP_PART,
    RUN_DATE,
    alert_rows,
    alert_summary,
    json_default,
    read_tables,
    to_bytes,
    write_table,
)
from .runstore import (
    ALERTS,
    EVALUATED,
    LATEST,
    LEASE,
    METRICS,
    RUNS,
    SCORES,
    STAGING,
    TABLES,
    LeaseLost,
    PublishError,
    RunStore,
    app_id,
    release_on_signals,
)
from .tables import StoreError, storage_options

__all__ = [
    "ALERTS", "ALERT_COLUMNS", "ALERT_KIND", "CLIP_PART", "EVALUATED", "LATEST", "LEASE", "METRICS", "RUNS",
    "RUN_DATE", "SCORES", "STAGING", "TABLES", "LeaseLost", "PublishError", "RunStore", "StoreError", "alert_rows",
    "alert_summary", "app_id", "json_default", "read_tables", "release_on_signals", "storage_options", "to_bytes",
    "write_table",
]
