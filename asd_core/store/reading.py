"""The store's read side and its paths: run records, a run's rows and outputs, the
latest rows, the partition-pruned incremental lookup. :class:`asd_core.store.runstore.RunStore`
adds the writing side.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .. import results
from ..paths import check_segment
from ..storage import Location, read_bytes, write_bytes
from . import layout, legacy
from .layout import (
    ALERTS,
    EVALUATED,
    LATEST,
    LEASE,
    METRICS,
    RUNS,
    SCORES,
    STAGING,
    app_id,
    finite,
)
from .rows import (
    CLIP_PART,
    EVALUATED_RUN,
    RUN_DATE,
    clip_parts,
    json_default,
    key_filter,
    plain,
)
from .tables import StoreError, Tables, one_line

log = logging.getLogger("asd_core.runstore")


def _sql(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


class StoreReader:
    """One scoring output (``OUT_URI``), read side."""

    def __init__(self, out: Location, *, optimize_every: int | None = None):
        self.out = out
        self.root = out.path.rstrip("/")
        self.tables = Tables(out)
        self.optimize_every = layout.OPTIMIZE_EVERY if optimize_every is None else optimize_every
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
