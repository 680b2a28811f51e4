import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from asd_core.metrics import gamma_threshold, official_score, section_metrics


def test_hand_computed_case():
    # source: normals 0.1, 0.4; target: normals 0.35, 0.8; anomalies 0.3 (source), 0.9 (target)
    y = [0, 0, 0, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8, 0.3, 0.9]
    d = ["source", "source", "target", "target", "source", "target"]
    dec = [0, 1, 0, 1, 0, 1]
    m = section_metrics("fan", "00", y, s, d, dec)
    # AUC(source): normals {0.1, 0.4} vs ALL anomalies {0.3, 0.9}: pairs won 1+2 of 4 -> 0.75
    assert m.auc_source == pytest.approx(0.75)
    # AUC(target): normals {0.35, 0.8} vs {0.3, 0.9}: (0.3 beats none, 0.9 beats both) -> 2/4
    assert m.auc_target == pytest.approx(0.5)
    # source decisions: y=[0,0,1] dec=[0,1,0] -> tp 0, fp 1 -> precision 0, recall 0
    assert (m.precision_source, m.recall_source, m.f1_source) == (0.0, 0.0, 0.0)
    # target decisions: y=[0,0,1] dec=[0,1,1] -> tp 1, fp 1, fn 0
    assert m.precision_target == pytest.approx(0.5) and m.recall_target == pytest.approx(1.0)
    assert m.f1_target == pytest.approx(2 / 3)


def test_equals_sklearn_on_random_data():
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 2, n)
    s = rng.normal(size=n) + y * 0.8
    d = np.where(rng.random(n) < 0.5, "source", "target")
    m = section_metrics("x", "00", y, s, d, (s > 0.5).astype(int))
    for dom, got in (("source", m.auc_source), ("target", m.auc_target)):
        sel = (d == dom) | (y == 1)  # that domain's normals + all anomalies
        assert got == pytest.approx(roc_auc_score(y[sel], s[sel]))
        only = d == dom
        assert got != pytest.approx(roc_auc_score(y[only], s[only]))  # the domain rule matters here
    assert m.pauc == pytest.approx(roc_auc_score(y, s, max_fpr=0.1))


def test_official_score_is_harmonic_mean():
    a = section_metrics("a", "00", [0, 1, 0, 1], [0.1, 0.9, 0.2, 0.3], ["source"] * 2 + ["target"] * 2, [0] * 4)
    b = section_metrics("b", "00", [0, 1, 0, 1], [0.5, 0.4, 0.1, 0.9], ["source"] * 2 + ["target"] * 2, [0] * 4)
    vals = [a.auc_source, a.auc_target, a.pauc, b.auc_source, b.auc_target, b.pauc]
    assert official_score([a, b]) == pytest.approx(scipy.stats.hmean(vals))


def test_missing_class_gives_nan_not_crash():
    m = section_metrics("x", "00", [0, 0], [0.1, 0.2], ["source", "target"], [0, 0])
    assert np.isnan(m.auc_source) and np.isnan(m.pauc)


def test_gamma_threshold():
    rng = np.random.default_rng(0)
    x = rng.gamma(4.0, 0.5, 2000) + 1.0
    thr = gamma_threshold(x, 0.9)
    assert thr == pytest.approx(np.quantile(x, 0.9), rel=0.03)
    assert gamma_threshold(x, 0.5) < thr
    assert gamma_threshold([2.0, 2.0, 2.0]) == 2.0  # degenerate: empirical
    with pytest.raises(ValueError):
        gamma_threshold([np.nan])


def test_gamma_threshold_stays_near_the_data_when_a_few_scores_sit_apart():
    # 60 source-like training scores and 6 higher target-like ones: a free-location
    # gamma fit degenerates here and lands far above every score.
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0.64, 0.03, 60), rng.normal(0.9, 0.03, 6)])
    assert np.quantile(x, 0.85) < gamma_threshold(x, 0.9) < x.max()
