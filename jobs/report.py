"""Report of a published scoring run: the night's alerts, each machine type's scores
against its training clips' scores, the alerts over the last nights and, for labelled
runs, the metrics table with ROC and score-histogram plots.

    asd report OUT_URI [--run-id ID] [--nights N] [--local DIR] [--endpoint-url URL]

Reports the latest run that scored clips (an incremental night that found nothing new
is passed over, and the header says so), or --run-id. Prints the night's alerts (clips
over their model's threshold, most severe first by score / threshold, then sensor
faults), the alerts per machine type over the last --nights nights and the metrics of
labelled runs (the technical report's Table 4; every model kind's latest AUCs side by
side when several kinds were published into OUT_URI). Writes, under
OUT_URI/report/<run_id>/ and, with --local DIR, into the local folder DIR as well::

    table.txt          the printed text: header, alerts, alerts per night, metrics
    alerts.csv         the night's alerts, most severe first: path, machine type, fields
                       (date, unit, ...), score, threshold, ratio, margin, alert kind
    trend.csv          alerts per machine type and night, the last --nights nights
    trend.png          the same as a plot, one line per machine type
    night_<mt>.png     the night's scores over the training clips' scores, threshold
    roc_<mt>.png       labelled runs: ROC curves per kind, section and domain
    hist_<mt>.png      labelled runs: score histograms per kind and domain, threshold
    index.html         all of the above on one page (open it in a browser)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from asd_core.reporting import DEFAULT_NIGHTS, ReportOptions, build_report

log = logging.getLogger("jobs.report")


def build_parser() -> argparse.ArgumentParser:
    from jobs.common import HelpFormatter, add_storage_args, describe

    p = argparse.ArgumentParser(prog="asd report", description=describe(__doc__, 3), formatter_class=HelpFormatter)
    p.add_argument("out_uri", help="output root of 'asd score'")
    p.add_argument("--run-id", default=None, help="published run to report (default: the latest that scored clips)")
    p.add_argument("--nights", type=int, default=DEFAULT_NIGHTS, help="nights in the alerts-per-night table and plot")
    p.add_argument("--no-plots", action="store_true", help="no PNG files (the table, the CSV files and index.html only)")
    p.add_argument("--local", default=None, metavar="DIR",
                   help="also write the table, the CSV files, the plots and index.html into this local folder")
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
    nights: int = DEFAULT_NIGHTS,
) -> dict:
    """:func:`asd_core.reporting.build_report` with keyword options."""
    return build_report(ReportOptions(out_uri, run_id, endpoint_url, plots, local_dir, hist_log, nights))


def main(argv: list[str] | None = None) -> int:
    from asd_core.runstore import StoreError
    from jobs.common import open_reachable, setup_logging

    args = build_parser().parse_args(argv)
    setup_logging()
    if args.nights < 1:
        print("asd report: --nights must be at least 1", file=sys.stderr)
        return 2
    opts = ReportOptions(args.out_uri, args.run_id, args.endpoint_url, not args.no_plots, args.local,
                         {"auto": None, "linear": False, "log": True}[args.hist_scale], args.nights)
    try:
        open_reachable("output", args.out_uri, args.endpoint_url)
        rep = build_report(opts)
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
