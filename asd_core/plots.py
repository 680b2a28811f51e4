"""Plots of score rows (``asd_core.results.SCORE_SCHEMA`` as a DataFrame): ROC curves and
anomaly-score histograms per machine type, a night's scores against the training clips'
scores, and the alerts per machine type over the last nights; as matplotlib Figures or
PNG bytes.

No pyplot: each figure is its own object (no global state, safe in threads and Ray
workers). Every figure names the run it shows and carries a note that says how to read it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

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


def _bins(values: np.ndarray, log: bool | None, n: int = 30, span: float = 100.0) -> tuple[np.ndarray, bool]:
    """``n`` bins over ``values`` (scores and thresholds) and whether they are log-spaced
    (``log`` None: when every value is positive and they span more than a factor ``span``)."""
    values = values[np.isfinite(values)]
    if not len(values):
        return np.linspace(0.0, 1.0, n + 1), False
    lo, hi = float(values.min()), float(values.max())
    use_log = log if log is not None else bool(lo > 0 and hi / lo > span)
    if use_log and lo > 0:
        return (np.geomspace(lo, hi * 1.0001, n + 1) if hi > lo else np.geomspace(lo * 0.9, lo * 1.1, n + 1)), True
    pad = (hi - lo) * 0.02 or max(abs(lo), 1.0) * 0.05
    return np.linspace(lo - pad, hi + pad, n + 1), False


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
        bins, use_log = _bins(values, log)
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


# ---------------------------------------------------------------- a night against training
@dataclass(frozen=True)
class TrainingScores:
    """What a machine type's artifact says about the scores of its training clips:
    the 0 %, 1 %, ..., 100 % quantiles (:func:`asd_core.artifact.score_quantiles`;
    empty for artifacts trained before they were kept), their mean and standard
    deviation, and the decision threshold. ``problem`` says why the artifact could not
    be read (then only the threshold of the score rows is known)."""

    threshold: float | None
    quantiles: tuple[float, ...] = ()
    mean: float | None = None
    std: float | None = None
    n_clips: int | None = None
    model_id: str = ""
    model_kind: str = ""
    problem: str = ""

    @property
    def source(self) -> str:
        """``quantiles``, ``mean_std`` (older artifacts) or ``threshold`` (no statistics)."""
        if len(self.quantiles) >= 2:
            return "quantiles"
        if self.mean is not None and self.std is not None and np.isfinite(self.mean) and np.isfinite(self.std):
            return "mean_std"
        return "threshold"


def night_figure(df: pd.DataFrame, machine_type: str, training: TrainingScores, run_id: str | None = None,
                 log: bool | None = None):
    """One machine type's scores of a night over the distribution of its training
    clips' scores: the training clips as a grey area (share per score bin, from the
    artifact's quantiles; for older artifacts a band of mean +- 1 std), the night's
    clips as an outline (share per bin) and one tick each (red: over the threshold),
    the threshold as a dashed line. ``log`` (None: when the scores span over a factor
    10) uses log-spaced bins and axis. The note under it says which training statistics
    the artifact had."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from .results import STATUS_OK

    ok = df[(df["status"] == STATUS_OK) & (df["machine_type"] == machine_type) & df["anomaly_score"].notna()]
    s = ok["anomaly_score"].to_numpy(dtype=float)
    thr = training.threshold
    if thr is None and len(ok) and ok["threshold"].notna().any():
        thr = float(ok["threshold"].dropna().median())
    fig = Figure(figsize=(7.0, 3.9), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(f"{machine_type}: this night's scores against training   "
                 f"(run {_run_ids(df[df['machine_type'] == machine_type], run_id)})", fontsize=10)
    src = training.source
    q = np.asarray(training.quantiles, dtype=float) if src == "quantiles" else np.array([])
    ref = q if len(q) else (np.array([training.mean - training.std, training.mean + training.std])
                            if src == "mean_std" else np.array([]))
    # log-spaced from a factor 10: one loud clip must not squeeze the training scores into one bin
    bins, use_log = _bins(np.concatenate([s, ref, [thr] if thr is not None else []]), log, n=40, span=10.0)
    n_train = f"{training.n_clips} " if training.n_clips else ""
    if src == "quantiles":
        # the training scores' CDF at the bin edges: quantiles of few clips repeat a value
        # (a point mass), so take each value's highest level, and every edge of the bins
        # holds the whole range (the bins cover the quantiles)
        xs, last = np.unique(q[::-1], return_index=True)
        cdf = np.interp(bins, xs, (len(q) - 1 - last) / (len(q) - 1))
        cdf[0], cdf[-1] = 0.0, 1.0
        share = np.diff(cdf)
        ax.stairs(share, bins, fill=True, color="0.8", label=f"{n_train}training clips")
    elif src == "mean_std":
        ax.axvspan(training.mean - training.std, training.mean + training.std, color="0.85",
                   label=f"{n_train}training clips: mean +- 1 std")
        ax.axvline(training.mean, color="0.55", linewidth=1)
    if len(s):
        counts, _ = np.histogram(s, bins)
        ax.stairs(counts / len(s), bins, color="C0", linewidth=1.8, label=f"this night ({len(s)} clips)")
        over = s > thr if thr is not None else np.zeros(len(s), bool)
        for sel, color in ((~over, "C0"), (over, "C3")):
            if sel.any():
                ax.plot(s[sel], np.full(int(sel.sum()), 0.03), linestyle="none", marker="|", markersize=14,
                        color=color, transform=ax.get_xaxis_transform())
    else:
        ax.text(0.5, 0.6, f"no clip of {machine_type} scored this night", ha="center", fontsize=10,
                color="dimgrey", transform=ax.transAxes)
    if thr is not None:
        n_over = int((s > thr).sum())
        ax.axvline(thr, color="black", linestyle="--", linewidth=1,
                   label=f"threshold {thr:.3g}: {n_over} clip{'s' if n_over != 1 else ''} above")
    if use_log:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on a short log axis
    ax.set_xlim(*((bins[0] / 1.02, bins[-1] * 1.02) if use_log else
                  (bins[0] - 0.01 * (bins[-1] - bins[0]), bins[-1] + 0.01 * (bins[-1] - bins[0]))))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.set(xlabel="anomaly score" + (" (log scale)" if use_log else ""), ylabel="share of clips per bin")
    ax.legend(fontsize=7, loc="upper right")
    model = f"model {training.model_id}" if training.model_id else "model ?"
    notes = {
        "quantiles": f"Grey: the training clips' scores ({model}, from the 101 quantiles its artifact keeps).",
        "mean_std": f"Grey band: training mean +- 1 std ({model}); this artifact keeps no training-score "
                    "quantiles (trained before they were recorded): retrain to see the distribution.",
        "threshold": f"No training scores: {training.problem or 'the artifact keeps no training-score statistics'}; "
                     "only the threshold is drawn.",
    }
    fig.text(0.01, 0, notes[src] + "\nBlue: this night's clips (outline: share per bin; ticks: each clip, red above "
             "the threshold, i.e. an alert).", fontsize=7, va="top", color="dimgrey")
    return fig


def plot_night(df: pd.DataFrame, machine_type: str, training: TrainingScores, run_id: str | None = None,
               log: bool | None = None) -> bytes:
    """PNG of :func:`night_figure`."""
    return png(night_figure(df, machine_type, training, run_id, log))


# ---------------------------------------------------------------- alerts over the nights
def trend_figure(trend: pd.DataFrame):
    """Alerts per machine type and night (``trend``: one row per night and type with
    ``night``, ``machine_type``, ``anomaly_alerts``, ``sensor_alerts``, oldest night
    first): one line of clips over threshold per type, and the sensor alerts of every
    type as a dashed grey line when there are any."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    nights = list(dict.fromkeys(trend["night"])) if len(trend) else []
    fig = Figure(figsize=(max(6.0, 0.45 * len(nights) + 3.0), 4.0), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(f"Alerts per machine type, last {len(nights)} night{'s' if len(nights) != 1 else ''}", fontsize=10)
    if not nights:
        _empty_panel(ax, "no night scored clips")
        return fig
    x = np.arange(len(nights))
    for i, (mt, g) in enumerate(trend.groupby("machine_type", sort=True)):
        y = g.groupby("night")["anomaly_alerts"].sum().reindex(nights).fillna(0).to_numpy()
        ax.plot(x, y, marker="o", color=f"C{i % 10}", linewidth=1.6, label=str(mt))
    sensor = trend.groupby("night")["sensor_alerts"].sum().reindex(nights).fillna(0).to_numpy()
    if sensor.any():
        ax.plot(x, sensor, marker="x", linestyle="--", color="grey", linewidth=1.2, label="sensor alerts (all types)")
    ax.set_xticks(x, nights, rotation=45, ha="right", fontsize=7)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.set(xlabel="night (oldest first)", ylabel="clips over threshold")
    ax.legend(fontsize=7)
    return fig


def plot_trend(trend: pd.DataFrame) -> bytes:
    """PNG of :func:`trend_figure`."""
    return png(trend_figure(trend))
