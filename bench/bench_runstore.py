"""The run store's nightly overhead against the number of past nights.

    python -m bench.bench_runstore [--nights 60] [--clips 100] [--endpoint-url URL | --local DIR]

Simulates ``asd score --pattern '{date}/{machine_type}/{name}.flac' --only date=<night>
--incremental`` without the scoring itself: each night writes ``--clips`` new objects
under ``audio/<date>/``, then times what the job does around the pipeline:

- listing: :func:`asd_core.catalog.list_clips` of the night's folder (``--only``);
  the listing of the whole archive (no ``--only``) is timed too, for comparison;
- index: :meth:`RunStore.begin` (journal check, run-id check) and
  :meth:`RunStore.settled` (the incremental lookup in ``latest/scores.parquet``);
- publish: staging the rows (what Ray Data writes), :meth:`RunStore.publish` (check,
  move, ``_SUCCESS``, index update), alerts, :meth:`RunStore.finish`;
- the former incremental lookup (read every published run's rows), for comparison.

Without ``--endpoint-url``/``--local`` an embedded S3 server (moto) on 127.0.0.1 is
used. Prints one line per night and the ratio of the last nights' overhead to the
first nights' (medians of three).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from datetime import date, timedelta

import numpy as np

from asd_core import results
from asd_core.catalog import list_clips
from asd_core.runstore import RunStore, write_table
from asd_core.storage import ensure_bucket, open_location, write_bytes

PATTERN = "{date}/{machine_type}/{name}.flac"
TYPES = ("press-07", "press-08", "fan-3", "pump-1")


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nights", type=int, default=60)
    p.add_argument("--clips", type=int, default=100, help="new clips per night")
    p.add_argument("--endpoint-url", default=None)
    p.add_argument("--local", default=None, help="a local folder instead of S3")
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
    if data.protocol == "file":
        data.fs.makedirs(data.path, exist_ok=True)
    rng = np.random.default_rng(0)
    payload = bytes(2048)
    lines = []
    day0 = date(2026, 1, 1)
    print(f"{'night':>5} {'listing':>8} {'index':>7} {'publish':>8} {'total':>7}   {'whole-archive listing':>21} "
          f"{'read-all-runs lookup':>20}  (ms)")
    for n in range(1, args.nights + 1):
        d = (day0 + timedelta(days=n - 1)).isoformat()
        for i in range(args.clips):
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
               "n_listed": len(listed), "n_carried": len(carried), "index_rows": store.latest().num_rows}
        lines.append(row)
        print(f"{n:>5} {row['listing_ms']:>8.1f} {row['index_ms']:>7.1f} {row['publish_ms']:>8.1f} "
              f"{row['total_ms']:>7.1f}   {row['whole_archive_listing_ms']:>21.1f} {row['read_all_runs_ms']:>20.1f}",
              flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in lines)
    k = min(3, len(lines))
    first = {c: statistics.median(r[c] for r in lines[:k]) for c in lines[0] if c.endswith("_ms")}
    last = {c: statistics.median(r[c] for r in lines[-k:]) for c in lines[0] if c.endswith("_ms")}
    print(f"\nmedian of nights 1-{k} vs {len(lines) - k + 1}-{len(lines)} (index rows {lines[-1]['index_rows']}):")
    for c in first:
        print(f"  {c[:-3]:<26} {first[c]:8.1f} -> {last[c]:8.1f} ms  ({last[c] / first[c]:.2f}x)")
    if server is not None:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
