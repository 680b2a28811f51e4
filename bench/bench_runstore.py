"""The run store's nightly overhead against the number of past nights.

    python -m bench.bench_runstore [--nights 60] [--clips 100] [--endpoint-url URL | --local DIR]
    python -m bench.bench_runstore --local DIR --nights 30 --clips 50000 --rows-only

Simulates ``asd score --pattern '{date}/{machine_type}/{name}.flac' --only date=<night>
--incremental`` without the scoring itself. Each night adds ``--clips`` clips of a new
date and times what the job does around the pipeline:

- lookup: :meth:`RunStore.begin` (recovery, run-id check) and :meth:`RunStore.settled`
  (the incremental lookup of the night's clips in the latest view);
- stage + commit: the scored rows written into the staging folder (what the Ray
  pipeline writes), :meth:`RunStore.publish` (the one-row-per-clip check),
  :meth:`RunStore.write_alerts`, :meth:`RunStore.finish` (the record; the commit of
  the whole night where the store commits there).

Default mode: each night writes ``--clips`` small objects under ``audio/<date>/`` and
lists them with :func:`asd_core.catalog.list_clips` (``--only``); the listing of the
whole archive and the former lookup (read every published run) are timed too.

``--rows-only``: no audio object is written or listed; the night's items are made in
memory (``--clips`` new clips of the night's date, plus the previous night's clips whose
read failed, retried and read this time, so the latest view is updated as well as
appended to); 2 % of a night's new clips are ``read_failed`` errors, 0.5 % ``silent``
(sensor alerts). The store does everything else, with a fresh :class:`RunStore` each
night (a nightly job is a new process: nothing it read the night before is still in
memory). The driver's peak RSS is sampled during every night. ``store overhead`` is
lookup + staging + commit (``total``); making the night's items is not counted.

Without ``--endpoint-url``/``--local`` an embedded S3 server (moto) on 127.0.0.1 is
used. The last lines are ``store overhead last/first: R.RRx`` (median of the last 5
nights' overhead over the first 5 nights') and ``latest rows: N``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
import uuid
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa

from asd_core import results
from asd_core.catalog import list_clips
from asd_core.runstore import RunStore, write_table
from asd_core.storage import ensure_bucket, open_location, write_bytes

PATTERN = "{date}/{machine_type}/{name}.flac"
TYPES = ("press-07", "press-08", "fan-3", "pump-1")
READ_FAILED, SILENT = 0.02, 0.005  # shares of a rows-only night's rows


class PeakRss:
    """The process's peak resident memory since :meth:`reset`, sampled every 20 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.now())

    def reset(self) -> None:
        self.peak = self.now()

    def stop(self) -> None:
        self._stop.set()


def _rows(listed, data, run_id: str, rng) -> list[dict]:
    rows = []
    for c in listed:
        s = float(rng.gamma(2.0, 1.0))
        rows.append({"path": data.uri_of(c.path), "file_name": c.path.rsplit("/", 1)[-1],
                     "machine_type": c.machine_type, "split": "test", "attributes": c.attributes_json(),
                     "size": c.size, "fingerprint": c.fingerprint, "model_id": f"unet-{c.machine_type}",
                     "model_kind": "unet", "models_uri": "s3://models", "status": "ok", "anomaly_score": s,
                     "threshold": 5.0, "decision": int(s > 5.0), "n_tiles": 9, "run_id": run_id})
    return rows


# ---------------------------------------------------------------- --rows-only
def _night_items(data_uri: str, d: str, n: int) -> list[dict]:
    """The night's ``n`` new clips of date ``d`` as pipeline items (what ``clip_items`` gives)."""
    items = []
    for i in range(n):
        mt = TYPES[i % len(TYPES)]
        name = str(100000 + i)
        items.append({"path": f"{data_uri}/{d}/{mt}/{name}.flac", "file_name": f"{name}.flac", "machine_type": mt,
                      "split": "test", "attributes": json.dumps({"date": d, "name": name}, sort_keys=True),
                      "size": 160_000 + i % 977, "fingerprint": f"etag:{d}-{i}", "model_id": f"unet-{mt}",
                      "model_kind": "unet", "models_uri": "s3://models", "n_masks": None, "status": None})
    return items


def _scored(todo: list[dict], run_id: str, rng, retried: int = 0) -> pa.Table:
    """What the pipeline would stage for ``todo``: ok rows with a score, some read
    failures and silent clips (vectorised: the bench times the store, not this). The
    first ``retried`` items (yesterday's read failures) are read this time."""
    n = len(todo)
    u = rng.random(n)
    u[:retried] = 1.0
    status = np.where(u < READ_FAILED + SILENT, "error", "ok")
    reason = np.where(u < READ_FAILED, "read_failed", np.where(u < READ_FAILED + SILENT, "silent", None))
    score = rng.gamma(2.0, 1.0, n)
    ok = status == "ok"
    cols = {c: [it.get(c) for it in todo] for c in ("path", "file_name", "machine_type", "split", "attributes",
                                                    "size", "fingerprint", "model_id", "model_kind", "models_uri")}
    now = datetime.now(timezone.utc)
    table = pa.table({
        **cols,
        "status": pa.array(status),
        "error_reason": pa.array(reason.tolist(), pa.string()),
        "error": pa.array([None if r is None else f"{r} (bench)" for r in reason.tolist()], pa.string()),
        "anomaly_score": pa.array(np.where(ok, score, np.nan), mask=~ok),
        "threshold": pa.array(np.full(n, 5.0)),
        "decision": pa.array(np.where(ok, (score > 5.0).astype(np.int8), 0), pa.int8(), mask=~ok),
        "n_tiles": pa.array(np.full(n, 9, np.int32), mask=~ok),
        "run_id": pa.array([run_id] * n),
        "scored_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
    })
    return results.conform(table)


def rows_only(store: RunStore, data_uri: str, nights: int, clips: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rss = PeakRss()
    day0 = date(2026, 1, 1)
    retry: list[dict] = []  # yesterday's clips whose read failed: listed again tonight
    lines = []
    print(f"{'night':>5} {'lookup':>8} {'stage':>8} {'commit':>8} {'total':>8} (ms) {'peak RSS':>9} (MB)")
    for n in range(1, nights + 1):
        d = (day0 + timedelta(days=n - 1)).isoformat()
        run_id = f"night{n:03d}"
        items = retry + _night_items(data_uri, d, clips)
        for it in items:
            it["run_id"] = run_id
        rss.reset()
        t0 = time.perf_counter()
        store = RunStore(store.out)  # each night is a new process: nothing is remembered from the last
        stage = store.begin(run_id)
        carried, todo = store.settled(items, split="test", models_uri="s3://models", n_masks=None)
        t1 = time.perf_counter()
        table = _scored(todo, run_id, rng, retried=len(retry))
        t2 = time.perf_counter()
        write_table(store.out, f"{stage}/part-00000.parquet", table)  # what the pipeline writes
        t3 = time.perf_counter()
        new, record = store.publish(run_id, [i["path"] for i in todo], {"date": d, "split": "test"})
        store.write_alerts(run_id, new)
        store.finish(record, {"n_scored": new.num_rows})
        t4 = time.perf_counter()
        failed = set(np.asarray(table["path"])[np.asarray(pc_equal(table["error_reason"], "read_failed"))].tolist())
        retry = [it for it in todo if it["path"] in failed]
        row = {"night": n, "lookup_ms": 1e3 * (t1 - t0), "stage_ms": 1e3 * (t3 - t2), "commit_ms": 1e3 * (t4 - t3),
               "total_ms": 1e3 * (t1 - t0 + t4 - t2), "peak_rss_mb": rss.peak / 2**20, "n_items": len(items),
               "n_carried": len(carried), "n_scored": new.num_rows}
        lines.append(row)
        print(f"{n:>5} {row['lookup_ms']:>8.0f} {row['stage_ms']:>8.0f} {row['commit_ms']:>8.0f} "
              f"{row['total_ms']:>8.0f}      {row['peak_rss_mb']:>9.0f}", flush=True)
    rss.stop()
    return lines


def pc_equal(col, value):
    import pyarrow.compute as pc

    return pc.fill_null(pc.equal(col, value), False)


def count_latest(store: RunStore) -> int:
    """Rows of the latest view, counted without holding them (either store)."""
    count = getattr(store, "count_latest", None)
    return count() if count else store.latest().num_rows


# ---------------------------------------------------------------- objects listed (the former default)
def with_objects(store: RunStore, data, nights: int, clips: int) -> list[dict]:
    rng = np.random.default_rng(0)
    payload = bytes(2048)
    lines = []
    day0 = date(2026, 1, 1)
    print(f"{'night':>5} {'listing':>8} {'index':>7} {'publish':>8} {'total':>7}   {'whole-archive listing':>21} "
          f"{'read-all-runs lookup':>20}  (ms)")
    for n in range(1, nights + 1):
        d = (day0 + timedelta(days=n - 1)).isoformat()
        for i in range(clips):
            write_bytes(data, f"{data.path}/{d}/{TYPES[i % len(TYPES)]}/{100000 + i}.flac", payload)
        run_id = f"night{n:03d}"
        t0 = time.perf_counter()
        listed = list_clips(data, pattern=PATTERN, only={"date": d})
        t1 = time.perf_counter()
        stage = store.begin(run_id)
        items = [{**r, "status": None} for r in _rows(listed, data, run_id, rng)]
        carried, todo = store.settled(items, split="test", models_uri="s3://models", n_masks=None)
        t2 = time.perf_counter()
        scored = _rows([c for c in listed if data.uri_of(c.path) in {i["path"] for i in todo}], data, run_id, rng)
        write_table(store.out, f"{stage}/part-0.parquet", results.to_table(scored))
        new, record = store.publish(run_id, [i["path"] for i in todo], {"date": d, "split": "test"})
        store.write_alerts(run_id, new)
        store.finish(record, {"n_scored": new.num_rows})
        t3 = time.perf_counter()
        whole = time.perf_counter()
        list_clips(data, pattern=PATTERN)
        whole = time.perf_counter() - whole
        old = time.perf_counter()
        for rec in store.runs():  # what --incremental did before the index
            store.read_run(rec)
        old = time.perf_counter() - old
        row = {"night": n, "listing_ms": 1e3 * (t1 - t0), "index_ms": 1e3 * (t2 - t1), "publish_ms": 1e3 * (t3 - t2),
               "total_ms": 1e3 * (t3 - t0), "whole_archive_listing_ms": 1e3 * whole, "read_all_runs_ms": 1e3 * old,
               "n_listed": len(listed), "n_carried": len(carried)}
        lines.append(row)
        print(f"{n:>5} {row['listing_ms']:>8.1f} {row['index_ms']:>7.1f} {row['publish_ms']:>8.1f} "
              f"{row['total_ms']:>7.1f}   {row['whole_archive_listing_ms']:>21.1f} {row['read_all_runs_ms']:>20.1f}",
              flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nights", type=int, default=60)
    p.add_argument("--clips", type=int, default=100, help="new clips per night")
    p.add_argument("--endpoint-url", default=None)
    p.add_argument("--local", default=None, help="a local folder instead of S3")
    p.add_argument("--rows-only", action="store_true",
                   help="no audio objects: the night's items are made in memory; the store does the rest")
    p.add_argument("--out", default=None, help="JSON lines, one per night")
    args = p.parse_args(argv)

    server = None
    if args.local:
        root = args.local.rstrip("/")
    else:
        endpoint = args.endpoint_url
        if endpoint is None:
            from jobs.common import start_local_s3

            server, endpoint = start_local_s3("bench")
        root = f"s3://bench-{uuid.uuid4().hex[:8]}"
        ensure_bucket(open_location(root, endpoint))
        args.endpoint_url = endpoint
    data = open_location(f"{root}/audio", args.endpoint_url)
    store = RunStore(open_location(f"{root}/out", args.endpoint_url))
    if store.out.protocol == "file":
        store.out.fs.makedirs(store.out.path, exist_ok=True)
    if args.rows_only:
        lines = rows_only(store, data.uri, args.nights, args.clips)
    else:
        if data.protocol == "file":
            data.fs.makedirs(data.path, exist_ok=True)
        lines = with_objects(store, data, args.nights, args.clips)
    if args.out:
        with open(args.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in lines)
    k = min(5, len(lines))
    first = {c: statistics.median(r[c] for r in lines[:k]) for c in lines[0] if c.endswith("_ms")}
    last = {c: statistics.median(r[c] for r in lines[-k:]) for c in lines[0] if c.endswith("_ms")}
    print(f"\nmedian of nights 1-{k} vs {len(lines) - k + 1}-{len(lines)}:")
    for c in first:
        ratio = last[c] / first[c] if first[c] else float("nan")
        print(f"  {c[:-3]:<26} {first[c]:9.1f} -> {last[c]:9.1f} ms  ({ratio:.2f}x)")
    if "peak_rss_mb" in lines[0]:
        print(f"driver peak RSS: night 1 {lines[0]['peak_rss_mb']:.0f} MB, night {len(lines)} "
              f"{lines[-1]['peak_rss_mb']:.0f} MB")
    n_latest = count_latest(store)
    if server is not None:
        server.stop()
    print(f"store overhead last/first: {last['total_ms'] / first['total_ms']:.2f}x")
    print(f"latest rows: {n_latest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
