"""One scoring output (``OUT_URI``) as Delta tables: a run's life from staging to the
committed night, the incremental lookup, recovery of a killed run, the readers, and
maintenance (compaction, vacuum, repair). Layout and protocol: :mod:`asd_core.store`."""

from __future__ import annotations

import contextlib
import logging
import posixpath
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from .. import results
from ..paths import check_segment, is_segment
from ..results import STATUS_ERROR, STATUS_OK
from ..runs import DEFAULT_LEASE_TTL_S
from ..storage import Location, read_bytes, write_bytes
from . import upkeep
from .layout import (  # noqa: F401  the layout's names, importable from here
    ALERTS,
    EVALUATED,
    INTENT,
    LATEST,
    LEASE,
    METRICS,
    MIGRATE_LATEST,
    OPTIMIZE_EVERY,
    OUTPUTS,
    OWNER,
    PARTITIONS,
    RECORD_SCHEMA,
    REPAIR,
    RUNS,
    SCORES,
    STAGING,
    STEPS,
    TABLES,
    app_id,
    finite,
    record_row,
)
from .reading import StoreReader, _sql
from .rows import (
    CLIP_PART,
    EVALUATED_RUN,
    alert_rows,
    fields,
    history_rows,
    latest_rows,
    read_tables,
    with_fields,
    with_run_date,
    write_table,
)
from .tables import StoreError, one_line

log = logging.getLogger("asd_core.runstore")

class PublishError(RuntimeError):
    """The staged rows do not answer the listed clips one to one: nothing is published."""


class LeaseLost(RuntimeError):
    """This run's lease expired and another run took it over: this run commits nothing."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@contextlib.contextmanager
def release_on_signals() -> Iterator[None]:
    """SIGTERM (``ray job stop``, a scheduler) raises :class:`KeyboardInterrupt` like
    SIGINT does, so the ``with`` blocks around a run (its lease, its staging) are left
    in order instead of the process dying with them held. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class RunStore(StoreReader):
    """One scoring output (``OUT_URI``). See :mod:`asd_core.store` for the tables and
    the commit protocol."""

    def _fence(self, run_id: str) -> None:
        held = self.lease_holder()
        if held and held.get("owner") != run_id and float(held.get("expires_at_epoch") or 0) > time.time():
            raise LeaseLost(f"run {run_id}: the lease {self.uri(self.p(LEASE))} is now held by run "
                            f"{held.get('owner')!r} (this run's lease expired: raise --lease-ttl-hours); "
                            "nothing of this run is committed")

    # ------------------------------------------------------------ registry
    def begin(self, run_id: str, *, ttl_s: float = DEFAULT_LEASE_TTL_S) -> str:
        """A clean staging folder for ``run_id``; returns its path. Converts an output of
        the former layout first, and finishes or discards what killed runs left."""
        rid = check_segment(run_id, "run id")
        if self.layout() in ("legacy", "migrating"):
            self.migrate()
        self.recover(rid)
        for name in TABLES:  # a damaged table stops the run here, before the night's work, in one line
            self.tables.load(name)
        if self.is_published(rid):
            raise ValueError(f"run {rid!r} is already published under {self.out.uri}; runs are never rewritten")
        stage = self.stage_dir(rid)
        if self._exists(stage):
            self._rm(stage)
        if self.out.protocol == "file":
            self.out.fs.makedirs(stage, exist_ok=True)
        now = time.time()
        self._write_json(posixpath.join(stage, OWNER), {"run_id": rid, "started_at": _now(),
                                                        "expires_at_epoch": now + ttl_s})
        self._pending.pop(rid, None)
        return stage

    def recover(self, current: str | None = None) -> None:
        """Finish every night whose commit record is staged (a run killed while
        committing) and remove staging that can no longer be committed: the current
        run's own, every other one while ``current`` holds the lease, and any whose
        owner's time is up."""
        root = self.p(STAGING)
        if not self._exists(root):
            return
        held = self.lease_holder()
        holding = current is not None and held is not None and held.get("owner") == current
        for d in sorted(self.out.fs.ls(root, detail=False, refresh=True)):
            name = posixpath.basename(d.rstrip("/"))
            if not is_segment(name):
                log.warning("%s is not a run's staging folder; left alone", self.uri(d))
                continue
            stage = self._confined(self.stage_dir(name))
            intent = self._read_intent(name)
            if intent is not None:
                log.warning("run %s stopped while committing; finishing its commit", name)
                try:
                    self._commit_night(name, intent, None)
                except (FileNotFoundError, StoreError):
                    if not self.is_published(name):  # another process may have just finished it
                        raise
                continue
            owner = self._owner(name)
            if name == current or holding or owner is None or float(owner.get("expires_at_epoch") or 0) < time.time():
                log.warning("removing %s, left by a run that stopped before committing", self.uri(stage))
                self._rm(stage)

    def _owner(self, name: str) -> dict | None:
        try:
            return self._read_json(posixpath.join(self.stage_dir(name), OWNER))
        except StoreError:
            return None

    def _intent_path(self, run_id: str) -> str:
        return posixpath.join(self.stage_dir(run_id), OUTPUTS, INTENT)

    def _read_intent(self, name: str) -> dict | None:
        path = self._intent_path(name)
        try:
            intent = self._read_json(path)
        except StoreError as e:
            raise StoreError(f"{e}: a run's commit record; repair: asd scores {self.out.uri} --repair "
                             "(sets that run aside uncommitted)") from e
        if intent is None:
            return None
        rec = intent.get("record")
        if intent.get("run_id") != name or not isinstance(rec, dict) or rec.get("run_id") != name:
            raise StoreError(f"{self.uri(path)} is not the commit record of run {name!r}; repair: asd scores "
                             f"{self.out.uri} --repair (sets that run aside uncommitted)")
        return intent

    def _staged_parts(self, stage: str) -> list[str]:
        if not self._exists(stage):
            return []
        return sorted(self._confined(p) for p in self.out.fs.ls(stage, detail=False, refresh=True)
                      if p.endswith(".parquet"))

    def publish(self, run_id: str, expected_paths: Sequence[str], manifest: dict[str, Any]) -> tuple[pa.Table, dict]:
        """Check the staged rows (one per expected path, each with a status) and return
        them with the run's record. Nothing is visible until :meth:`finish`. Raises
        :class:`PublishError` when the check fails (the staging is left to look at)."""
        rid = check_segment(run_id, "run id")
        stage = self.stage_dir(rid)
        new = read_tables(self.out, self._staged_parts(stage))
        paths = new["path"].to_pylist()
        expected = set(expected_paths)
        if not set(new["status"].to_pylist()) <= {STATUS_OK, STATUS_ERROR}:
            raise PublishError(f"run {rid}: rows left without a status; not published")
        if len(paths) != len(expected) or set(paths) != expected:
            missing, extra = expected - set(paths), len(paths) - len(set(paths))
            raise PublishError(
                f"run {rid}: {len(paths)} rows staged for {len(expected)} clips ({len(missing)} missing, "
                f"{extra} duplicated); not published, staging left at {self.uri(stage)}"
            )
        date = check_segment(manifest.get("date") or datetime.now(timezone.utc).strftime("%Y-%m-%d"), "date")
        reasons: dict[str, int] = {}
        for r, s in zip(new["error_reason"].to_pylist(), new["status"].to_pylist(), strict=True):
            if s == STATUS_ERROR:
                reasons[r] = reasons.get(r, 0) + 1
        n_error = sum(reasons.values())
        record = {
            **manifest,
            "format": 3,
            "run_id": rid,
            "date": date,
            "scores_path": self.run_dir(rid, date),
            "tables": {t: self.tables.uri(t) for t in TABLES},
            "n_rows": new.num_rows,
            "n_ok": new.num_rows - n_error,
            "n_error": n_error,
            "errors_by_reason": dict(sorted(reasons.items())),
            "published_at": _now(),
        }
        self._pending[rid] = {"rows": new, "outputs": {}, "submission": {}}
        self._step("checked")
        return new, record

    def _stage_out(self, run_id: str, name: str, table: pa.Table) -> None:
        write_table(self.out, posixpath.join(self.stage_dir(run_id), OUTPUTS, f"{name}.parquet"), table)
        self._pending.setdefault(run_id, {"outputs": {}, "submission": {}})["outputs"][name] = table

    def stage_output(self, record: dict[str, Any], kind: str, table: pa.Table) -> str:
        """Stage a run's ``metrics`` or ``evaluated`` rows (committed by :meth:`finish`);
        returns the table's URI."""
        if kind not in (METRICS, EVALUATED):
            raise ValueError(f"unknown output {kind!r}")
        self._stage_out(record["run_id"], kind, table)
        return self.tables.uri(kind)

    def write_alerts(self, run_id: str, rows: pa.Table) -> tuple[str, pa.Table]:
        """Stage the run's alerts (:func:`asd_core.store.rows.alert_rows`: clips over
        their threshold, then sensor alerts); written even when empty. Returns the
        alerts table's URI and the rows."""
        alerts = alert_rows(rows)
        self._stage_out(check_segment(run_id, "run id"), ALERTS, alerts)
        return self.tables.uri(ALERTS), alerts

    def stage_submission(self, record: dict[str, Any], files: dict[str, str]) -> str | None:
        """Stage the run's DCASE submission CSVs (copied to ``submission/<run_id>/`` at the commit)."""
        rid = check_segment(record["run_id"], "run id")
        for name, text in files.items():
            write_bytes(self.out, posixpath.join(self.stage_dir(rid), OUTPUTS, "submission",
                                                 check_segment(name, "submission file")), text.encode())
        self._pending.setdefault(rid, {"outputs": {}, "submission": {}})["submission"].update(files)
        return self.uri(self.p("submission", rid)) if files else None

    def finish(self, record: dict[str, Any], summary: dict[str, Any]) -> None:
        """Commit the night: write its commit record (from then on the night is
        committed: a run killed later is finished by the next one), then the tables
        (history, metrics, evaluated, alerts, latest), the submission files and the run
        record, each commit carrying the run's Delta transaction id."""
        rid = check_segment(record["run_id"], "run id")
        pend = self._pending.get(rid) or {"outputs": {}, "submission": {}}
        try:
            self._fence(rid)
        except LeaseLost:
            self.abandon(rid)
            raise
        self._step("outputs")
        intent = {"format": 1, "run_id": rid, "record": {**record, "summary": summary},
                  "outputs": sorted(pend["outputs"]), "submission": sorted(pend["submission"])}
        self._write_json(self._intent_path(rid), intent)  # the commit point
        self._step("intent")
        self._commit_night(rid, intent, pend)
        self._pending.pop(rid, None)
        if self.optimize_every > 0:
            self._maybe_optimize()

    def abandon(self, run_id: str) -> None:
        """Remove a stopped run's staging unless its commit record is written (then the
        next run finishes the commit)."""
        rid = check_segment(run_id, "run id")
        self._pending.pop(rid, None)
        if not self._exists(self._intent_path(rid)):
            self._rm(self.stage_dir(rid))

    def _commit_night(self, rid: str, intent: dict, pend: dict | None, *, staged: bool = True,
                      latest: bool = True) -> None:
        """Commit (or finish committing) run ``rid`` from memory (``pend``) or from its
        staging folder. Every step is skipped when its table already holds the run's
        transaction, so it can be repeated after a kill at any point."""
        rec = intent["record"]
        aid, date = app_id(rid), check_segment(rec["date"], "date")
        out_dir = posixpath.join(self.stage_dir(rid), OUTPUTS)

        def staged_out(name: str) -> pa.Table | None:
            if pend is not None:
                return pend["outputs"].get(name)
            if name not in intent.get("outputs", []):
                return None
            return read_tables_raw(self.out, self._confined(posixpath.join(out_dir, f"{name}.parquet")))

        rows = pend["rows"] if pend is not None else read_tables(self.out, self._staged_parts(self.stage_dir(rid)))
        found = fields(rows["attributes"])  # template and manifest fields, parsed once for scores and latest
        self.tables.append(SCORES, history_rows(rows, date, found), app_id=aid, partition_by=PARTITIONS[SCORES])
        self._step(SCORES)
        for kind in (METRICS, EVALUATED, ALERTS):
            t = staged_out(kind)
            if t is not None:
                if kind == EVALUATED:
                    t = with_fields(results.conform(t))
                    t = t.append_column(EVALUATED_RUN, pa.array([rid] * t.num_rows, pa.string()))
                elif kind == ALERTS:
                    t = with_fields(t)
                self.tables.append(kind, with_run_date(t, date), app_id=aid, partition_by=PARTITIONS[kind])
            self._step(kind)
        if latest:
            self.merge_latest(rows, aid, found)
        self._step(LATEST)
        names = intent.get("submission", [])
        for name in names:
            check_segment(name, "submission file")
            dest = self.p("submission", rid, name)
            if pend is not None:
                write_bytes(self.out, dest, pend["submission"][name].encode())
            else:
                src = self._confined(posixpath.join(out_dir, "submission", name))
                if self._exists(src):
                    write_bytes(self.out, dest, read_bytes(self.out, src))
                elif not self._exists(dest):
                    raise StoreError(f"{self.uri(src)}: a staged submission file of run {rid} is missing")
        self._step("submission")
        self.tables.append(RUNS, record_row(rec), app_id=aid, partition_by=None)
        self._step(RUNS)
        if staged:
            self._rm(self.stage_dir(rid))
        self._step("done")

    def merge_latest(self, rows: pa.Table, aid: str | None, found: dict | None = None) -> dict | None:
        """MERGE a run's rows into ``latest`` on (path, split, models URI, K), naming the
        partitions the rows live in; a row replaces the latest one only when it was
        scored later (a run that outlived its lease never puts back older scores)."""
        if rows.num_rows == 0:
            return None
        src = latest_rows(rows, found)
        parts = ", ".join(_sql(p) for p in sorted(set(src[CLIP_PART].to_pylist())))
        predicate = (f"t.{CLIP_PART} IN ({parts}) AND t.{CLIP_PART} = s.{CLIP_PART} AND t.path = s.path "
                     "AND coalesce(t.split, '') = coalesce(s.split, '') "
                     "AND coalesce(t.models_uri, '') = coalesce(s.models_uri, '') "
                     "AND coalesce(t.n_masks, 0) = coalesce(s.n_masks, 0)")
        return self.tables.merge(LATEST, src, predicate=predicate, app_id=aid, partition_by=PARTITIONS[LATEST],
                                 update_when="t.scored_at IS NULL OR s.scored_at >= t.scored_at")

    # ------------------------------------------------------------ maintenance
    def _maybe_optimize(self) -> None:
        dt = self.tables.load(RUNS)
        if dt is None or (dt.version() + 1) % self.optimize_every:
            return
        try:
            done = self.optimize()
            log.info("compacted and vacuumed %s: %s", self.out.uri, done)
        except Exception as e:  # noqa: BLE001 - the night is committed; maintenance waits for the next time
            log.warning("automatic compaction of %s failed: %s", self.out.uri, one_line(e))

    def optimize(self, retain_hours: float | None = None) -> dict[str, dict]:
        """Compact, checkpoint and vacuum every table (see :func:`upkeep.optimize`)."""
        return upkeep.optimize(self, retain_hours)

    def repair(self, current: str | None = None) -> list[str]:
        """Make a damaged output usable again (see :func:`upkeep.repair`)."""
        return upkeep.repair(self, current)

    def rebuild_latest(self) -> int:
        """Rewrite ``latest`` from the history (see :func:`upkeep.rebuild_latest`)."""
        return upkeep.rebuild_latest(self)

    rebuild_index = rebuild_latest  # the former name (asd scores --rebuild-index)


def read_tables_raw(loc: Location, path: str) -> pa.Table:
    import pyarrow.parquet as pq

    with loc.fs.open(path, "rb") as f:
        return pq.read_table(f)
