"""The scoring output store: staging, check, publish, the run registry, the latest
row per clip (also the incremental index), alerts. Plain Parquet and JSON on any
fsspec filesystem; no Ray.

Layout under ``OUT_URI``::

    scores/date=<YYYY-MM-DD>/run=<run_id>/part-*.parquet   every run's rows (history, append-only)
    scores/date=.../run=<run_id>/_SUCCESS                   the run's manifest: written last, publishes it
    latest/scores.parquet     one row per clip and (split, models URI, K): its latest row
    runs/<run_id>.json        the run record (manifest + summary), the registry of published runs
    metrics/date=.../run=<run_id>/metrics.parquet   per (machine type, section, kind), one schema
    evaluated/date=.../run=<run_id>/evaluated.parquet   the rows the metrics were computed on
    alerts/<run_id>.parquet   this run's clips over their threshold
    submission/<run_id>/      DCASE submission CSVs
    _staging/<run_id>/        in-flight writes (never under scores/)
    _journal.json             the run being published (a crash between move and record is finished or rolled back)

Readers: ``latest/scores.parquet`` has each clip once; ``scores/`` is the history
(a clip scored again, e.g. after a read failure, has a row per run), partitioned by
the run's UTC date so that a query over one night or one month reads only those
folders (``hive_partitioning`` gives ``date`` and ``run`` columns).

Cost per run does not grow with the number of past runs: the index is one file (its
size grows with the number of clips, not of runs), the run-id check is one HEAD, and
only this run's files are moved. Only :meth:`RunStore.runs` (the report) lists the
registry.
"""

from __future__ import annotations

import io
import json
import logging
import os
import posixpath
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import results
from .paths import check_segment, is_within
from .results import STATUS_ERROR, STATUS_OK
from .storage import Location, read_bytes, write_bytes

log = logging.getLogger(__name__)

SUCCESS = "_SUCCESS"
LEASE = "scores/_lease.json"
STAGING = "_staging"
JOURNAL = "_journal.json"
LATEST = "latest/scores.parquet"

ALERT_COLUMNS = ("machine_type", "section", "domain", "anomaly_score", "threshold", "path", "file_name",
                 "attributes", "model_id", "model_kind", "run_id", "scored_at")


class PublishError(RuntimeError):
    """The staged rows do not answer the listed clips one to one: nothing is published."""


def write_table(loc: Location, path: str, table: pa.Table) -> None:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    write_bytes(loc, path, buf.getvalue().to_pybytes())


def read_tables(loc: Location, paths: Iterable[str]) -> pa.Table:
    """Score rows of Parquet files, conformed to the score schema (old files too)."""
    tables = []
    for p in paths:
        with loc.fs.open(p, "rb") as f:
            tables.append(results.conform(pq.read_table(f)))
    return pa.concat_tables(tables) if tables else results.empty_scores()


def index_key(row: dict[str, Any]) -> tuple:
    """What makes two rows estimates of the same thing: the clip, its split, the models
    and the mask count (runs of other kinds or K publish into the same output)."""
    return (row["path"], row.get("split") or "", row.get("models_uri") or "", row.get("n_masks") or 0)


def _key_column(table: pa.Table) -> pa.ChunkedArray:
    """:func:`index_key` of every row as one string column (vectorised)."""
    parts = [pc.fill_null(table[c].cast(pa.string()), "") for c in ("path", "split", "models_uri")]
    parts.append(pc.fill_null(table["n_masks"].cast(pa.string()), "0"))
    return pc.binary_join_element_wise(*parts, "\x1f")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class RunStore:
    """One scoring output (``OUT_URI``); one writer at a time (the lease at
    :data:`LEASE` is taken by the caller)."""

    def __init__(self, out: Location):
        self.out = out
        self.root = out.path.rstrip("/")
        self._latest: pa.Table | None = None  # this writer's copy of latest/scores.parquet

    # ------------------------------------------------------------ paths
    def p(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def run_dir(self, run_id: str, date: str) -> str:
        return self.p("scores", f"date={check_segment(date, 'date')}", f"run={check_segment(run_id, 'run id')}")

    def record_path(self, run_id: str) -> str:
        return self.p("runs", f"{check_segment(run_id, 'run id')}.json")

    def stage_dir(self, run_id: str) -> str:
        return self.p(STAGING, check_segment(run_id, "run id"))

    def _inside(self, path: str, what: str) -> str:
        """``path`` if it is under this output, else :class:`ValueError` (a record or
        journal naming files elsewhere is not read, moved or deleted). On a local disk
        the output may have been reached through another spelling (a symlink)."""
        real = os.path.realpath
        if not is_within(path, self.root) and not (
            self.out.protocol == "file" and is_within(real(path), real(self.root))
        ):
            raise ValueError(f"{what} names {self.uri(path)}, outside {self.out.uri}")
        return path

    def uri(self, path: str) -> str:
        return self.out.uri_of(path)

    def _exists(self, path: str) -> bool:
        return self.out.fs.exists(path)

    def _read_json(self, path: str) -> dict | None:
        try:
            return json.loads(read_bytes(self.out, path))
        except FileNotFoundError:
            return None

    def _write_json(self, path: str, obj: dict) -> None:
        write_bytes(self.out, path, json.dumps(obj, indent=2, default=json_default).encode())

    def _rm(self, path: str, recursive: bool = False) -> None:
        try:
            self.out.fs.rm(path, recursive=recursive)
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------ registry
    def is_published(self, run_id: str) -> bool:
        return self._exists(self.record_path(run_id))

    def record(self, run_id: str) -> dict | None:
        return self._read_json(self.record_path(run_id))

    def runs(self) -> list[dict[str, Any]]:
        """Records of every published run, oldest first (reads the registry: for reports,
        not for the nightly path)."""
        d = self.p("runs")
        if not self._exists(d):
            return []
        recs = [self._read_json(f) for f in sorted(self.out.fs.ls(d, detail=False)) if f.endswith(".json")]
        return sorted((r for r in recs if r), key=lambda m: (m.get("published_at", ""), m["run_id"]))

    def read_run(self, record: dict[str, Any]) -> pa.Table:
        """The score rows of one published run (only the files its manifest lists, all
        under this output: :class:`ValueError` otherwise)."""
        what = f"the record of run {record.get('run_id')!r}"
        d = record.get("scores_path") or self.p("scores", check_segment(record["run_id"], "run id"))  # old layout
        self._inside(d, what)
        return read_tables(self.out, [f"{d}/{check_segment(n, f'{what}: file')}" for n in record.get("files", [])])

    # ------------------------------------------------------------ the latest view / incremental index
    def latest(self) -> pa.Table:
        """Each clip's latest row (per split, models URI and K), conformed; builds the
        index from the published runs when it does not exist (an output written before
        the index, or a deleted index)."""
        if self._latest is not None:
            return self._latest
        path = self.p(LATEST)
        if self._exists(path):
            self._latest = read_tables(self.out, [path])
            return self._latest
        if not self._exists(self.p("scores")):
            return results.empty_scores()
        return self.rebuild_latest()

    def _fold(self, latest: pa.Table, new: pa.Table) -> pa.Table:
        """``latest`` with ``new``'s rows replacing those of the same key."""
        new = results.conform(new)
        latest = results.conform(latest)
        if latest.num_rows and new.num_rows:
            latest = latest.filter(pc.invert(pc.is_in(_key_column(latest), value_set=_key_column(new).combine_chunks())))
        return pa.concat_tables([latest, new]).sort_by([("path", "ascending")])

    def rebuild_latest(self) -> pa.Table:
        """Fold every published run (both layouts, oldest first) into a new index;
        writes missing run records. Reads every run: a one-off repair, not nightly."""
        manifests = []
        for f in sorted(self.out.fs.find(self.p("scores"), detail=False)) if self._exists(self.p("scores")) else []:
            if f.endswith(f"/{SUCCESS}"):
                m = self._read_json(f)
                if m:
                    m.setdefault("scores_path", posixpath.dirname(f))
                    manifests.append(m)
        manifests.sort(key=lambda m: (m.get("published_at", ""), m["run_id"]))
        latest = results.empty_scores()
        for m in manifests:
            latest = self._fold(latest, self.read_run(m))
            if not self.is_published(m["run_id"]):
                self._write_json(self.record_path(m["run_id"]), {**m, "recovered": True})
        if manifests:
            self._write_latest(latest)
            log.info("index %s rebuilt from %d published runs (%d rows)", self.uri(self.p(LATEST)), len(manifests),
                     latest.num_rows)
        return latest

    def settled(
        self, items: Sequence[dict[str, Any]], *, split: str, models_uri: str, n_masks: int | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``(carried, todo)``: the index rows that settle ``items`` (same path, size,
        fingerprint and model id, and a final status: an ok row or an error a retry
        cannot fix) and the items still to score."""
        latest = self.latest()
        paths = pa.array([it["path"] for it in items], pa.string())
        if latest.num_rows and len(paths):  # vectorised: only this run's paths reach Python
            same = pc.and_(pc.is_in(latest["path"], value_set=paths), pc.equal(pc.fill_null(latest["split"], ""), split))
            same = pc.and_(same, pc.equal(pc.fill_null(latest["models_uri"], ""), models_uri))
            same = pc.and_(same, pc.equal(pc.fill_null(latest["n_masks"], 0), n_masks or 0))
            latest = latest.filter(same)
        prev = {r["path"]: r for r in latest.to_pylist()} if len(paths) else {}
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
    def recover(self) -> None:
        """Finish or roll back a publish that a crash interrupted (see :data:`JOURNAL`)."""
        j = self._read_json(self.p(JOURNAL))
        if j is None:
            return
        rid, d = j["run_id"], self._inside(j["scores_path"], f"journal {self.uri(self.p(JOURNAL))}")
        manifest = self._read_json(f"{d}/{SUCCESS}")
        if manifest is None:  # crashed before the commit: the moved files are not a run
            log.warning("run %s crashed while publishing (no %s); its files at %s are removed", rid, SUCCESS,
                        self.uri(d))
            self._rm(d, recursive=True)
        else:
            log.warning("run %s was published but not indexed; finishing it", rid)
            self._write_latest(self._fold(self.latest(), self.read_run(manifest)))
            if not self.is_published(rid):
                self._write_json(self.record_path(rid), {**manifest, "recovered": True})
        self._rm(self.p(JOURNAL))

    def begin(self, run_id: str) -> str:
        """A clean staging folder for ``run_id``; returns its path."""
        self.recover()
        if self.is_published(run_id):
            raise ValueError(f"run {run_id!r} is already published under {self.out.uri}; runs are never rewritten")
        stage = self.stage_dir(run_id)
        # Under the output's lease no other run is staging: every staging folder is one
        # a stopped or crashed run left behind (its rows were never published).
        root = self.p(STAGING)
        for left in (self.out.fs.ls(root, detail=False) if self._exists(root) else []):
            log.warning("removing %s, left by a run that stopped before publishing", self.uri(left))
            self._rm(left, recursive=True)
        if self.out.protocol == "file":
            self.out.fs.makedirs(stage, exist_ok=True)
        return stage

    def publish(self, run_id: str, expected_paths: Iterable[str], manifest: dict[str, Any]) -> tuple[pa.Table, dict]:
        """Check the staged rows (one per expected path, each with a status), move them
        under ``scores/date=<date>/run=<run_id>/``, write ``_SUCCESS`` (the commit),
        fold them into the index. Returns the rows and the completed manifest.
        Raises :class:`PublishError` and publishes nothing when the check fails."""
        stage = self.stage_dir(run_id)
        files = sorted(p for p in (self.out.fs.find(stage) if self._exists(stage) else []) if p.endswith(".parquet"))
        new = read_tables(self.out, files)
        paths = new["path"].to_pylist()
        expected = set(expected_paths)
        if not set(new["status"].to_pylist()) <= {STATUS_OK, STATUS_ERROR}:
            raise PublishError(f"run {run_id}: rows left without a status; not published")
        if len(paths) != len(expected) or set(paths) != expected:
            missing, extra = expected - set(paths), len(paths) - len(set(paths))
            raise PublishError(
                f"run {run_id}: {len(paths)} rows staged for {len(expected)} clips ({len(missing)} missing, "
                f"{extra} duplicated); not published, staging left at {self.uri(stage)}"
            )
        latest = self.latest()  # before the commit: a first run must not find itself in a rebuild
        date = manifest.get("date") or datetime.now(timezone.utc).strftime("%Y-%m-%d")
        d = self.run_dir(run_id, date)
        self._write_json(self.p(JOURNAL), {"run_id": run_id, "scores_path": d, "started_at": _now()})
        if self.out.protocol == "file":
            self.out.fs.makedirs(d, exist_ok=True)
        names = []
        for i, f in enumerate(files):
            name = f"part-{i:05d}.parquet"
            self.out.fs.mv(f, f"{d}/{name}")
            names.append(name)
        self._rm(stage, recursive=True)
        status = new["status"].to_pylist()
        reasons: dict[str, int] = {}
        for r, s in zip(new["error_reason"].to_pylist(), status, strict=True):
            if s == STATUS_ERROR:
                reasons[r] = reasons.get(r, 0) + 1
        n_error = sum(reasons.values())
        manifest = {
            **manifest,
            "format": 2,
            "run_id": run_id,
            "date": date,
            "scores_path": d,
            "files": names,
            "n_rows": new.num_rows,
            "n_ok": new.num_rows - n_error,
            "n_error": n_error,
            "errors_by_reason": dict(sorted(reasons.items())),
            "published_at": _now(),
        }
        self._write_json(f"{d}/{SUCCESS}", manifest)  # the commit
        self._write_latest(self._fold(latest, new))
        return new, manifest

    def _write_latest(self, table: pa.Table) -> None:
        write_table(self.out, self.p(LATEST), table)
        self._latest = table

    def finish(self, manifest: dict[str, Any], summary: dict[str, Any]) -> None:
        """Write the run record (the registry entry) and close the journal."""
        self._write_json(self.record_path(manifest["run_id"]), {**manifest, "summary": summary})
        self._rm(self.p(JOURNAL))

    def run_output(self, kind: str, record: dict[str, Any], name: str) -> str:
        """Path of a per-run output table (``metrics``, ``evaluated``) partitioned like the scores."""
        date, run_id = check_segment(record["date"], "date"), check_segment(record["run_id"], "run id")
        return self.p(kind, f"date={date}", f"run={run_id}", name)

    def write_alerts(self, run_id: str, rows: pa.Table) -> tuple[str, pa.Table]:
        """``alerts/<run_id>.parquet``: the ok rows of ``rows`` whose decision is 1 (over
        the threshold), highest score first; written even when empty."""
        rows = results.conform(rows)
        over = rows.filter(pc.and_(pc.equal(rows["status"], STATUS_OK),
                                           pc.equal(rows["decision"], 1)))
        alerts = over.select(list(ALERT_COLUMNS)).sort_by([("anomaly_score", "descending")])
        path = self.p("alerts", f"{check_segment(run_id, 'run id')}.parquet")
        write_table(self.out, path, alerts)
        return path, alerts


def alert_summary(alerts: pa.Table) -> str:
    """``3 clips over threshold: press-07 2, fan-3 1`` (``no clip over threshold``)."""
    if alerts.num_rows == 0:
        return "no clip over threshold"
    counts: dict[str, int] = {}
    for mt in alerts["machine_type"].to_pylist():
        counts[mt] = counts.get(mt, 0) + 1
    parts = ", ".join(f"{mt} {n}" for mt, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{alerts.num_rows} clip{'s' if alerts.num_rows != 1 else ''} over threshold: {parts}"


def json_default(o: Any) -> Any:
    """``json.dumps`` default for run records and summaries: numpy numbers, NaN as null."""
    import math

    import numpy as np

    if isinstance(o, float | np.floating):
        return None if not math.isfinite(float(o)) else float(o)
    if isinstance(o, np.integer):
        return int(o)
    return str(o)


def to_bytes(table: pa.Table, fmt: str) -> bytes:
    """``table`` as Parquet or CSV bytes."""
    buf = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(table, buf)
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, buf)
    else:
        raise ValueError(f"format {fmt!r}: use parquet or csv")
    return buf.getvalue()
