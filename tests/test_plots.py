"""asd_core.plots: what a reader of the report's figures must be able to see."""

from __future__ import annotations

import pytest
from sklearn.metrics import roc_auc_score

from asd_core import plots, results
from tests.test_results import _rows


def _frame(extra: list[dict] | None = None):
    return results.to_table(_rows() + (extra or [])).to_pandas()


def _texts(fig) -> str:
    parts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        parts += [ax.get_title(), *(t.get_text() for t in ax.texts)]
    return "\n".join(parts)


def test_roc_legend_carries_each_curves_auc_and_the_figure_explains_the_pauc_line():
    df = _frame()
    fig = plots.roc_figure(df, "fan", "night-7")
    [ax] = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    ev = results.evaluable(df)
    g = ev[(ev["machine_type"] == "fan") & (ev["section"] == "01")]
    sel = (g["domain"] == "target") | (g["label"] == "anomaly")
    auc = roc_auc_score(g.loc[sel, "label"] == "anomaly", g.loc[sel, "anomaly_score"])
    assert f"unet s01 target: AUC {auc:.3f}" in labels
    assert sum(": AUC " in lab for lab in labels) == 4  # 2 sections x 2 domains, each with its AUC
    text = _texts(fig)
    assert "night-7" in text and "pAUC" in text and "FPR 0 to 0.1" in text


def test_a_type_without_anomalies_says_so_instead_of_empty_axes():
    normals = [{**r, "path": r["path"] + "-valve", "machine_type": "valve"} for r in _rows()[:40]
               if r["label"] == "normal"]
    fig = plots.roc_figure(_frame(normals), "valve", "r1")
    [ax] = fig.axes
    assert "no anomalous clips" in _texts(fig) and not ax.lines
    assert plots.plot_roc(_frame(normals), "valve")[:4] == b"\x89PNG"


def test_histograms_one_panel_per_kind_and_domain_with_outlines_and_threshold_in_range():
    """A knn run whose scores sit far above its threshold: the panel's x range covers both,
    the bins are log-spaced, and the groups are outlines, not overlaid filled bars."""
    far = [{**r, "path": r["path"] + "-knn", "model_kind": "knn", "threshold": 5.0,
            "anomaly_score": 1000.0 + i + (300.0 if r["label"] == "anomaly" else 0.0)}
           for i, r in enumerate(_rows()[:40])]
    fig = plots.histogram_figure(_frame(far), "fan", "r1")
    titles = sorted(ax.get_title() for ax in fig.axes)
    assert titles == ["knn, no domain", "knn, source", "knn, target",
                      "unet, no domain", "unet, source", "unet, target"]
    knn = next(ax for ax in fig.axes if ax.get_title() == "knn, source")
    lo, hi = knn.get_xlim()
    assert lo <= 5.0 and hi >= 1300.0 and knn.get_xscale() == "log"
    assert all(p.get_fill() is False for p in knn.patches) and len(knn.patches) == 2  # normal, anomaly
    unet = next(ax for ax in fig.axes if ax.get_title() == "unet, source")
    assert unet.get_xscale() == "linear"
    assert [t.get_text() for t in unet.get_legend().get_texts()][:2] == ["normal (11)", "anomaly (10)"]
    # forced linear keeps every score and the threshold in range too
    lin = plots.histogram_figure(_frame(far), "fan", log=False)
    ax = next(a for a in lin.axes if a.get_title() == "knn, target")
    assert ax.get_xscale() == "linear" and ax.get_xlim()[0] <= 5.0 and ax.get_xlim()[1] >= 1300.0


@pytest.mark.parametrize("log", [None, True])
def test_histogram_of_a_single_score_value(log):
    one = [{**_rows()[0], "path": "x", "machine_type": "pump", "anomaly_score": 2.0, "threshold": 2.0}]
    assert plots.plot_histogram(_frame(one), "pump", "r", log)[:4] == b"\x89PNG"


def test_night_panel_draws_a_unet_models_training_scores_under_the_nights():
    """A tiny U-Net trained here keeps its training scores' quantiles; the panel draws
    them as a filled area (shares summing to 1), the night's real scores as an outline
    and ticks, and the threshold with how many clips are above it."""
    import numpy as np

    from asd_core.config import preset
    from asd_core.detector import Scorer, train_type
    from tests.signals import add_clicks, harmonic_tone

    rng = np.random.default_rng(5)
    trained = train_type([harmonic_tone(rng, 2.0) for _ in range(4)], preset("tiny").override({"epochs": 1}))
    q = trained.summary["train_score_quantiles"]
    assert len(q) == 101 and q == sorted(q)
    scorer = Scorer({"fan": trained.artifact("fan", "unet-x")})
    wavs = [harmonic_tone(rng, 2.0) for _ in range(3)] + [add_clicks(rng, harmonic_tone(rng, 2.0), rate_hz=20.0)]
    scores = [scorer.score_wav("fan", w) for w in wavs]
    rows = [{**_rows()[0], "path": f"n{i}", "machine_type": "fan", "label": None, "anomaly_score": c.score,
             "threshold": c.threshold, "decision": c.decision, "model_id": c.model_id} for i, c in enumerate(scores)]
    ref = plots.TrainingScores(trained.threshold, tuple(q), trained.summary["train_score_mean"],
                               trained.summary["train_score_std"], 4, "unet-x", "unet")
    assert ref.source == "quantiles"
    fig = plots.night_figure(_frame(rows)[lambda d: d["path"].str.startswith("n")], "fan", ref, "night-3")
    [ax] = fig.axes
    filled = [p for p in ax.patches if p.get_fill()]
    assert len(filled) == 1 and abs(filled[0].get_data().values.sum() - 1.0) < 1e-6
    n_over = sum(c.score > trained.threshold for c in scores)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "4 training clips" and "this night (4 clips)" in labels
    assert any(lab.startswith("threshold") and f": {n_over} clip" in lab for lab in labels)
    assert "101 quantiles" in _texts(fig) and "night-3" in _texts(fig)
    assert plots.plot_night(_frame(rows), "fan", ref)[:4] == b"\x89PNG"


def test_trend_draws_one_line_per_type_and_the_sensor_alerts():
    import pandas as pd

    trend = pd.DataFrame([
        {"night": "2026-11-24", "machine_type": "press", "anomaly_alerts": 2, "sensor_alerts": 0},
        {"night": "2026-11-24", "machine_type": "pump", "anomaly_alerts": 0, "sensor_alerts": 1},
        {"night": "2026-11-25", "machine_type": "press", "anomaly_alerts": 5, "sensor_alerts": 0},
        {"night": "2026-11-25", "machine_type": "pump", "anomaly_alerts": 1, "sensor_alerts": 0},
    ])
    [ax] = plots.trend_figure(trend).axes
    lines = {ln.get_label(): list(ln.get_ydata()) for ln in ax.lines}
    assert lines == {"press": [2, 5], "pump": [0, 1], "sensor alerts (all types)": [1, 0]}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2026-11-24", "2026-11-25"]
    [empty] = plots.trend_figure(trend.iloc[:0]).axes
    assert "no night scored clips" in _texts(empty.figure)
