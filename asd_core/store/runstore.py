"""One scoring output (``OUT_URI``) as Delta tables: a run's life from staging to the
committed night, the incremental lookup, recovery of a killed run, the readers, and
maintenance (compaction, vacuum, repair). Layout and protocol: :mod:`asd_core.store`."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .. import results
from ..paths import check_segment, is_segment
from ..results import STATUS_ERROR, STATUS_OK
from ..runs import DEFAULT_LEASE_TTL_S
from ..storage import Location, read_bytes, write_bytes
from . import legacy, upkeep
from .rows import (
    CLIP_PART,
    EVALUATED_RUN,
    RUN_DATE,
    alert_rows,
    clip_parts,
    fields,
    history_rows,
    json_default,
    key_filter,
    latest_rows,
    plain,
    read_tables,
    with_fields,
    with_run_date,
    write_table,
)
from .tables import StoreError, Tables, one_line

log = logging.getLogger("asd_core.runstore")

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


class PublishError(RuntimeError):
    """The staged rows do not answer the listed clips one to one: nothing is published."""


class LeaseLost(RuntimeError):
    """This run's lease expired and another run took it over: this run commits nothing."""


def app_id(run_id: str) -> str:
    """The Delta transaction id a run's commits carry (one per table)."""
    return f"asd-run:{run_id}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _sql(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


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


class RunStore:
    """One scoring output (``OUT_URI``). See :mod:`asd_core.store` for the tables and
    the commit protocol."""

    def __init__(self, out: Location, *, optimize_every: int | None = None):
        self.out = out
        self.root = out.path.rstrip("/")
        self.tables = Tables(out)
        self.optimize_every = OPTIMIZE_EVERY if optimize_every is None else optimize_every
        self._pending: dict[str, dict[str, Any]] = {}  # run id -> rows and outputs staged by this process

    # ------------------------------------------------------------ paths
    def p(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def uri(self, path: str) -> str:
        return self.out.uri_of(path)

    def stage_dir(self, run_id: str) -> str:
        return self.p(STAGING, check_segment(run_id, "run id"))

    def run_dir(self, run_id: str, date: str) -> str:
        """The history partition a run's rows are in (shared with the day's other runs)."""
        check_segment(run_id, "run id")
        return self.p(SCORES, f"{RUN_DATE}={check_segment(date, 'date')}")

    def record_path(self, run_id: str) -> str:
        """Where the former layout kept a run's record (read by :mod:`legacy`)."""
        return self.p("runs", f"{check_segment(run_id, 'run id')}.json")

    def _confined(self, path: str) -> str:
        """``path`` when it lies inside OUT (on a local disk: also once symlinks are resolved)."""
        from ..paths import is_within

        ok = is_within(path, self.root)
        if ok and self.out.protocol == "file":
            real, root = os.path.realpath(path), os.path.realpath(self.root)
            ok = real == root or real.startswith(root.rstrip("/") + "/")
        if not ok:
            raise StoreError(f"{self.uri(path)} leads outside {self.out.uri}: not used")
        return path

    def _exists(self, path: str) -> bool:
        self.out.fs.invalidate_cache(path)  # delta-rs writes beside s3fs: its listings cache is stale
        return self.out.fs.exists(path)

    def _rm(self, path: str) -> None:
        self._confined(path)
        try:
            self.out.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass

    def _mv(self, src: str, dst: str) -> None:
        """Move a file or a folder inside OUT (a parent folder is made on a local disk)."""
        self._confined(src)
        if self.out.protocol == "file":
            os.makedirs(posixpath.dirname(dst), exist_ok=True)
        self.out.fs.mv(src, self._confined(dst), recursive=True)

    def _write_json(self, path: str, obj: dict) -> None:
        """Written whole or not at all (a local file is renamed into place)."""
        data = json.dumps(finite(obj), indent=2, default=json_default).encode()
        if self.out.protocol == "file":
            tmp = f"{path}.tmp-{os.getpid()}"
            write_bytes(self.out, tmp, data)
            os.replace(tmp, path)
        else:
            write_bytes(self.out, path, data)

    def _read_json(self, path: str) -> dict | None:
        try:
            obj = json.loads(read_bytes(self.out, self._confined(path)))
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise StoreError(f"{self.uri(path)} is not JSON ({one_line(e)})") from e
        if not isinstance(obj, dict):
            raise StoreError(f"{self.uri(path)} is not a JSON object")
        return obj

    def _step(self, name: str) -> None:
        """A point of the commit (see :data:`STEPS`); tests stop a run here."""

    # ------------------------------------------------------------ layout
    def layout(self) -> str:
        """``delta``; ``legacy`` (written by the former one-file index, not converted
        yet); ``migrating`` (a conversion was interrupted); ``empty``."""
        if self._exists(self.p(legacy.LEGACY)) and not self._exists(self.p(legacy.LEGACY, legacy.MIGRATED)):
            return "migrating"
        if self.tables.load(RUNS, check=False) is not None:
            return "delta"
        return "legacy" if legacy.present(self) else "empty"

    def migrate(self) -> dict | None:
        """Convert an output of the former layout (see :func:`legacy.migrate`); ``None``
        when there is nothing to convert."""
        return legacy.migrate(self)

    def _reading(self) -> str:
        lay = self.layout()
        if lay == "migrating":
            raise StoreError(f"{self.out.uri} is being converted to Delta tables (interrupted?): run "
                             f"asd scores {self.out.uri} --migrate")
        return lay

    # ------------------------------------------------------------ the lease
    def lease_holder(self) -> dict | None:
        """The lease's content (``owner``, ``expires_at_epoch``), ``None`` without one."""
        try:
            held = json.loads(read_bytes(self.out, self.p(LEASE)))
        except FileNotFoundError:
            return None
        except ValueError:
            return {"owner": "?", "expires_at_epoch": 0.0}
        return held if isinstance(held, dict) else {"owner": "?", "expires_at_epoch": 0.0}

    def _fence(self, run_id: str) -> None:
        held = self.lease_holder()
        if held and held.get("owner") != run_id and float(held.get("expires_at_epoch") or 0) > time.time():
            raise LeaseLost(f"run {run_id}: the lease {self.uri(self.p(LEASE))} is now held by run "
                            f"{held.get('owner')!r} (this run's lease expired: raise --lease-ttl-hours); "
                            "nothing of this run is committed")

    # ------------------------------------------------------------ registry
    def is_published(self, run_id: str) -> bool:
        check_segment(run_id, "run id")
        runs = self.tables.load(RUNS)
        if runs is not None:
            return self.tables.committed(RUNS, app_id(run_id), runs)
        return self._exists(self.record_path(run_id))

    def record(self, run_id: str) -> dict | None:
        check_segment(run_id, "run id")
        if self._reading() == "legacy":
            return legacy.record(self, run_id)
        t = self.tables.read(RUNS, columns=["run_id", "record"])
        if t is None:
            return None
        t = plain(t).filter(pc.equal(plain(t)["run_id"], run_id))
        return json.loads(t["record"][0].as_py()) if t.num_rows else None

    def runs(self) -> list[dict[str, Any]]:
        """Records of every published run, oldest first (the whole registry: for
        reports, not for the nightly path)."""
        if self._reading() == "legacy":
            return legacy.records(self)
        t = self.tables.read(RUNS, columns=["record"])
        recs = [json.loads(r) for r in t["record"].to_pylist()] if t is not None else []
        return sorted(recs, key=lambda m: (m.get("published_at", ""), m["run_id"]))

    def read_run(self, record: dict[str, Any]) -> pa.Table:
        """The score rows one published run wrote (from its history partition)."""
        if record.get("format", 1) < 3:
            return legacy.read_run(self, record)
        rid, date = check_segment(record["run_id"], "run id"), str(record["date"])
        t = self.tables.read(SCORES, [(RUN_DATE, "=", date)])
        if t is None:
            return results.empty_scores()
        t = plain(t)
        return results.conform(t.filter(pc.equal(t["run_id"], rid)))

    def read_output(self, kind: str, record: dict[str, Any]) -> pa.Table | None:
        """A published run's ``metrics``, ``evaluated`` or ``alerts`` rows (``None`` when
        the run has none)."""
        if kind not in (METRICS, EVALUATED, ALERTS):
            raise ValueError(f"unknown output {kind!r}")
        if record.get("format", 1) < 3:
            return legacy.read_output(self, kind, record)
        rid, date = check_segment(record["run_id"], "run id"), str(record["date"])
        t = self.tables.read(kind, [(RUN_DATE, "=", date)])
        if t is None:
            return None
        t = plain(t)
        return t.filter(pc.equal(t[EVALUATED_RUN if kind == EVALUATED else "run_id"], rid))

    def latest(self) -> pa.Table:
        """Each clip's latest row (per split, models URI and K), conformed, by path. Reads
        the whole table: for readers and tests, never on the nightly path."""
        if self._reading() == "legacy":
            return legacy.latest(self)
        t = self.tables.read(LATEST)
        return results.empty_scores() if t is None else results.conform(plain(t)).sort_by([("path", "ascending")])

    def count_latest(self) -> int:
        """Rows of the latest table, from its log (no data read)."""
        return self.tables.n_rows(LATEST)

    def scan(self, name: str, run_id: str | None = None) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """``(schema, batches)`` of a whole table (``latest``) or of one run's rows
        (``scores``, ``run_id``), every column, streamed: what ``asd scores`` writes."""
        if run_id is not None:
            record = self.record(run_id)
            if record is None:
                raise FileNotFoundError(f"run {run_id!r} is not published under {self.out.uri}")
            if record.get("format", 1) < 3:
                t = self.read_run(record)
                return t.schema, iter(t.to_batches())
            name = SCORES
            ds = self.tables.dataset(SCORES, [(RUN_DATE, "=", str(record["date"]))])
        elif self._reading() == "legacy":
            t = self.latest()
            return t.schema, iter(t.to_batches())
        else:
            ds = self.tables.dataset(name)
        if ds is None:
            t = results.empty_scores()
            return t.schema, iter(())
        schema = plain(ds.schema.empty_table()).schema

        def batches() -> Iterator[pa.RecordBatch]:
            it = iter(ds.to_batches())
            while True:
                b = self.tables.guard(name, "read", lambda: next(it, None))
                if b is None:
                    return
                t = plain(pa.Table.from_batches([b]))
                if run_id is not None:
                    t = t.filter(pc.equal(t["run_id"], run_id))
                yield from t.cast(schema).to_batches()

        return schema, batches()

    # ------------------------------------------------------------ the incremental lookup
    def settled(
        self, items: Sequence[dict[str, Any]], *, split: str, models_uri: str, n_masks: int | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``(carried, todo)``: the latest rows that settle ``items`` (same path, size,
        fingerprint and model id, and a final status: an ok row or an error a retry
        cannot fix) and the items still to score. Reads only the ``latest`` partitions
        the items' clips can be in."""
        if not items:
            return [], []
        keys = pa.table({"path": pa.array([it["path"] for it in items], pa.string()),
                         "attributes": pa.array([it.get("attributes") for it in items], pa.string())})
        parts = sorted(set(clip_parts(keys).to_pylist()))
        latest = self.tables.read(LATEST, [(CLIP_PART, "in", parts)], columns=list(results.SCORE_COLUMNS))
        prev: dict[str, dict] = {}
        if latest is not None and latest.num_rows:
            found = results.conform(key_filter(latest, keys["path"], split, models_uri, n_masks))
            prev = {r["path"]: r for r in found.to_pylist()}
        carried, todo = [], []
        for it in items:
            p = prev.get(it["path"])
            if (
                p is not None
                and (p["size"] if p["size"] is not None else -1) == it["size"]
                and (p["fingerprint"] or "") == it["fingerprint"]  # rows from before fingerprints: score again
                and (p["model_id"] or "") == it["model_id"]
                and results.is_final(p["status"], p["error_reason"])
            ):
                carried.append(p)
            else:
                todo.append(it)
        return carried, todo

    # ------------------------------------------------------------ one run
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


def finite(obj: Any) -> Any:
    """``obj`` with NaN and infinite floats as ``None`` (strict JSON for every reader)."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if isinstance(obj, float) and not (obj == obj and abs(obj) != float("inf")):
        return None
    return obj


def read_tables_raw(loc: Location, path: str) -> pa.Table:
    import pyarrow.parquet as pq

    with loc.fs.open(path, "rb") as f:
        return pq.read_table(f)
