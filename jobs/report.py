"""Report of a scoring output: the metrics table and ROC / score-histogram plots.

    asd report OUT_URI [--run-id ID] [--endpoint-url URL]

Prints the metrics of a published run (default: the latest) in the layout of the
technical report's Table 4 and writes, under ``OUT_URI/report/<run_id>/``::

    table.txt            the printed table
    roc_<machine>.png    ROC curves per section and domain (AUC(source)/AUC(target) sets)
    hist_<machine>.png   anomaly-score histograms per label and domain, with the threshold
"""

from __future__ import annotations

import argparse
import logging
import sys

import pyarrow.parquet as pq

from asd_core import results
from asd_core.storage import open_location, write_bytes

log = logging.getLogger("jobs.report")


def build_parser() -> argparse.ArgumentParser:
    from jobs.common import add_storage_args

    p = argparse.ArgumentParser(prog="asd report", description=__doc__.split("\n\n")[0])
    p.add_argument("out_uri", help="output root of 'asd score'")
    p.add_argument("--run-id", default=None, help="published run to report (default: the latest)")
    p.add_argument("--no-plots", action="store_true", help="print the table only")
    add_storage_args(p)
    return p


def report(out_uri: str, run_id: str | None = None, *, endpoint_url: str | None = None, plots: bool = True) -> dict:
    """Build the report of one published run; returns ``{"run_id", "table", "files"}``."""
    from jobs.score import published_runs

    out = open_location(out_uri, endpoint_url)
    runs = published_runs(out)
    if not runs:
        raise FileNotFoundError(f"no published scoring run under {out.uri}/scores")
    if run_id is None:
        manifest = runs[-1]
    else:
        found = [m for m in runs if m["run_id"] == run_id]
        if not found:
            raise FileNotFoundError(f"run {run_id!r} is not published under {out.uri}/scores")
        manifest = found[0]
    rid = manifest["run_id"]
    mdir = f"{out.path}/metrics/{rid}"
    with out.fs.open(f"{mdir}/metrics.parquet", "rb") as f:
        sections = results.sections_from_table(pq.read_table(f))
    with out.fs.open(f"{mdir}/evaluated.parquet", "rb") as f:
        rows = pq.read_table(f).to_pandas()
    head = (
        f"run {rid} ({manifest.get('split')}): {manifest['n_rows']} clips scored, {manifest['n_error']} errors, "
        f"{manifest.get('n_skipped', 0)} carried from earlier runs"
    )
    if manifest["n_error"]:
        head += f" {manifest.get('errors_by_reason', {})}"
    table = results.format_table(sections) if sections else "no labelled clips: no metrics (pass --ground-truth to 'asd score')"
    text = f"{head}\n\n{table}\n"
    rdir = f"{out.path}/report/{rid}"
    files = [f"{rdir}/table.txt"]
    write_bytes(out, files[0], text.encode())
    if plots:
        for mt in sorted(rows["machine_type"].unique()):
            if not ((rows["machine_type"] == mt) & (rows["status"] == "ok")).any():
                continue
            for name, fn in ((f"roc_{mt}.png", results.plot_roc), (f"hist_{mt}.png", results.plot_histogram)):
                write_bytes(out, f"{rdir}/{name}", fn(rows, mt))
                files.append(f"{rdir}/{name}")
    return {"run_id": rid, "table": text, "files": [out.uri_of(p) for p in files]}


def main(argv: list[str] | None = None) -> int:
    from jobs.common import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        rep = report(args.out_uri, args.run_id, endpoint_url=args.endpoint_url, plots=not args.no_plots)
    except FileNotFoundError as e:
        print(f"asd report: {e}", file=sys.stderr)
        return 2
    print(rep["table"])
    print(f"report written under {rep['files'][0].rsplit('/', 1)[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
