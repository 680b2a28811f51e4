"""The output's Delta Lake tables (``deltalake``): where they are, how to open,
append to, merge into, read, compact and repair them, and what a failure says.

Every table is ``OUT/<name>/`` with its log in ``OUT/<name>/_delta_log/``. Writes
carry a Delta *application transaction* (``txn``: an app id and a version) so that a
commit can be repeated safely: a table that already holds the txn of a run is not
written again (that is how a killed run's night is finished exactly once).

Confinement: a Delta log may name data files by absolute URI (the protocol allows it
for shallow clones). Nothing here reads, rewrites or vacuums a table whose log names a
file outside the table's folder; on a local disk a table folder that resolves (through
a symlink) outside OUT is refused too.

Concurrency: Delta's optimistic commits. On S3 the log is written with put-if-absent
(``conditional_put=etag``, what delta-rs documents for S3-compatible stores), so of
two writers committing the same version exactly one succeeds; the other retries on
the new snapshot (appends) or runs its MERGE again (:meth:`Tables.merge`).
"""

from __future__ import annotations

import logging
import os
import posixpath
import random
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import pyarrow as pa

from ..storage import Location

log = logging.getLogger(__name__)

COMMIT_ATTEMPTS = 12  # optimistic commits that lost a race are tried again this often
VACUUM_RETAIN_HOURS = 168  # deleted files stay a week: readers of older versions keep working
# Set when a table is created. A checkpoint every 5 commits keeps the log a reader
# replays short (a night is one commit per table), so opening a table costs the same
# after years; expired log files are removed after the default 30 days.
TABLE_CONFIG = {"delta.checkpointInterval": "5"}


class StoreError(RuntimeError):
    """An output table or file cannot be used as it is. The message is one line naming
    it and the repair."""


def one_line(e: BaseException, limit: int = 240) -> str:
    """The first line of an error message (delta-rs appends backtraces), shortened."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = re.sub(r"\x1b\[[0-9;]*m", "", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def storage_options(loc: Location) -> dict[str, str] | None:
    """deltalake's storage options for ``loc``, from the endpoint its filesystem uses
    (``--endpoint-url`` or ``AWS_ENDPOINT_URL[_S3]``, see :func:`asd_core.storage.open_location`).

    No credentials: delta-rs takes them from the same standard chain as s3fs
    (environment, profile, instance role), so no secret passes through here.
    ``conditional_put=etag`` makes log commits put-if-absent, which concurrent writers
    need on S3 and S3-compatible stores.
    """
    if loc.protocol != "s3":
        return None
    opts = {"conditional_put": "etag"}
    endpoint = (getattr(loc.fs, "client_kwargs", None) or {}).get("endpoint_url")
    if endpoint:
        opts["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            opts["AWS_ALLOW_HTTP"] = "true"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        opts["AWS_REGION"] = region
    elif endpoint:  # S3-compatible servers ignore the region, but the client needs one
        opts["AWS_REGION"] = "us-east-1"
    return opts


def _delta():
    import deltalake  # imported on use: reading the library's other modules never needs it

    return deltalake


class Tables:
    """The Delta tables under one output location."""

    def __init__(self, out: Location):
        self.out = out
        self.root = out.path.rstrip("/")
        self.options = storage_options(out)
        self._snapshots: dict[str, Any] = {}  # name -> DeltaTable, brought up to date on each load
        self._checked: dict[str, int] = {}  # name -> the version whose files were checked

    # ------------------------------------------------------------ names
    def path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def uri(self, name: str) -> str:
        return self.out.uri_of(self.path(name))

    def exists(self, name: str) -> bool:
        log_dir = posixpath.join(self.path(name), "_delta_log")
        self.out.fs.invalidate_cache(log_dir)  # delta-rs writes beside s3fs: its listings cache is stale
        return self.out.fs.exists(log_dir)

    def _confined_dir(self, name: str) -> None:
        if self.out.protocol == "file":
            real, root = os.path.realpath(self.path(name)), os.path.realpath(self.root)
            if os.path.lexists(self.path(name)) and not (real == root or real.startswith(root.rstrip("/") + "/")):
                raise StoreError(f"{self.uri(name)} resolves to {real}, outside {self.out.uri}: not used "
                                 f"(replace the link by the table's folder)")

    def _check_files(self, name: str, dt: Any) -> None:
        """Every data file of the snapshot is named relative to the table's folder and
        stays inside it (no scheme, no absolute path, no ``..``)."""
        paths = pa.table(dt.get_add_actions(flatten=False)).column("path").to_pylist()
        for raw in paths:
            p = unquote(raw)
            if "://" in p or p.startswith(("/", "\\")) or ":" in p.split("/", 1)[0] or ".." in p.split("/"):
                raise StoreError(f"{self.uri(name)}: its Delta log names a data file outside the table ({raw}); "
                                 f"not read (repair: asd scores {self.out.uri} --repair)")

    # ------------------------------------------------------------ open
    def load(self, name: str, *, check: bool = True) -> Any | None:
        """The table's latest snapshot (``deltalake.DeltaTable``), ``None`` when it does
        not exist; :class:`StoreError` when its log cannot be read or names files
        outside it. A table opened before is brought up to date (only the new commits
        are read)."""
        self._confined_dir(name)
        deltalake = _delta()
        dt = self._snapshots.get(name)
        try:
            if dt is not None:
                dt.update_incremental()
            else:
                dt = deltalake.DeltaTable(self.uri(name), storage_options=self.options)
        except deltalake.exceptions.TableNotFoundError:
            self.forget(name)
            return None
        except Exception as e:  # noqa: BLE001 - any failure to read the log is one line
            self.forget(name)
            if not self.exists(name):  # removed in between
                return None
            raise StoreError(f"{self.uri(name)}: its Delta log cannot be read ({one_line(e)}); "
                             f"repair: asd scores {self.out.uri} --repair") from e
        self._snapshots[name] = dt
        if check and self._checked.get(name) != dt.version():
            self._check_files(name, dt)
            self._checked[name] = dt.version()
        return dt

    def forget(self, name: str | None = None) -> None:
        """Drop the remembered snapshots (of ``name``, or all): the next load reads the log afresh."""
        for n in [name] if name else list(self._snapshots):
            self._snapshots.pop(n, None)
            self._checked.pop(n, None)

    def guard(self, name: str, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, with any failure but a lost commit race as one :class:`StoreError` line."""
        deltalake = _delta()
        try:
            return fn()
        except (StoreError, deltalake.exceptions.CommitFailedError):
            raise
        except (deltalake.exceptions.DeltaError, OSError, pa.ArrowException) as e:
            raise StoreError(f"{self.uri(name)}: {what} failed ({one_line(e)}); "
                             f"repair: asd scores {self.out.uri} --repair") from e

    # ------------------------------------------------------------ write
    def _commit_properties(self, app_id: str | None, metadata: dict[str, Any] | None = None):
        deltalake = _delta()
        txn = [deltalake.Transaction(app_id, 1)] if app_id else None
        return deltalake.CommitProperties(custom_metadata=metadata, app_transactions=txn)

    def create(self, name: str, schema: pa.Schema, partition_by: list[str] | None) -> Any:
        """The table, created empty when it does not exist yet. Created on its own
        (version 0, no rows) so that two runs racing to write the first rows both see
        one table and Delta's conflict checks apply between them."""
        dt = self.load(name)
        if dt is not None:
            return dt
        try:
            _delta().DeltaTable.create(self.uri(name), schema, mode="ignore", partition_by=partition_by,
                                       storage_options=self.options, configuration=TABLE_CONFIG)
        except Exception as e:  # noqa: BLE001 - another run created it first: fine if it is there now
            if self.load(name) is None:
                raise StoreError(f"{self.uri(name)}: cannot be created ({one_line(e)})") from e
        return self.load(name)

    def committed(self, name: str, app_id: str, dt: Any | None = None) -> bool:
        """Whether ``name`` already holds the transaction ``app_id``."""
        dt = dt if dt is not None else self.load(name)
        return dt is not None and dt.transaction_version(app_id) is not None

    def _retry(self, name: str, what: str, attempt_fn: Callable[[], bool]) -> bool:
        deltalake = _delta()
        for attempt in range(COMMIT_ATTEMPTS):
            try:
                return attempt_fn()
            except deltalake.exceptions.CommitFailedError as e:
                wait = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())
                log.info("%s: %s lost a commit race (%s); again in %.2f s", self.uri(name), what, one_line(e), wait)
                time.sleep(wait)
        raise StoreError(f"{self.uri(name)}: {what} lost {COMMIT_ATTEMPTS} commit races in a row; run again")

    def append(self, name: str, table: pa.Table, *, app_id: str | None, partition_by: list[str] | None) -> bool:
        """Append ``table`` (new columns are added to the schema) in one commit that
        carries ``app_id``; ``False`` (nothing written) when the table already has it."""

        def attempt() -> bool:
            dt = self.create(name, table.schema, partition_by)
            if app_id and self.committed(name, app_id, dt):
                return False
            self.guard(name, "append", lambda: _delta().write_deltalake(
                dt, table, partition_by=partition_by, mode="append", schema_mode="merge",
                commit_properties=self._commit_properties(app_id)))
            return True

        return self._retry(name, "append", attempt)

    def overwrite(self, name: str, table: pa.Table, *, app_id: str | None, partition_by: list[str] | None) -> None:
        """Replace the whole table's contents (a repair or a migration) in one commit."""

        def attempt() -> bool:
            dt = self.load(name, check=False)
            self.guard(name, "overwrite", lambda: _delta().write_deltalake(
                dt if dt is not None else self.uri(name), table, partition_by=partition_by, mode="overwrite",
                schema_mode="overwrite", storage_options=None if dt is not None else self.options,
                commit_properties=self._commit_properties(app_id)))
            return True

        self._retry(name, "overwrite", attempt)

    def merge(self, name: str, source: pa.Table, *, predicate: str, app_id: str | None,
              partition_by: list[str], update_when: str | None = None) -> dict | None:
        """MERGE ``source`` (alias ``s``) into ``name`` (alias ``t``) on ``predicate``:
        matched rows are updated (only where ``update_when`` holds), others inserted.
        Creates the table from ``source`` when it does not exist. A MERGE that lost a
        commit race runs again on the new snapshot. Returns delta-rs's metrics, or
        ``None`` when the table already had ``app_id``."""
        result: dict[str, Any] = {}

        def attempt() -> bool:
            dt = self.create(name, source.schema, partition_by)
            if app_id and self.committed(name, app_id, dt):
                return False

            def run() -> dict:
                merger = dt.merge(source, predicate, source_alias="s", target_alias="t", merge_schema=True,
                                  streamed_exec=False, commit_properties=self._commit_properties(app_id))
                return merger.when_matched_update_all(predicate=update_when).when_not_matched_insert_all().execute()

            result.update(self.guard(name, "merge", run))
            return True

        return result if self._retry(name, "merge", attempt) else None

    # ------------------------------------------------------------ read
    def dataset(self, name: str, where: Any = None):
        """A ``pyarrow.dataset`` of the table's files (those ``where`` keeps: a SQL
        predicate or tuple filters on partition columns), or ``None``."""
        dt = self.load(name)
        if dt is None:
            return None
        return self.guard(name, "read", lambda: dt.to_pyarrow_dataset(file_pruning_predicate=where))

    def read(self, name: str, where: Any = None, columns: list[str] | None = None) -> pa.Table | None:
        """The rows of the files ``where`` selects (partition pruning), with ``columns``
        that exist in the table; ``None`` when the table does not exist."""
        ds = self.dataset(name, where)
        if ds is None:
            return None
        cols = None if columns is None else [c for c in columns if c in ds.schema.names]
        return self.guard(name, "read", lambda: ds.to_table(columns=cols))

    def n_rows(self, name: str) -> int:
        """Rows of the table from its log's file statistics (no data file is read)."""
        dt = self.load(name)
        if dt is None:
            return 0
        actions = pa.table(dt.get_add_actions(flatten=True))
        return int(pa.compute.sum(actions["num_records"]).as_py() or 0) if actions.num_rows else 0

    # ------------------------------------------------------------ maintenance
    def optimize(self, name: str, retain_hours: float = VACUUM_RETAIN_HOURS) -> dict[str, Any]:
        """Compact small files, checkpoint the log, vacuum files older than
        ``retain_hours`` that no version within that time references, drop expired logs."""
        dt = self.load(name)
        if dt is None:
            return {}
        compacted = self.guard(name, "compaction", lambda: dt.optimize.compact())
        dt = self.load(name)
        self._no_links(name)
        deleted = self.guard(name, "vacuum", lambda: dt.vacuum(
            retention_hours=int(retain_hours), dry_run=False, enforce_retention_duration=False))
        self.guard(name, "checkpoint", dt.create_checkpoint)
        self.guard(name, "log clean-up", dt.cleanup_metadata)
        return {"files_removed": compacted.get("numFilesRemoved", 0), "files_added": compacted.get("numFilesAdded", 0),
                "vacuumed": len(deleted), "version": dt.version()}

    def fsck(self, name: str) -> list[str]:
        """Drop from the table the data files its log names but that are gone (deleted
        by hand, a lifecycle rule); returns their paths. One listing of the table's
        folder, one commit."""
        deltalake = _delta()
        from deltalake.transaction import RemoveAction

        dt = self.load(name)
        if dt is None:
            return []
        base = self.path(name).rstrip("/") + "/"
        self.out.fs.invalidate_cache(self.path(name))
        present = {p[len(base):] for p in self.out.fs.find(self.path(name)) if p.startswith(base)}
        actions = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
        parts = dt.metadata().partition_columns
        now = int(time.time() * 1000)
        gone = [a for a in actions if unquote(a["path"]) not in present]
        if gone:
            removes = [RemoveAction(a["path"], True, now, a["size_bytes"],
                                    {c: a.get(f"partition.{c}") for c in parts} if parts else None) for a in gone]
            self.guard(name, "repair", lambda: dt.create_write_transaction(
                removes, mode="append", schema=dt.schema(), partition_by=parts or None,
                commit_properties=deltalake.CommitProperties(custom_metadata={"asd": "repair: missing files"})))
        return [a["path"] for a in gone]

    def _no_links(self, name: str) -> None:
        """Vacuum lists the table's folder: on a local disk a symlink inside it could
        lead the listing (and the deletion) elsewhere, so none may be there."""
        if self.out.protocol != "file":
            return
        for d, dirs, files in os.walk(self.path(name)):
            for n in dirs + files:
                if os.path.islink(os.path.join(d, n)):
                    raise StoreError(f"{self.out.uri_of(os.path.join(d, n))} is a symbolic link inside table "
                                     f"{self.uri(name)}: not vacuumed (remove the link)")
