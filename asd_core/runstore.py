"""The scoring output store (the Delta Lake tables under ``OUT_URI``): see
:mod:`asd_core.store`. This module keeps the names other code imports."""

from .store import (
    ALERT_COLUMNS,
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
    StoreError,
    alert_rows,
    alert_summary,
    json_default,
    read_tables,
    release_on_signals,
    storage_options,
    to_bytes,
    write_table,
)
from .store.legacy import JOURNAL, SUCCESS

__all__ = [
    "ALERTS", "ALERT_COLUMNS", "EVALUATED", "JOURNAL", "LATEST", "LEASE", "METRICS", "RUNS", "SCORES", "STAGING",
    "SUCCESS", "TABLES", "LeaseLost", "PublishError", "RunStore", "StoreError", "alert_rows", "alert_summary",
    "json_default", "read_tables", "release_on_signals", "storage_options", "to_bytes", "write_table",
]
