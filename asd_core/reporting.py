"""The report of a published scoring run (``asd report``): what to look at after a night.

For every run: the night's alerts (clips over their model's threshold, by how much,
most severe first; then the dead or silent sensors), each machine type's scores of the
night against the scores of the clips its model trained on, and the alerts per machine
type over the last nights. For runs with labelled clips also the metrics table (the
technical report's Table 4), every model kind's latest AUCs side by side, ROC curves and
score histograms. Files, under ``OUT_URI/report/<run_id>/`` and optionally a local folder:
see :data:`FILES`.

Reads the store (:class:`asd_core.store.RunStore`) and the model artifacts the run
scored with (:func:`asd_core.artifact.read_meta`, metadata only); no Ray.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import plots as plots_
from . import results
from .paths import check_segment, is_segment
from .results import STATUS_OK
from .storage import open_location, write_bytes

log = logging.getLogger(__name__)

DEFAULT_NIGHTS = 14
PRINTED_ALERTS = 30  # alerts listed in table.txt and on the terminal; alerts.csv and index.html have all
HTML_ALERTS = 500

# What a report writes: name (``<mt>`` one per machine type) -> what it holds.
FILES = {
    "table.txt": "the printed text: header, the night's alerts, the alerts per night, the metrics",
    "alerts.csv": "the night's alerts, most severe first: path, machine type, template/manifest fields, score, "
                  "threshold, ratio and margin, alert kind",
    "trend.csv": "alerts per machine type and night over the last --nights nights that scored clips",
    "trend.png": "the same as a plot, one line per machine type",
    "night_<mt>.png": "the night's scores over the training clips' scores, with the threshold",
    "roc_<mt>.png": "labelled runs: ROC curves per kind, section and domain, AUC in the legend",
    "hist_<mt>.png": "labelled runs: score histograms per kind and domain, with the threshold",
    "index.html": "all of the above on one page (open it in a browser)",
}

ALERT_CSV_COLUMNS = ("rank", "alert_kind", "machine_type", "section", "domain", "path", "file_name",
                     "anomaly_score", "threshold", "ratio", "margin", "margin_in_train_std", "error_reason",
                     "error", "model_id", "model_kind", "run_id", "scored_at")


@dataclass(frozen=True)
class ReportOptions:
    """What ``asd report`` was asked for."""

    out_uri: str
    run_id: str | None = None  # None: the latest run that scored clips
    endpoint_url: str | None = None
    plots: bool = True
    local_dir: str | None = None
    hist_log: bool | None = None  # score axes: None = log when positive scores span over 100x
    nights: int = DEFAULT_NIGHTS


# ---------------------------------------------------------------- which run
def choose_run(runs: list[dict], run_id: str | None) -> tuple[dict, str]:
    """``(record, note)``: the run ``run_id``, or by default the latest run that scored
    clips; ``note`` says why the latest run was passed over ("" when it was not)."""
    if run_id is not None:
        found = [m for m in runs if m["run_id"] == run_id]
        if not found:
            raise FileNotFoundError(f"run {run_id!r} is not published")
        return found[0], ""
    latest = runs[-1]
    if _n_scored(latest) > 0:
        return latest, ""
    earlier = [m for m in runs[:-1] if _n_scored(m) > 0 and m.get("split") == latest.get("split")]
    if not earlier:
        return latest, ""
    why = (f"{latest.get('n_skipped', 0)} clips carried from earlier runs" if latest.get("n_skipped")
           else "no clips listed")
    return earlier[-1], (f"the latest run {latest['run_id']} scored nothing new ({why}): this is the latest "
                         f"night that scored clips, run {earlier[-1]['run_id']}")


def _n_scored(record: dict) -> int:
    return int(record.get("n_rows") or 0)


# ---------------------------------------------------------------- training scores
def training_scores(rows: pd.DataFrame, record: dict, endpoint_url: str | None = None) -> dict[str, plots_.TrainingScores]:
    """Per machine type scored in ``rows``: what the artifact it was scored with says
    about its training clips' scores (``record["models_uri"]``, the version of the
    rows' ``model_id``). An artifact that cannot be read gives the rows' threshold and
    the reason."""
    from .artifact import read_meta

    out: dict[str, plots_.TrainingScores] = {}
    ok = rows[(rows["status"] == STATUS_OK) & rows["model_id"].fillna("").ne("")] if len(rows) else rows
    models_uri = record.get("models_uri")
    for mt, g in ok.groupby("machine_type", sort=True):
        model_id = str(g["model_id"].mode().iloc[0])
        thr = float(g["threshold"].dropna().median()) if g["threshold"].notna().any() else None
        kind = str(g["model_kind"].dropna().iloc[0]) if g["model_kind"].notna().any() else ""
        try:
            if not models_uri:
                raise FileNotFoundError("the run record names no models URI")
            meta = read_meta(open_location(models_uri, endpoint_url), str(mt), model_id)
        except Exception as e:  # noqa: BLE001 - a report panel says why, it does not fail the report
            out[str(mt)] = plots_.TrainingScores(thr, model_id=model_id, model_kind=kind,
                                                 problem=f"artifact {model_id} not readable ({type(e).__name__}: "
                                                         f"{str(e).splitlines()[0] if str(e) else ''})")
            continue
        summary = meta.get("summary") or {}
        out[str(mt)] = plots_.TrainingScores(
            threshold=float(meta["threshold"]),
            quantiles=tuple(float(x) for x in summary.get("train_score_quantiles") or () if _finite(x)),
            mean=_num(summary.get("train_score_mean")),
            std=_num(summary.get("train_score_std")),
            n_clips=summary.get("n_clips"),
            model_id=model_id,
            model_kind=kind or str(meta.get("model_kind") or ""),
        )
    return out


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _num(x: Any) -> float | None:
    return float(x) if _finite(x) else None


# ---------------------------------------------------------------- the night's alerts
def night_alerts(alerts: pd.DataFrame, training: dict[str, plots_.TrainingScores] | None = None) -> pd.DataFrame:
    """A run's alert rows (the store's ``alerts`` table) most severe first, with how far
    each clip is over its threshold: ``ratio`` (score / threshold, where the threshold
    is positive), ``margin`` (score - threshold) and ``margin_in_train_std`` (the margin
    in standard deviations of the training clips' scores, where known). Clips over
    threshold come first, by ratio (margin where there is no ratio), then the sensor
    alerts in the store's order. The template's or manifest's fields (``date``,
    ``unit``, ...) follow ``machine_type``; ``rank`` is 1, 2, ..."""
    training = training or {}
    if alerts is None or alerts.empty:
        return pd.DataFrame(columns=list(ALERT_CSV_COLUMNS))
    df = alerts.copy()
    if "alert_kind" not in df.columns:
        df["alert_kind"] = "anomaly"
    df["alert_kind"] = df["alert_kind"].fillna("anomaly")
    for c in ALERT_CSV_COLUMNS:
        if c not in df.columns:
            df[c] = None
    score = pd.to_numeric(df["anomaly_score"], errors="coerce")
    thr = pd.to_numeric(df["threshold"], errors="coerce")
    df["margin"] = score - thr
    df["ratio"] = (score / thr).where(thr > 0)
    std = df["machine_type"].map(lambda mt: training[mt].std if mt in training else None).astype(float)
    df["margin_in_train_std"] = (df["margin"] / std).where(std > 0)
    df["_sensor"] = (df["alert_kind"] == "sensor").astype(int)
    df["_order"] = df["ratio"].fillna(df["margin"]).where(df["_sensor"] == 0)
    store_rank = pd.to_numeric(df["alert_rank"], errors="coerce") if "alert_rank" in df.columns else 0
    df = df.assign(_store_rank=store_rank).sort_values(
        ["_sensor", "_order", "_store_rank", "path"], ascending=[True, False, True, True], na_position="last",
        kind="mergesort")
    df["rank"] = np.arange(1, len(df) + 1)
    fields = _fields(df["attributes"] if "attributes" in df.columns else pd.Series([None] * len(df)))
    cols = list(ALERT_CSV_COLUMNS)
    at = cols.index("machine_type") + 1
    for name, values in fields.items():
        if name in cols:
            continue
        df[name] = values.to_numpy()
        cols.insert(at, name)
        at += 1
    return df[cols].reset_index(drop=True)


def _fields(attributes: pd.Series) -> dict[str, pd.Series]:
    """The template or manifest fields of each row's ``attributes`` JSON, by field name."""
    parsed = []
    for a in attributes:
        try:
            d = json.loads(a) if isinstance(a, str) and a else {}
        except ValueError:
            d = {}
        parsed.append(d if isinstance(d, dict) else {})
    names = list(dict.fromkeys(k for d in parsed for k in d))
    return {n: pd.Series([None if d.get(n) is None else str(d[n]) for d in parsed]) for n in names}


def format_alerts(alerts: pd.DataFrame, limit: int = PRINTED_ALERTS) -> str:
    """The first ``limit`` rows of :func:`night_alerts` as a text table."""
    if alerts.empty:
        return "no alerts: no clip over its threshold, no sensor fault"
    fixed = set(ALERT_CSV_COLUMNS)
    fields = [c for c in alerts.columns if c not in fixed and c != "name"]
    head = ["#", "kind", "machine", *fields, "score", "threshold", "ratio", "margin", "path"]
    body = []
    for r in alerts.head(limit).to_dict("records"):
        kind = r["alert_kind"] if r["alert_kind"] != "sensor" else f"sensor: {r['error_reason']}"
        body.append([str(r["rank"]), kind, str(r["machine_type"]), *[_text(r[f]) for f in fields],
                     *[_cell(c, r[c]) for c in ("anomaly_score", "threshold", "ratio")],
                     "" if _missing(r["margin"]) else f"{r['margin']:+.3g}", str(r["path"])])
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [head, *body]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    if len(alerts) > limit:
        lines.append(f"... and {len(alerts) - limit} more (alerts.csv)")
    return "\n".join(lines)


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x)) or x is pd.NA


def _g(x: Any) -> str:
    return "" if _missing(x) else f"{float(x):.4g}"


def _cell(column: str, x: Any) -> str:
    if column == "ratio":
        return "" if _missing(x) else f"{float(x):.2f}x"
    if column in ("anomaly_score", "threshold", "margin", "margin_in_train_std"):
        return _g(x)
    return _text(x)


def _text(x: Any) -> str:
    return "" if _missing(x) else str(x)


# ---------------------------------------------------------------- the last nights
def alert_trend(store, runs: list[dict], record: dict, nights: int = DEFAULT_NIGHTS) -> pd.DataFrame:
    """Alerts per machine type over the last ``nights`` runs that scored clips, up to
    and including ``record`` (same split), oldest first: one row per run and machine
    type with ``night`` (the run's date, with its run id when a date has several runs),
    ``run_date``, ``run_id``, ``n_scored`` (the type's clips the run scored),
    ``anomaly_alerts`` and ``sensor_alerts``. Every type with a model in the run is
    listed, with 0 alerts on a quiet night. Only runs of ``record``'s model kinds count
    (several kinds scoring the same nights into one OUT_URI are several trends; records
    from before ``model_kinds`` was kept count for every kind)."""
    until = next((i for i, m in enumerate(runs) if m["run_id"] == record["run_id"]), len(runs) - 1)
    chosen = [m for m in runs[: until + 1] if _n_scored(m) > 0 and m.get("split") == record.get("split")
              and _same_kinds(m, record)]
    chosen = chosen[-max(1, nights):]
    scored, labels = [], []
    for m in chosen:
        t = store.read_run(m).select(["machine_type", "attributes"])
        scored.append(t.to_pandas()["machine_type"].value_counts())
        dates = clip_dates(t)
        labels.append(dates[0] if len(dates) == 1 else str(m.get("date")))
    rows = []
    for m, counts, label in zip(chosen, scored, labels, strict=True):
        alerts = store.read_output("alerts", m)
        a = alerts.to_pandas() if alerts is not None else pd.DataFrame(columns=["machine_type"])
        kinds = a["alert_kind"].fillna("anomaly") if "alert_kind" in a.columns else pd.Series(["anomaly"] * len(a))
        types = sorted(set(m.get("models") or {}) | set(counts.index) | set(a["machine_type"]))
        night = label if labels.count(label) == 1 else f"{label} {m['run_id']}"
        for mt in types:
            mine = (a["machine_type"] == mt).to_numpy()
            rows.append({"night": night, "run_date": str(m.get("date")), "run_id": m["run_id"], "machine_type": mt,
                         "n_scored": int(counts.get(mt, 0)),
                         "anomaly_alerts": int((mine & (kinds != "sensor").to_numpy()).sum()),
                         "sensor_alerts": int((mine & (kinds == "sensor").to_numpy()).sum())})
    return pd.DataFrame(rows, columns=["night", "run_date", "run_id", "machine_type", "n_scored", "anomaly_alerts",
                                       "sensor_alerts"])


def _last_nights(n: int) -> str:
    return "the last night" if n == 1 else f"the last {n} nights"


def _kinds_of(record: dict) -> str:
    kinds = record.get("model_kinds")
    return f" with model kind {', '.join(kinds)}" if kinds else ""


def _same_kinds(run: dict, record: dict) -> bool:
    mine, theirs = record.get("model_kinds"), run.get("model_kinds")
    return not mine or not theirs or sorted(mine) == sorted(theirs)


def clip_dates(rows) -> list[str]:
    """The distinct ``date`` fields (template or manifest) of score rows (an Arrow table
    with ``attributes``), sorted; ``[]`` when they have none."""
    from .store.rows import fields

    found = fields(rows["attributes"]).get("date") if rows.num_rows else None
    return sorted({d for d in found.to_pylist() if d}) if found is not None else []


def format_trend(trend: pd.DataFrame) -> str:
    """:func:`alert_trend` as a text table: one line per night, one column per machine
    type (clips over threshold, ``+N s`` sensor alerts)."""
    if trend.empty:
        return "no night scored clips"
    types = sorted(trend["machine_type"].unique())
    head = ["night", "run", "clips", *types]
    body = []
    for (_, rid), g in trend.groupby(["night", "run_id"], sort=False):
        by = g.set_index("machine_type")
        cells = []
        for mt in types:
            if mt not in by.index:
                cells.append("-")
                continue
            a, s = int(by.at[mt, "anomaly_alerts"]), int(by.at[mt, "sensor_alerts"])
            cells.append(f"{a}" + (f" +{s} s" if s else ""))
        body.append([str(g["night"].iloc[0]).removesuffix(f" {rid}"), str(rid), str(int(g["n_scored"].sum())), *cells])
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in [head, *body]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------- the metrics (labelled runs)
def run_metrics(store, record: dict) -> tuple[list, pd.DataFrame]:
    """(sections, evaluated rows) of one published run (its rows of the metrics and
    evaluated tables, or the files of the former layout)."""
    metrics = store.read_output("metrics", record)
    evaluated = store.read_output("evaluated", record)
    sections = results.sections_from_table(metrics) if metrics is not None else []
    rows = evaluated.to_pandas() if evaluated is not None else results.empty_scores().to_pandas()
    return sections, rows


def _metrics_text(store, runs: list[dict], record: dict, latest_kinds: bool) -> tuple[str, pd.DataFrame, str]:
    """(the metrics text, the evaluated rows to plot, the run ids they come from)."""
    rid = record["run_id"]
    sections, rows = run_metrics(store, record)
    if not sections:
        return ("none: an unlabelled night (labels come from DCASE file names, a template's or manifest's "
                "label, or --ground-truth)"), rows, rid
    table, plot_runs = results.format_table(sections), rid
    if latest_kinds:
        # Every kind's latest metrics per (machine type, section), newest run first.
        latest: dict[tuple[str, str, str], object] = {}
        used_rows, used_runs = [], []
        for m in reversed(runs):
            if m.get("split") != record.get("split"):
                continue
            secs, r = (sections, rows) if m["run_id"] == rid else run_metrics(store, m)
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
    return table, rows, plot_runs


# ---------------------------------------------------------------- the report
def build_report(opts: ReportOptions) -> dict[str, Any]:
    """Build and write the report of one published run; returns ``{"run_id", "table",
    "files", "alerts", "trend", "training"}`` (``files``: what was written under
    OUT_URI, then under ``local_dir``; ``alerts`` and ``trend`` as DataFrames)."""
    from .runstore import RunStore

    out = open_location(opts.out_uri, opts.endpoint_url)
    store = RunStore(out)
    runs = store.runs()
    if not runs:
        raise FileNotFoundError(f"no published scoring run under {out.uri}")
    try:
        record, note = choose_run(runs, opts.run_id)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e} under {out.uri}") from None
    rid = check_segment(record["run_id"], "run id")  # the report's folder under OUT_URI
    night_t = store.read_run(record)
    night = night_t.to_pandas()
    dates = clip_dates(night_t)
    training = training_scores(night, record, opts.endpoint_url)
    alerts_t = store.read_output("alerts", record)
    alerts = night_alerts(alerts_t.to_pandas() if alerts_t is not None else None, training)
    trend = alert_trend(store, runs, record, opts.nights)
    metrics, rows, plot_runs = _metrics_text(store, runs, record, latest_kinds=opts.run_id is None)
    labelled = not results.evaluable(rows).empty

    when = f"clips of {', '.join(dates[:3])}{' ...' if len(dates) > 3 else ''}, " if dates else ""
    head = (f"run {rid} ({record.get('split')}, {when}run date {record.get('date')}): {record['n_rows']} clips scored, "
            f"{record['n_error']} errors, {record.get('n_skipped', 0)} carried from earlier runs")
    if record["n_error"]:
        head += f" {record.get('errors_by_reason', {})}"
    if record.get("models_uri"):
        head += f"; models {record['models_uri']}"
    if note:
        head = f"{note}\n{head}"
    n_anom = int((alerts["alert_kind"] != "sensor").sum()) if len(alerts) else 0
    acts = [
        f"Alerts of the night ({n_anom} clip{'s' if n_anom != 1 else ''} over threshold, {len(alerts) - n_anom} "
        f"sensor alert{'s' if len(alerts) - n_anom != 1 else ''}; most severe first; ratio = score / threshold):\n"
        + format_alerts(alerts),
        f"Alerts per night ({_last_nights(trend['night'].nunique())} that scored clips{_kinds_of(record)}; "
        "clips over threshold, +N s = sensor alerts):\n" + format_trend(trend),
    ]
    # a labelled run is an evaluation: its metrics first; an unlabelled night is read for its alerts
    parts = [head, metrics, *acts] if labelled else [head, *acts, "Metrics: " + metrics]
    text = "\n\n".join(parts) + "\n"

    outputs: dict[str, bytes] = {"table.txt": text.encode(),
                                 "alerts.csv": alerts.to_csv(index=False).encode(),
                                 "trend.csv": trend.to_csv(index=False).encode()}
    captions: dict[str, str] = {}
    if opts.plots:
        outputs["trend.png"] = plots_.plot_trend(trend)
        captions["trend.png"] = "Alerts per machine type over the last nights"
        for mt, ref in training.items():
            if _folder(mt):
                outputs[f"night_{mt}.png"] = plots_.plot_night(night, mt, ref, rid, opts.hist_log)
                captions[f"night_{mt}.png"] = f"{mt}: the night's scores against the training clips' scores"
        ev = results.evaluable(rows)
        for mt in sorted(ev["machine_type"].unique()) if labelled else []:
            if _folder(mt):
                outputs[f"roc_{mt}.png"] = plots_.plot_roc(rows, mt, plot_runs)
                outputs[f"hist_{mt}.png"] = plots_.plot_histogram(rows, mt, plot_runs, opts.hist_log)
    outputs["index.html"] = _index_html(out.uri, rid, head, alerts, trend, metrics, labelled,
                                        [n for n in outputs if n.endswith(".png")], captions).encode()
    rdir = f"{out.path}/report/{rid}"
    files = []
    for name, data in outputs.items():
        write_bytes(out, f"{rdir}/{name}", data)
        files.append(out.uri_of(f"{rdir}/{name}"))
    if opts.local_dir:
        os.makedirs(opts.local_dir, exist_ok=True)
        for name, data in outputs.items():
            with open(os.path.join(opts.local_dir, name), "wb") as f:
                f.write(data)
            files.append(os.path.join(os.path.abspath(opts.local_dir), name))
    return {"run_id": rid, "table": text, "files": files, "alerts": alerts, "trend": trend, "training": training}


def _folder(mt: str) -> bool:
    if not is_segment(mt):  # <kind>_<mt>.png must stay in the report folder
        log.warning("no plots for machine type %r: not a folder name", mt)
        return False
    return True


def _index_html(out_uri: str, run_id: str, head: str, alerts: pd.DataFrame, trend: pd.DataFrame, metrics: str,
                labelled: bool, images: list[str], captions: dict[str, str]) -> str:
    """One page: the header, the alerts table, the trend, the per-type panels, then the
    metrics and (labelled runs) the ROC and histogram plots."""
    e = html.escape

    def figure(n: str) -> str:
        return f'<figure><img src="{e(n)}" alt="{e(n)}"><figcaption>{e(captions.get(n, n))}</figcaption></figure>'

    shown = alerts.head(HTML_ALERTS)
    if shown.empty:
        alert_html = "<p>No alerts: no clip over its threshold, no sensor fault.</p>"
    else:
        cols = [c for c in shown.columns if c not in ("file_name", "error", "run_id", "scored_at", "model_kind")]
        cells = "".join(f"<th>{e(c)}</th>" for c in cols)
        body = []
        for r in shown[cols].to_dict("records"):
            tds = "".join(f"<td>{e(_cell(c, r[c]))}</td>" for c in cols)
            body.append(f"<tr{' class=sensor' if r['alert_kind'] == 'sensor' else ''}>{tds}</tr>")
        more = (f"<p>{len(alerts) - HTML_ALERTS} more in alerts.csv.</p>" if len(alerts) > HTML_ALERTS else "")
        alert_html = f'<table><tr>{cells}</tr>\n{chr(10).join(body)}</table>{more}'
    nights = [n for n in images if n.startswith("night_")]
    labelled_imgs = [n for n in images if n.startswith(("roc_", "hist_"))]
    trend_img = figure("trend.png") if "trend.png" in images else ""
    metrics_html = (f"<h2>Metrics</h2>\n<p>AUC and pAUC (p = 0.1) as the DCASE 2023 Task 2 evaluator computes them."
                    f"</p>\n<pre>{e(metrics)}</pre>\n{chr(10).join(figure(n) for n in labelled_imgs)}"
                    if labelled else f"<h2>Metrics</h2>\n<p>{e(metrics)}</p>")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>asd report {e(run_id)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} pre{{font-size:12px;background:#f6f6f6;padding:1em;overflow-x:auto}}
table{{border-collapse:collapse;font-size:12px}} td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}
tr.sensor{{background:#fff4e0}} figure{{display:inline-block;margin:0 1em 1em 0;vertical-align:top}}
figcaption{{font-size:12px;color:#555}}</style>
</head><body>
<h1>Run {e(run_id)}</h1>
<p>Scoring output {e(out_uri)}.</p>
<pre>{e(head)}</pre>
<h2 id="alerts">Alerts of the night</h2>
<p>Most severe first: clips over their model's threshold by ratio (score / threshold), then sensor faults
(a dead, silent or unreadable microphone). All of them: <a href="alerts.csv">alerts.csv</a>.</p>
{alert_html}
<h2 id="trend">Alerts per night</h2>
<pre>{e(format_trend(trend))}</pre>
{trend_img}
<p><a href="trend.csv">trend.csv</a></p>
<h2 id="night">The night against training, per machine type</h2>
{chr(10).join(figure(n) for n in nights) or "<p>No plots (no clip scored, or --no-plots).</p>"}
{metrics_html}
</body></html>
"""
