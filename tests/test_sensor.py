"""Sensor faults are not machine anomalies: a dead or unplugged microphone gives a
``low_level`` row, not the night's top score; a clip too long to decode safely is
refused from its header (``too_long``). No Ray: the pipeline's stages run directly."""

from __future__ import annotations

import numpy as np
import pytest

from asd_core.artifact import save_artifact
from asd_core.audio import AudioDecodeError, clip_level_db, decode, encode_wav
from asd_core.catalog import list_archive
from asd_core.config import preset
from asd_core.detector import train_type
from asd_core.pipeline import clip_items, fetch_decode, model_index
from asd_core.results import to_table
from asd_core.storage import open_location, write_bytes
from tests.signals import SR, harmonic_tone

LSB = 1.0 / 32768


def _machine(seed: int, seconds: float = 3.0) -> np.ndarray:
    return 0.1 * harmonic_tone(np.random.default_rng(seed), seconds=seconds)


def _dead_microphones(seconds: float = 3.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    n = int(seconds * SR)
    click = np.zeros(n, dtype=np.float32)
    click[n // 2 : n // 2 + 16] = 0.6  # one click in silence
    return {
        "dither": rng.choice([-LSB, 0.0, LSB], n).astype(np.float32),  # 1-LSB dither
        "dc": (0.2 + rng.choice([-LSB, LSB], n)).astype(np.float32),  # a bias voltage, nothing else
        "click": click,
    }


def test_level_of_dead_microphones_is_far_below_a_running_machine():
    normal = [clip_level_db(_machine(s)) for s in range(4)]
    for name, x in _dead_microphones().items():
        assert clip_level_db(x) < min(normal) - 30, name


def test_a_long_clip_is_refused_from_its_header():
    loud = np.tile(0.1 * np.sin(np.linspace(0, 2000, 48000 * 12))[:, None], (1, 8)).astype(np.float32)  # 12 s x 8 ch
    for fmt in ("WAV", "FLAC"):
        data = encode_wav(loud, 48000, fmt=fmt)
        with pytest.raises(AudioDecodeError) as e:
            decode(data, SR, max_seconds=10.0)
        assert e.value.reason == "too_long" and "8 channels" in str(e.value), fmt
        assert decode(data, SR, max_seconds=20.0).shape == (12 * SR,)


def test_dead_microphones_are_low_level_rows_not_scores(tmp_path):
    cfg = preset("tiny").override({"model.kind": "knn"})
    trained = train_type([_machine(s) for s in range(8)], cfg)
    assert set(trained.fitted.extras["level_db"]) == {"min", "median"}
    models = open_location(str(tmp_path / "models"))
    save_artifact(models, "fan", trained.fitted, cfg)
    data = open_location(str(tmp_path / "data"))
    clips = {"normal": _machine(100), **_dead_microphones(), "long": _machine(101, seconds=5.0)}
    for i, (name, x) in enumerate(clips.items()):
        write_bytes(data, f"{data.path}/fan/test/section_00_source_test_normal_{i:04d}_{name}_1.wav",
                    encode_wav(x, SR))
    index = model_index(models)
    items = clip_items(list_archive(data), data, index, "r1")
    rows = fetch_decode(to_table(items), data_uri=data.uri, endpoint_url=None, models=index,
                        max_seconds=4.0).to_pylist()
    by_name = {r["file_name"].split("_")[-2]: r for r in rows}
    assert by_name["normal"]["status"] is None and by_name["normal"]["tiles"]  # on to scoring
    for name in ("dither", "dc", "click"):
        assert by_name[name]["error_reason"] == "low_level", by_name[name]
        assert "microphone" in by_name[name]["error"]
    assert by_name["long"]["error_reason"] == "too_long"
