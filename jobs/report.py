"""Report of a scoring output: the metrics table and ROC / score-histogram plots.

    asd report OUT_URI [--run-id ID] [--endpoint-url URL]

Prints the metrics of a published run (default: the latest) in the layout of the
technical report's Table 4. When runs of several model kinds (``asd train --model``)
were published into the same OUT_URI, it also prints every kind's latest AUC(source),
AUC(target) and pAUC side by side with each kind's official score, and the ROC plots
put the kinds' curves on one figure. Writes, under ``OUT_URI/report/<run_id>/``::

    table.txt            the printed tables
    roc_<machine>.png    ROC curves per kind, section and domain (AUC(source)/AUC(target) sets)
    hist_<machine>.png   anomaly-score histograms per label and domain, with the threshold
"""

from __future__ import annotations

import argparse
import logging
import sys

import pandas as pd
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
    from asd_core.runstore import RunStore

    out = open_location(out_uri, endpoint_url)
    store = RunStore(out)
    runs = store.runs()
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
    sections, rows = _run_metrics(store, manifest)
    head = (
        f"run {rid} ({manifest.get('split')}): {manifest['n_rows']} clips scored, {manifest['n_error']} errors, "
        f"{manifest.get('n_skipped', 0)} carried from earlier runs"
    )
    if manifest["n_error"]:
        head += f" {manifest.get('errors_by_reason', {})}"
    table = results.format_table(sections) if sections else "no labelled clips: no metrics (pass --ground-truth to 'asd score')"
    if run_id is None:
        # Every kind's latest metrics per (machine type, section), newest run first.
        latest: dict[tuple[str, str, str], object] = {}
        used_rows = []
        for m in reversed(runs):
            if m.get("split") != manifest.get("split"):
                continue
            secs, r = (sections, rows) if m["run_id"] == rid else _run_metrics(store, m)
            new = [x for x in secs if (x.model_kind, x.machine_type, x.section) not in latest]
            for x in new:
                latest[(x.model_kind, x.machine_type, x.section)] = x
            if new:
                kinds = {x.model_kind for x in new}
                used_rows.append(r[r["model_kind"].fillna("").replace("", "unet").isin(kinds)]
                                 if "model_kind" in r.columns else r)
        if len({k for k, _, _ in latest}) > 1:
            table += "\n\nModel kinds side by side (each kind's latest run):\n" + results.side_by_side(list(latest.values()))
            rows = pd.concat(used_rows, ignore_index=True)
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


def _run_metrics(store, record: dict):
    """(sections, evaluated rows) of one published run."""
    if record.get("format", 1) >= 2:
        mpath = store.run_output("metrics", record, "metrics.parquet")
        epath = store.run_output("evaluated", record, "evaluated.parquet")
    else:  # outputs written before the partitioned layout
        mpath = store.p("metrics", record["run_id"], "metrics.parquet")
        epath = store.p("metrics", record["run_id"], "evaluated.parquet")
    with store.out.fs.open(mpath, "rb") as f:
        sections = results.sections_from_table(pq.read_table(f))
    with store.out.fs.open(epath, "rb") as f:
        rows = pq.read_table(f).to_pandas()
    return sections, rows


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
