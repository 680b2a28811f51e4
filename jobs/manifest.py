"""List an archive through a path template and write the manifest, so that the mapping
from paths to machine types, sections and labels can be checked before anything is
trained or scored.

    asd manifest s3://plant-audio --pattern '{date}/{machine_type}/{name}.flac' --out s3://plant-audio/manifest.csv

Prints how many files matched per machine type and the files that did not match; the
manifest (``.csv`` or ``.parquet``) holds the matched clips, one column per placeholder,
and is what ``asd train --manifest`` and ``asd score --manifest`` read.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter


def build_parser() -> argparse.ArgumentParser:
    from jobs.common import HelpFormatter, add_storage_args, describe

    p = argparse.ArgumentParser(prog="asd manifest", description=describe(__doc__), formatter_class=HelpFormatter)
    p.add_argument("data_uri", help="archive root (s3:// or a folder)")
    p.add_argument("--pattern", required=True, metavar="TEMPLATE",
                   help="path template below DATA_URI, e.g. '{date}/{machine_type}/{name}.flac'; known "
                        "placeholders: machine_type (required), section, domain, label, split; others are kept "
                        "as columns")
    p.add_argument("--only", action="append", default=[], metavar="PLACEHOLDER=VALUE",
                   help="with --pattern: fix a placeholder, e.g. --only date=2026-11-24 (lists only that folder)")
    p.add_argument("--out", default=None, metavar="URI", help="write the manifest here (.csv or .parquet)")
    p.add_argument("--show", type=int, default=5, help="example rows and unmatched files to print (default 5)")
    add_storage_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from asd_core.catalog import list_pattern, manifest_table, parse_only, write_manifest
    from asd_core.storage import open_location

    args = build_parser().parse_args(argv)
    try:
        data = open_location(args.data_uri, args.endpoint_url)
        listed = list_pattern(data, args.pattern, only=parse_only(args.only))
    except (ValueError, FileNotFoundError) as e:
        print(f"asd manifest: {e}", file=sys.stderr)
        return 2
    ok = [c for c in listed if c.ok]
    bad = [c for c in listed if not c.ok]
    per_type = Counter(c.machine_type for c in ok)
    labels = Counter(c.label or "unlabelled" for c in ok)
    print(f"{len(listed)} files under {data.uri}: {len(ok)} clips match {args.pattern!r}, {len(bad)} do not")
    for mt, n in sorted(per_type.items()):
        print(f"  {mt}: {n} clips")
    print("  labels: " + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))
    table = manifest_table(ok, data)
    if table.num_rows and args.show:
        print(table.slice(0, args.show).to_pandas().to_string(index=False))
    for c in bad[: args.show]:
        print(f"  not used ({c.reason}): {c.error}")
    if args.out:
        print(f"manifest: {write_manifest(ok, data, args.out, args.endpoint_url)} ({len(ok)} rows)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
