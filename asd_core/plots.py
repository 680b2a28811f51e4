"""Plots of score rows (``asd_core.results.SCORE_SCHEMA`` as a DataFrame): ROC curves and
anomaly-score histograms per machine type, as matplotlib Figures or PNG bytes.

No pyplot: each figure is its own object (no global state, safe in threads and Ray
workers). Every figure names the run it shows and carries a note that says how to read it.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from .stages import DEFAULT_KIND

# p of the DCASE pAUC: the ROC area up to this false positive rate
PAUC_MAX_FPR = 0.1


def _kinds(df: pd.DataFrame) -> pd.DataFrame:
    kinds = df["model_kind"].fillna("").replace("", DEFAULT_KIND) if "model_kind" in df.columns else DEFAULT_KIND
    return df.assign(model_kind=kinds)


def _run_ids(df: pd.DataFrame, run_id: str | None) -> str:
    if run_id:
        return run_id
    ids = sorted(set(df["run_id"].dropna())) if "run_id" in df.columns else []
    return ", ".join(ids) if ids else "?"


def _empty_panel(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="dimgrey", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def roc_figure(df: pd.DataFrame, machine_type: str, run_id: str | None = None):
    """ROC curves of one machine type: per model kind and section, the AUC(source) and
    AUC(target) selections (the domain's normals + all anomalies, as the DCASE
    evaluator), each labelled with its AUC. A type whose labelled clips hold no anomaly
    (or no normal) has no ROC: the panel says so instead of showing empty axes."""
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_auc_score, roc_curve

    from .results import evaluable

    ev = evaluable(df)
    ev = _kinds(ev[ev["machine_type"] == machine_type])
    fig = Figure(figsize=(5.5, 5.4))
    ax = fig.add_subplot()
    ax.set_title(f"ROC: {machine_type}   (run {_run_ids(df[df['machine_type'] == machine_type], run_id)})",
                 fontsize=10)
    labels = set(ev["label"])
    if ev.empty or labels != {"normal", "anomaly"}:
        missing = "no labelled clips" if ev.empty else ("no anomalous clips" if "anomaly" not in labels
                                                         else "no normal clips")
        _empty_panel(ax, f"{missing}:\nno ROC curve for {machine_type}")
        return fig
    styles = {"source": "-", "target": "--"}
    for i, ((kind, sec), g) in enumerate(ev.groupby(["model_kind", "section"], sort=True)):
        y = (g["label"] == "anomaly").astype(int).to_numpy()
        s = g["anomaly_score"].to_numpy(dtype=float)
        dom = g["domain"].fillna("").to_numpy()
        for d in ("source", "target"):
            sel = (dom == d) | (y == 1)
            if len(np.unique(y[sel])) < 2:
                continue
            fpr, tpr, _ = roc_curve(y[sel], s[sel])
            auc = roc_auc_score(y[sel], s[sel])
            ax.plot(fpr, tpr, styles[d], color=f"C{i}", linewidth=1.8, label=f"{kind} s{sec} {d}: AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance (AUC 0.5)")
    ax.axvspan(0, PAUC_MAX_FPR, color="grey", alpha=0.08)
    ax.axvline(PAUC_MAX_FPR, color="grey", linestyle="--", linewidth=0.8, label=f"pAUC limit: FPR {PAUC_MAX_FPR:g}")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    ax.legend(loc="lower right", fontsize=7)
    fig.text(0.01, -0.02, f"Solid: AUC(source), dashed: AUC(target) (each: that domain's normals + all anomalies).\n"
             f"Shaded up to the dashed grey line: the pAUC range, FPR 0 to {PAUC_MAX_FPR:g} (the DCASE p).",
             fontsize=7, va="top", color="dimgrey")
    return fig


def histogram_figure(df: pd.DataFrame, machine_type: str, run_id: str | None = None, log: bool | None = None):
    """Anomaly-score histograms of one machine type: one panel per model kind (rows)
    and domain (columns), normal and anomalous clips as step outlines over the same
    bins (unlabelled clips as a third outline), the kind's decision threshold(s) as
    vertical lines. The x range covers the scores and the threshold, so bars stay
    visible when they are far apart; ``log`` uses log-spaced bins and axis (None: when
    every score is positive and they span more than a factor 100)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from .results import STATUS_OK

    ok = df[(df["status"] == STATUS_OK) & (df["machine_type"] == machine_type) & df["anomaly_score"].notna()]
    ok = _kinds(ok).assign(label=ok["label"].fillna("unlabelled"), domain=ok["domain"].fillna("no domain"))
    kinds = sorted(ok["model_kind"].unique()) or [DEFAULT_KIND]
    domains = sorted(ok["domain"].unique()) or ["no domain"]
    fig = Figure(figsize=(4.6 * len(domains), 2.9 * len(kinds) + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(kinds), len(domains), squeeze=False))
    fig.suptitle(f"Scores: {machine_type}   (run {_run_ids(df[df['machine_type'] == machine_type], run_id)})",
                 fontsize=10)
    colors = {"normal": "C0", "anomaly": "C3", "unlabelled": "C7"}
    for r, kind in enumerate(kinds):
        kd = ok[ok["model_kind"] == kind]
        thresholds = sorted(set(kd["threshold"].dropna().astype(float)))
        values = np.concatenate([kd["anomaly_score"].to_numpy(dtype=float), thresholds]) if len(kd) else np.array([])
        use_log = log
        if use_log is None:
            use_log = bool(len(values)) and values.min() > 0 and values.max() / values.min() > 100
        if len(values):
            lo, hi = float(values.min()), float(values.max())
            if use_log and lo > 0:
                bins = np.geomspace(lo, hi * 1.0001, 31) if hi > lo else np.geomspace(lo * 0.9, lo * 1.1, 31)
            else:
                use_log = False
                pad = (hi - lo) * 0.02 or max(abs(lo), 1.0) * 0.05
                bins = np.linspace(lo - pad, hi + pad, 31)
        for c, dom in enumerate(domains):
            ax = axes[r, c]
            g = kd[kd["domain"] == dom]
            ax.set_title(f"{kind}, {dom}", fontsize=9)
            if g.empty:
                _empty_panel(ax, "no clips")
                continue
            for lab in ("normal", "anomaly", "unlabelled"):
                s = g.loc[g["label"] == lab, "anomaly_score"].to_numpy(dtype=float)
                if len(s):
                    ax.hist(s, bins=bins, histtype="step", linewidth=1.8, color=colors[lab], label=f"{lab} ({len(s)})")
            for thr in thresholds:
                ax.axvline(thr, color="black", linestyle="--", linewidth=1, label=f"threshold {thr:.3g}")
            if use_log:
                ax.set_xscale("log")
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set(xlabel="anomaly score" + (" (log scale)" if use_log else ""), ylabel="clips")
            ax.legend(fontsize=7)
    fig.text(0.01, 0, "Outlines: clips per score bin (legend: how many). Dashed: the model's decision threshold; "
             "clips above it are decided anomalous.", fontsize=7, va="top", color="dimgrey")
    return fig


def plot_roc(df: pd.DataFrame, machine_type: str, run_id: str | None = None) -> bytes:
    """PNG of :func:`roc_figure`."""
    return png(roc_figure(df, machine_type, run_id))


def plot_histogram(df: pd.DataFrame, machine_type: str, run_id: str | None = None, log: bool | None = None) -> bytes:
    """PNG of :func:`histogram_figure`."""
    return png(histogram_figure(df, machine_type, run_id, log))
