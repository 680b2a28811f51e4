"""The method must find anomalies: train the tiny preset on generated normal hums and
check that clips with clicks, a new tone or a gap score higher."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from asd_core.artifact import list_artifacts, load_artifact, save_artifact
from asd_core.config import preset
from asd_core.detector import Scorer, train_type

from .signals import ANOMALIES, harmonic_tone


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    cfg = preset("tiny")
    losses = []
    tt = train_type([harmonic_tone(rng) for _ in range(30)], cfg, on_epoch=lambda e, loss: losses.append(loss))
    return cfg, tt, losses


def test_loss_decreases(trained):
    _, tt, losses = trained
    assert len(losses) == preset("tiny").train.epochs
    assert losses[-1] < 0.9 * losses[0]
    assert tt.summary["losses"] == losses


@pytest.mark.parametrize("anomaly", ANOMALIES, ids=lambda f: f.__name__)
def test_anomalies_score_higher(trained, anomaly):
    cfg, tt, _ = trained
    scorer = Scorer({"hum": tt.artifact("hum", "unet-test")})
    rng = np.random.default_rng(42)
    normal = [scorer.score_wav("hum", harmonic_tone(rng)).score for _ in range(12)]
    anomalous = [scorer.score_wav("hum", anomaly(rng, harmonic_tone(rng))).score for _ in range(12)]
    auc = roc_auc_score([0] * 12 + [1] * 12, normal + anomalous)
    assert auc >= 0.9, auc


def test_threshold_flags_few_normals(trained):
    cfg, tt, _ = trained
    scorer = Scorer({"hum": tt.artifact("hum", "unet-test")})
    rng = np.random.default_rng(7)
    decisions = [scorer.score_wav("hum", harmonic_tone(rng)).decision for _ in range(20)]
    assert sum(decisions) <= 8  # ~10% expected at the 90th percentile


def test_artifact_round_trip(trained, tmp_path):
    cfg, tt, _ = trained
    model_id = save_artifact(str(tmp_path), "hum", tt.fitted, cfg, tt.summary)
    assert model_id.startswith("unet-") and list_artifacts(str(tmp_path)) == ["hum"]
    art = load_artifact(str(tmp_path), "hum", expect_config=cfg)
    assert art.kind == "unet" and art.model_id == model_id and art.threshold == tt.threshold
    assert not Scorer({"hum": art}).detectors["hum"].model.training
    wav = harmonic_tone(np.random.default_rng(3))
    before = Scorer({"hum": tt.artifact("hum", model_id)})
    assert Scorer({"hum": art}).score_wav("hum", wav).score == pytest.approx(before.score_wav("hum", wav).score)


def test_artifact_refuses_other_feature_config(trained, tmp_path):
    from asd_core.artifact import ArtifactError

    cfg, tt, _ = trained
    save_artifact(str(tmp_path), "hum", tt.fitted, cfg)
    with pytest.raises(ArtifactError, match="features"):
        load_artifact(str(tmp_path), "hum", expect_config=cfg.override({"hop_length": 512}))
    with pytest.raises(ArtifactError, match="no model artifact"):
        load_artifact(str(tmp_path), "valve")


def test_domain_repeats_balance_target_clips():
    from asd_core.kinds.base import domain_repeats

    reps = domain_repeats(["source"] * 990 + ["target"] * 10, 0.25)
    assert reps[:990] == [1] * 990 and set(reps[990:]) == {33}  # 330 / (990 + 330) = 0.25
    assert domain_repeats(["source"] * 10 + [None], 0.25) == [1] * 11  # no target clips
    assert domain_repeats(["source", "target"], 0.0) == [1, 1]
    assert domain_repeats(["target"] * 3, 0.5) == [1, 1, 1]
