"""Read a scoring output's rows for plain readers, and look after its Delta tables.

    asd scores OUT_URI --latest --format csv > latest.csv
    asd scores OUT_URI --run-id 20261124T021500Z-1a2b3c --format parquet --out night.parquet
    asd scores OUT_URI --optimize      compact small files, vacuum old versions (also every 30 runs)
    asd scores OUT_URI --repair        a damaged table: set aside unreadable commits, drop missing files,
                                       rebuild latest from the history
    asd scores OUT_URI --migrate       convert an output written before the Delta tables (also the first run)

Rows are streamed: the whole latest table is never held in memory. Every column is
written: the score row, the template's or manifest's fields (``date``, ``unit``, ...),
``clip_part`` (latest) or ``run_date`` (a run's rows). The maintenance commands take
the output's lease, so they never run beside ``asd score``.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from jobs.common import HelpFormatter, add_storage_args, describe

    p = argparse.ArgumentParser(prog="asd scores", description=describe(__doc__), formatter_class=HelpFormatter)
    p.add_argument("out_uri", help="output root of 'asd score'")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--latest", action="store_true",
                       help="each clip's latest row (the default): one row per clip and models URI / K")
    which.add_argument("--run-id", default=None, help="the rows one published run wrote")
    which.add_argument("--optimize", action="store_true",
                       help="compact every table's small files, checkpoint, vacuum files no version of the last "
                            "--retain-hours references, remove expired staging")
    which.add_argument("--repair", action="store_true",
                       help="make a damaged output usable: unreadable newest commits set aside under "
                            "OUT_URI/_repair/, missing data files dropped, latest rebuilt from the history")
    which.add_argument("--migrate", action="store_true",
                       help="convert an output of the former layout (latest/scores.parquet, runs/*.json) into "
                            "the Delta tables; the former files are kept under OUT_URI/_legacy/")
    which.add_argument("--rebuild-index", action="store_true",
                       help="rebuild the latest table from the history (reads the whole history)")
    p.add_argument("--retain-hours", type=float, default=168.0,
                   help="with --optimize: keep files older versions need for this long")
    p.add_argument("--format", default="csv", choices=["csv", "parquet"], help="output format (default csv)")
    p.add_argument("--out", default=None, metavar="PATH", help="write here instead of stdout")
    add_storage_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from asd_core.paths import check_segment
    from asd_core.runs import LeaseHeld
    from asd_core.runstore import StoreError
    from jobs.common import open_reachable

    args = build_parser().parse_args(argv)
    try:
        if args.run_id is not None:  # it names a run of OUT_URI
            check_segment(args.run_id, "--run-id")
        out = open_reachable("output", args.out_uri, args.endpoint_url)
        if args.optimize or args.repair or args.migrate or args.rebuild_index:
            return _maintain(args, out)
        return _read(args, out)
    except (ValueError, FileNotFoundError, StoreError, LeaseHeld) as e:
        print(f"asd scores: {e}", file=sys.stderr)
        return 2


def _maintain(args: argparse.Namespace, out) -> int:
    import json

    from asd_core.runs import Lease, new_run_id
    from asd_core.runstore import LEASE, RunStore, json_default, release_on_signals

    owner = f"asd-scores-{new_run_id()}"
    store = RunStore(out)
    with release_on_signals(), Lease(out, f"{out.path}/{LEASE}", owner):
        if args.migrate:
            done = store.migrate()
            print(f"converted: {json.dumps(done, default=json_default)}" if done else
                  f"{out.uri}: nothing to convert ({store.layout()} layout)")
        elif args.optimize:
            for name, done in store.optimize(args.retain_hours).items():
                print(f"{name}: {json.dumps(done, default=json_default)}")
        elif args.repair:
            for line in store.repair(owner):
                print(line)
        else:
            print(f"latest rebuilt from the history: {store.rebuild_latest()} rows")
    return 0


def _read(args: argparse.Namespace, out) -> int:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from asd_core.results import nullable_int_schema
    from asd_core.runstore import LATEST, SCORES, RunStore

    store = RunStore(out)
    if not store.runs():  # a mistyped OUT_URI, or nothing scored yet: not an empty table
        print(f"asd scores: no published scoring run under {store.out.uri}", file=sys.stderr)
        return 2
    if args.run_id is not None and store.record(args.run_id) is None:
        print(f"asd scores: run {args.run_id!r} is not published under {store.out.uri}", file=sys.stderr)
        return 2
    if args.out is None and args.format == "parquet" and sys.stdout.isatty():
        print("asd scores: Parquet is binary; give --out FILE or --format csv", file=sys.stderr)
        return 2
    schema, batches = store.scan(SCORES if args.run_id else LATEST, args.run_id)
    sink = open(args.out, "wb") if args.out else sys.stdout.buffer  # noqa: SIM115 - closed below
    n = 0
    try:
        writer = (pq.ParquetWriter(sink, nullable_int_schema(schema)) if args.format == "parquet"
                  else pacsv.CSVWriter(sink, schema))
        with writer:
            for b in batches:
                writer.write_batch(b)
                n += b.num_rows
    finally:
        if args.out:
            sink.close()
    if args.out:
        print(f"{n} rows written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
