"""Read a scoring output's rows: each clip's latest row (``latest/scores.parquet``), or
one run's rows, as Parquet or CSV.

    asd scores OUT_URI --latest --format csv > latest.csv
    asd scores OUT_URI --run-id 20261124T021500Z-1a2b3c --format parquet --out night.parquet
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
    p.add_argument("--format", default="csv", choices=["csv", "parquet"], help="output format (default csv)")
    p.add_argument("--out", default=None, metavar="PATH", help="write here instead of stdout")
    p.add_argument("--rebuild-index", action="store_true",
                   help="rebuild latest/scores.parquet from every published run first (repairs an output)")
    add_storage_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from asd_core.paths import check_segment
    from asd_core.runstore import RunStore, to_bytes
    from asd_core.storage import open_location

    args = build_parser().parse_args(argv)
    try:
        if args.run_id is not None:  # it names runs/<run_id>.json under OUT_URI
            check_segment(args.run_id, "--run-id")
        store = RunStore(open_location(args.out_uri, args.endpoint_url))
        if args.rebuild_index:
            store.rebuild_latest()
        if args.run_id is not None:
            record = store.record(args.run_id)
            if record is None:
                print(f"asd scores: run {args.run_id!r} is not published under {store.out.uri}", file=sys.stderr)
                return 2
            table = store.read_run(record)
        else:
            table = store.latest()
    except (ValueError, FileNotFoundError) as e:
        print(f"asd scores: {e}", file=sys.stderr)
        return 2
    data = to_bytes(table, args.format)
    if args.out:
        with open(args.out, "wb") as f:
            f.write(data)
        print(f"{table.num_rows} rows written to {args.out}", file=sys.stderr)
    elif args.format == "parquet" and sys.stdout.isatty():
        print("asd scores: Parquet is binary; give --out FILE or --format csv", file=sys.stderr)
        return 2
    else:
        sys.stdout.buffer.write(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
