"""Smoke test on real DCASE 2023 recordings: decode, features, a tiny model, scores."""

import numpy as np
import pytest

from asd_core.audio import decode
from asd_core.config import preset
from asd_core.dcase import parse_path
from asd_core.detector import Scorer, train_type
from asd_core.features import clip_tiles


def test_real_clips_parse_decode_and_tile(real_samples):
    files = sorted(real_samples.glob("*/*/*.wav"))
    assert len(files) >= 20
    cfg = preset("tiny").features
    for f in files:
        clip = parse_path(str(f))
        assert clip.machine_type == f.parts[-3] and clip.label in ("normal", "anomaly")
        wav = decode(f.read_bytes(), cfg.sample_rate, cfg.min_seconds)
        assert 9.5 <= wav.size / 16000 <= 12.5
        tiles = clip_tiles(wav, cfg)
        assert tiles.shape[1:] == (64, 64) and tiles.shape[0] >= 9
        assert np.isfinite(tiles.numpy()).all()


def test_tiny_model_on_real_train_clips_scores_real_test_clips(real_samples):
    cfg = preset("tiny").override({"epochs": 2})
    train = [decode(f.read_bytes()) for f in sorted(real_samples.glob("*/train/*.wav"))]
    tt = train_type(train, cfg)
    scorer = Scorer({"all": tt.artifact("all", "unet-real")})
    scores = [scorer.score_wav("all", decode(f.read_bytes())).score for f in sorted(real_samples.glob("*/test/*.wav"))]
    assert len(scores) == 14 and np.isfinite(scores).all() and min(scores) > 0



def test_real_samples_folder_comes_from_the_environment(tmp_path, monkeypatch, request):
    """$ASD_REAL_SAMPLES points the fixture at any folder."""
    monkeypatch.setenv("ASD_REAL_SAMPLES", str(tmp_path))
    assert request.getfixturevalue("real_samples") == tmp_path


def test_real_samples_env_naming_a_missing_folder_fails(tmp_path, monkeypatch, request):
    """A typo in $ASD_REAL_SAMPLES fails the test instead of skipping it silently."""
    monkeypatch.setenv("ASD_REAL_SAMPLES", str(tmp_path / "missing"))
    with pytest.raises(pytest.fail.Exception, match="ASD_REAL_SAMPLES"):
        request.getfixturevalue("real_samples")
