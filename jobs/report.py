"""Report of a scoring output: the metrics table and ROC / score-histogram plots.

    asd report OUT_URI [--run-id ID] [--local DIR] [--endpoint-url URL]

Prints the metrics of a published run (default: the latest) in the layout of the
technical report's Table 4. When runs of several model kinds (``asd train --model``)
were published into the same OUT_URI, it also prints every kind's latest AUC(source),
AUC(target) and pAUC side by side with each kind's official score, and the ROC plots
put the kinds' curves on one figure. Writes, under ``OUT_URI/report/<run_id>/`` and,
with ``--local DIR``, into the local folder DIR as well::

    table.txt            the printed tables
    roc_<machine>.png    ROC curves per kind, section and domain, AUC in the legend
    hist_<machine>.png   anomaly-score histograms per kind and domain, with the threshold
    index.html           the table and every plot on one page (open it in a browser)
"""

from __future__ import annotations

import argparse
import html
import logging
import os
import sys

import pandas as pd

from asd_core import plots as plots_
from asd_core import results
from asd_core.paths import check_segment, is_segment
from asd_core.storage import open_location, write_bytes

log = logging.getLogger("jobs.report")


def build_parser() -> argparse.ArgumentParser:
    from jobs.common import HelpFormatter, add_storage_args, describe

    p = argparse.ArgumentParser(prog="asd report", description=describe(__doc__, 2), formatter_class=HelpFormatter)
    p.add_argument("out_uri", help="output root of 'asd score'")
    p.add_argument("--run-id", default=None, help="published run to report (default: the latest)")
    p.add_argument("--no-plots", action="store_true", help="print the table only")
    p.add_argument("--local", default=None, metavar="DIR",
                   help="also write the table, the plots and index.html into this local folder")
    p.add_argument("--hist-scale", default="auto", choices=["auto", "linear", "log"],
                   help="score axis of the histograms (auto: log when positive scores span over 100x)")
    add_storage_args(p)
    return p


def report(
    out_uri: str,
    run_id: str | None = None,
    *,
    endpoint_url: str | None = None,
    plots: bool = True,
    local_dir: str | None = None,
    hist_log: bool | None = None,
) -> dict:
    """Build the report of one published run; returns ``{"run_id", "table", "files"}``
    (``files``: what was written under OUT_URI, then under ``local_dir``)."""
    from asd_core.runstore import RunStore

    out = open_location(out_uri, endpoint_url)
    store = RunStore(out)
    runs = store.runs()
    if not runs:
        raise FileNotFoundError(f"no published scoring run under {out.uri}")
    if run_id is None:
        manifest = runs[-1]
    else:
        found = [m for m in runs if m["run_id"] == run_id]
        if not found:
            raise FileNotFoundError(f"run {run_id!r} is not published under {out.uri}")
        manifest = found[0]
    rid = check_segment(manifest["run_id"], "run id")  # the report's folder under OUT_URI
    sections, rows = _run_metrics(store, manifest)
    head = (
        f"run {rid} ({manifest.get('split')}): {manifest['n_rows']} clips scored, {manifest['n_error']} errors, "
        f"{manifest.get('n_skipped', 0)} carried from earlier runs"
    )
    if manifest["n_error"]:
        head += f" {manifest.get('errors_by_reason', {})}"
    plot_runs = rid  # the run(s) the plotted rows come from
    table = results.format_table(sections) if sections else "no labelled clips: no metrics (pass --ground-truth to 'asd score')"
    if run_id is None:
        # Every kind's latest metrics per (machine type, section), newest run first.
        latest: dict[tuple[str, str, str], object] = {}
        used_rows, used_runs = [], []
        for m in reversed(runs):
            if m.get("split") != manifest.get("split"):
                continue
            secs, r = (sections, rows) if m["run_id"] == rid else _run_metrics(store, m)
            new = [x for x in secs if (x.model_kind, x.machine_type, x.section) not in latest]
            for x in new:
                latest[(x.model_kind, x.machine_type, x.section)] = x
            if new:
                used_runs.append(m["run_id"])
                kinds = {x.model_kind for x in new}
                used_rows.append(r[r["model_kind"].fillna("").replace("", "unet").isin(kinds)]
                                 if "model_kind" in r.columns else r)
        if len({k for k, _, _ in latest}) > 1:
            table += "\n\nModel kinds side by side (each kind's latest run):\n" + results.side_by_side(list(latest.values()))
            rows = pd.concat(used_rows, ignore_index=True)
            plot_runs = ", ".join(used_runs)
    text = f"{head}\n\n{table}\n"
    outputs = {"table.txt": text.encode()}
    if plots:
        for mt in sorted(rows["machine_type"].unique()):
            if not ((rows["machine_type"] == mt) & (rows["status"] == "ok")).any():
                continue
            if not is_segment(mt):  # roc_<mt>.png must stay in the report folder
                log.warning("no plots for machine type %r: not a folder name", mt)
                continue
            outputs[f"roc_{mt}.png"] = plots_.plot_roc(rows, mt, plot_runs)
            outputs[f"hist_{mt}.png"] = plots_.plot_histogram(rows, mt, plot_runs, hist_log)
    outputs["index.html"] = _index_html(out.uri, rid, text, [n for n in outputs if n.endswith(".png")]).encode()
    rdir = f"{out.path}/report/{rid}"
    files = []
    for name, data in outputs.items():
        write_bytes(out, f"{rdir}/{name}", data)
        files.append(out.uri_of(f"{rdir}/{name}"))
    if local_dir:
        os.makedirs(local_dir, exist_ok=True)
        for name, data in outputs.items():
            with open(os.path.join(local_dir, name), "wb") as f:
                f.write(data)
            files.append(os.path.join(os.path.abspath(local_dir), name))
    return {"run_id": rid, "table": text, "files": files}


def _index_html(out_uri: str, run_id: str, table: str, images: list[str]) -> str:
    """One page: the printed tables, then each machine type's ROC and histogram."""
    e = html.escape
    figures = "\n".join(
        f'<figure><img src="{e(n)}" alt="{e(n)}"><figcaption>{e(n)}</figcaption></figure>' for n in images
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>asd report {e(run_id)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} pre{{font-size:12px;background:#f6f6f6;padding:1em;overflow-x:auto}}
figure{{display:inline-block;margin:0 1em 1em 0;vertical-align:top}} figcaption{{font-size:12px;color:#555}}</style>
</head><body>
<h1>Run {e(run_id)}</h1>
<p>Scoring output {e(out_uri)}. AUC and pAUC (p = 0.1) as the DCASE 2023 Task 2 evaluator computes them.</p>
<pre>{e(table)}</pre>
<h2>Plots</h2>
{figures or "<p>No plots (no scored clips, or --no-plots).</p>"}
</body></html>
"""


def _run_metrics(store, record: dict):
    """(sections, evaluated rows) of one published run (its rows of the metrics and
    evaluated tables, or the files of the former layout)."""
    metrics = store.read_output("metrics", record)
    evaluated = store.read_output("evaluated", record)
    sections = results.sections_from_table(metrics) if metrics is not None else []
    rows = evaluated.to_pandas() if evaluated is not None else results.empty_scores().to_pandas()
    return sections, rows


def main(argv: list[str] | None = None) -> int:
    from asd_core.runstore import StoreError
    from jobs.common import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging()
    hist_log = {"auto": None, "linear": False, "log": True}[args.hist_scale]
    try:
        rep = report(args.out_uri, args.run_id, endpoint_url=args.endpoint_url, plots=not args.no_plots,
                     local_dir=args.local, hist_log=hist_log)
    except (FileNotFoundError, ValueError, StoreError) as e:
        print(f"asd report: {e}", file=sys.stderr)
        return 2
    print(rep["table"])
    print(f"report written under {rep['files'][0].rsplit('/', 1)[0]}")
    if args.local:
        print(f"and into {os.path.abspath(args.local)}: open {os.path.join(os.path.abspath(args.local), 'index.html')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
