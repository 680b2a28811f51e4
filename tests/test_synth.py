"""Synthetic archives (``asd synth``): layout, format, determinism, S3, difficulty."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sklearn.metrics import roc_auc_score

from asd_core import synth
from asd_core.dcase import parse_path
from asd_core.kinds.knn.reference import clip_features, evaluate_reference
from asd_core.neighbours import NeighbourBank
from asd_core.storage import open_location

TINY = {"train_source": 3, "train_target": 2, "test": 2, "seconds": 1.0}


def _files(root: Path) -> dict[str, bytes]:
    """``relative path -> bytes`` of every WAV under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.wav"))}


def test_synth_clip_shape_range_and_rng_isolation():
    state = np.random.get_state()
    for mt in synth.MACHINE_TYPES:
        for domain in ("source", "target"):
            for anomalous in (False, True):
                x, attrs = synth.synth_clip(mt, domain, anomalous, np.random.default_rng(1), seconds=0.5)
                assert x.dtype == np.float32 and x.shape == (8000,)
                assert np.all(np.isfinite(x)) and np.max(np.abs(x)) <= 1.0
                assert 1e-4 < np.sqrt(np.mean(x**2)) < 0.3  # a realistic level, not silence or clipping
                assert attrs.endswith("_noise_B" if domain == "target" else "_noise_A")
                assert all(c.isalnum() or c in "_.-" for c in attrs)  # file-name safe
    assert str(np.random.get_state()) == str(state)  # global random state untouched


def test_anomaly_kinds_and_severity_override():
    for mt, kinds in synth.ANOMALY_KINDS.items():
        for kind in kinds:
            cond = synth.draw_condition(mt, "source", True, np.random.default_rng(0), kind, 1.0)
            assert cond.anomaly == kind and cond.severity == 1.0
        assert synth.draw_condition(mt, "source", False, np.random.default_rng(0)).anomaly is None
    with pytest.raises(ValueError):
        synth.synth_clip("toaster", "source", False, np.random.default_rng(0))


def test_plan_counts_and_seeds_independent_of_sizes():
    plans = synth.plan_archive(["fan", "valve"], train_source=4, train_target=2, test=3)
    assert len(plans) == 2 * (4 + 2 + 4 * 3)
    names = {p.name.relpath() for p in plans}
    assert len(names) == len(plans)
    bigger = {p.name.relpath(): p.seed for p in synth.plan_archive(["fan", "valve"], 6, 2, 5)}
    assert all(bigger[p.name.relpath()] == p.seed for p in plans)
    assert all((p.anomaly is None) == (p.name.label == "normal") for p in plans)


def test_layout_names_and_wav_format(tmp_path):
    out = tmp_path / "arc"
    seen = []
    summary = synth.generate_archive(str(out), machines=["fan", "ToyTrain"], progress=lambda *a: seen.append(a), **TINY)
    assert summary["clips"] == 2 * (3 + 2 + 4 * 2) and summary["per_type"] == {"fan": 13, "ToyTrain": 13}
    assert seen and seen[-1][:2] == (26, 26)
    counts: dict[tuple, int] = {}
    for path in sorted(out.rglob("*.wav")):
        clip = parse_path(str(path))
        assert clip.machine_type == path.parent.parent.name
        key = (clip.machine_type, clip.split, clip.domain, clip.label)
        counts[key] = counts.get(key, 0) + 1
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
        assert info.frames == 16000
    for mt in ("fan", "ToyTrain"):
        assert counts[(mt, "train", "source", "normal")] == 3
        assert counts[(mt, "train", "target", "normal")] == 2
        for d in ("source", "target"):
            for lab in ("normal", "anomaly"):
                assert counts[(mt, "test", d, lab)] == 2
    assert (out / "synth_manifest.csv").read_text().count("\n") == 27


def test_progress_is_logged_without_carriage_returns(tmp_path, caplog):
    with caplog.at_level("INFO", logger="asd.synth"):
        synth.generate_archive(str(tmp_path / "a"), machines=["valve"], train_source=1, train_target=0, test=0,
                               seconds=0.5)
    assert "synth: 1/1 clips (100%)" in caplog.text and "\r" not in caplog.text


def test_same_seed_identical_other_seed_different(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        synth.generate_archive(str(tmp_path / name), machines=["gearbox", "valve"], seed=seed, progress=False, **TINY)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    assert sorted(a.values()) != sorted(c.values())
    assert not set(a.values()) & set(c.values())  # no clip repeats across seeds


def test_changing_test_count_leaves_train_unchanged(tmp_path):
    synth.generate_archive(str(tmp_path / "a"), machines=["bearing"], progress=False, **TINY)
    synth.generate_archive(str(tmp_path / "b"), machines=["bearing"], progress=False, **{**TINY, "test": 5})
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    train_a = {k: v for k, v in a.items() if "/train/" in k}
    assert train_a and train_a == {k: v for k, v in b.items() if "/train/" in k}
    # the first two test clips of each group are also unchanged
    assert all(b[k] == v for k, v in a.items())


@pytest.mark.s3
def test_writes_to_s3_through_moto(s3_bucket, s3_endpoint, tmp_path):
    uri = f"{s3_bucket}/synth/run1"
    synth.generate_archive(uri, machines=["slider"], endpoint_url=s3_endpoint, progress=False, **TINY)
    loc = open_location(uri, s3_endpoint)
    keys = sorted(k for k in loc.fs.find(loc.path) if k.endswith(".wav"))
    assert len(keys) == 3 + 2 + 4 * 2
    for key in keys:
        clip = parse_path(key)
        assert clip.machine_type == "slider"
    local = tmp_path / "local"
    synth.generate_archive(str(local), machines=["slider"], progress=False, **TINY)
    for rel, data in _files(local).items():
        remote = loc.fs.cat_file(f"{loc.path}/{rel}")
        assert remote == data  # same bytes whatever the store
        assert sf.info(io.BytesIO(remote)).samplerate == 16000


def test_job_main_writes_and_reports(tmp_path, capsys):
    from jobs.synth import main

    out = tmp_path / "job"
    rc = main(
        [
            str(out),
            "--machines",
            "fan,valve",
            "--train-source",
            "6",
            "--train-target",
            "2",
            "--test",
            "2",
            "--seconds",
            "1",
            "--seed",
            "3",
            "--reference",
            "--quiet",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "AUC(source)" in text and "fan" in text and "valve" in text
    assert len(list((out / "fan" / "train").glob("*.wav"))) == 8
    assert main([str(out), "--machines", "toaster"]) == 2


@pytest.mark.slow
def test_difficulty_bounds_reference(tmp_path):
    """Reduced archive: the k-NN reference finds the anomalies, but not trivially."""
    out = tmp_path / "arc"
    types = ["bearing", "fan", "gearbox"]
    synth.generate_archive(
        str(out), machines=types, train_source=60, train_target=10, test=20, seconds=4.0, progress=False
    )
    rows = evaluate_reference(str(out))
    assert [r["machine_type"] for r in rows] == sorted(types)
    for r in rows:
        assert r["n_train"] == 70 and r["n_test"] == 80
        aucs = [r["auc_source"], r["auc_target"], r["pauc"]]
        assert 0.6 <= r["auc_source"] <= 0.97, r
        assert 0.6 <= r["auc_target"] <= 0.97, r
        assert not all(v == 1.0 for v in aucs), r


@pytest.mark.slow
def test_normal_vs_normal_is_chance():
    """Normal clips from two seeds, half labelled 'anomaly': AUC about 0.5."""

    def feats(seed: int, count: int) -> np.ndarray:
        rngs = [np.random.default_rng([seed, i]) for i in range(count)]
        return np.stack([clip_features(synth.synth_clip("fan", "source", False, r, seconds=3.0)[0]) for r in rngs])

    train = feats(1, 60)
    a, b = feats(2, 30), feats(3, 30)
    scores = NeighbourBank.fit(train, k=5).score(np.concatenate([a, b]))
    auc = roc_auc_score(np.r_[np.zeros(30), np.ones(30)], scores)
    assert 0.35 <= auc <= 0.65, auc
