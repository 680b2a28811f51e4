"""`asd train`: concurrent Ray Train fits per machine type, S3 in and out, failure
resume, `--resume` and a type with no usable data failing alone (`ray job submit`:
tests/test_submit.py).

Ray Train start-up costs ~10-20 s per trainer on 2 cores, so each fit is reused for
several assertions.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from asd_core.artifact import load_artifact
from asd_core.audio import encode_wav
from asd_core.catalog import list_archive
from asd_core.config import preset
from asd_core.dcase import ClipName
from asd_core.features import Normalizer, fit_normalizer
from asd_core.kinds import get_kind
from asd_core.runtime import prepare_model
from asd_core.storage import open_location, write_bytes
from asd_core.trainprep import prepare_type, select_training_clips
from asd_core.trainrun import read_record
from tests.signals import harmonic_tone

N_CLIPS = 12
SECONDS = 3.0
TINY = {"epochs": "2", "threshold_max_clips": "6"}


def _set_args(overrides: dict[str, str]) -> list[str]:
    return [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]


def write_type(uri: str, machine_type: str, seed: int, n: int = N_CLIPS, endpoint: str | None = None) -> None:
    """``n`` seeded normal training clips of ``SECONDS`` s under ``<uri>/<machine_type>/train/``."""
    loc = open_location(uri, endpoint)
    rng = np.random.default_rng(seed)
    f0 = 150.0 + 40.0 * seed
    for i in range(n):
        name = ClipName(machine_type, "00", i, "train", "source", "normal", "a_1")
        wav = harmonic_tone(rng, SECONDS, f0=f0 + rng.uniform(-5, 5))
        write_bytes(loc, f"{loc.path}/{name.relpath()}", encode_wav(wav))


def write_corrupt(uri: str, machine_type: str, n: int, endpoint: str | None = None, start: int = 100) -> None:
    loc = open_location(uri, endpoint)
    for i in range(start, start + n):
        name = ClipName(machine_type, "00", i, "train", "source", "normal")
        write_bytes(loc, f"{loc.path}/{name.relpath()}", b"RIFF\x00\x00not really a wave file")


def local_first_epoch_loss(uri: str, machine_type: str, cfg, endpoint: str | None = None) -> float:
    """Single-process first-epoch loss on exactly the tiles the job trains on."""
    loc = open_location(uri, endpoint)
    paths, skipped, domains = select_training_clips(list_archive(loc, "train", [machine_type]))
    prep = prepare_type(loc, machine_type, paths, cfg, skipped=skipped, domains=domains)
    tiles = torch.from_numpy(prep.train_rows.astype(np.float32))
    kind = get_kind(cfg.model.kind)
    torch.manual_seed(cfg.train.seed)
    model = prepare_model(kind.build(cfg), cfg.model.channels_last)
    return kind.train_epoch(model, tiles, kind.optimizer(model, cfg), 0, cfg)


# ---------------------------------------------------------------- pure parts (no Ray)
def test_fit_normalizer_matches_normalizer_fit():
    g = torch.Generator().manual_seed(0)
    parts = [torch.randn(k, 8, 16, generator=g) * 10 - 40 for k in (3, 1, 5)]
    a, b = fit_normalizer(parts), Normalizer.fit(torch.cat(parts))
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-6)
    np.testing.assert_allclose(a.std, b.std, rtol=1e-5)


def test_a_stopped_run_marks_every_type_still_running(tmp_path):
    """A stop that lands anywhere after the run record says "running" (even before a
    type's task was submitted) leaves it "stopped", types done before untouched."""
    from asd_core.trainrun import TrainingRun, TrainOptions

    data, models = str(tmp_path / "data"), str(tmp_path / "models")
    for i, mt in enumerate(("fan", "valve", "pump")):
        write_type(data, mt, seed=i, n=2)
    run = TrainingRun(TrainOptions(data, models, config=preset("tiny"), run_name="r1"))
    assert [spec["machine_type"] for spec in run.start(1.0)] == ["fan", "pump", "valve"]
    assert read_record(models, "r1")["status"] == "running"
    run.type_done("fan", {"status": "ok", "trial_name": "fan"})
    assert run.unfinished() == ["pump", "valve"]
    run.stopped()
    got = read_record(models, "r1")
    assert got["status"] == "stopped"
    assert {mt: e["status"] for mt, e in got["types"].items()} == {"fan": "ok", "pump": "stopped", "valve": "stopped"}


def test_prepare_type_skips_bad_clips(tmp_path):
    cfg = preset("tiny", {"threshold_max_clips": "3"})
    write_type(str(tmp_path), "fan", seed=0, n=4)
    write_corrupt(str(tmp_path), "fan", n=2)
    loc = open_location(str(tmp_path))
    paths, skipped, domains = select_training_clips(list_archive(loc, "train", ["fan"]))
    prep = prepare_type(loc, "fan", paths, cfg, skipped=skipped, domains=domains)
    assert prep.n_clips == 4 and len(prep.skipped) == 2
    assert all("unreadable" in reason for _, reason in prep.skipped)
    assert prep.train_rows.dtype == np.float16 and prep.train_rows.shape[1:] == (64, 64)
    assert len(prep.prepared.score_rows) == 4  # every usable clip (threshold and banks)
    assert abs(float(prep.train_rows.astype(np.float32).mean())) < 0.1  # normalised


# ---------------------------------------------------------------- Ray runs
@pytest.mark.ray
@pytest.mark.s3
@pytest.mark.slow
def test_two_types_concurrently_from_s3_and_broken_type_fails_alone(ray_cluster, s3_bucket, s3_endpoint, caplog):
    from jobs import train

    data, models = f"{s3_bucket}/archive", f"{s3_bucket}/models"
    write_type(data, "fan", seed=0, endpoint=s3_endpoint)
    write_corrupt(data, "fan", n=1, endpoint=s3_endpoint)  # one bad clip: skipped, counted
    write_type(data, "valve", seed=1, endpoint=s3_endpoint)
    write_corrupt(data, "broken", n=2, endpoint=s3_endpoint)  # no usable clip: fails alone

    t0 = time.perf_counter()
    rc = train.main([data, models, "--preset", "tiny", *_set_args(TINY), "--endpoint-url", s3_endpoint])
    print(f"train run: {time.perf_counter() - t0:.1f} s")
    assert rc == 1  # one type failed

    manifest = read_record(models, endpoint_url=s3_endpoint)
    assert manifest["status"] == "failed"
    types = manifest["types"]
    assert types["fan"]["status"] == "ok" and types["valve"]["status"] == "ok"
    assert types["broken"]["status"] == "failed"
    assert "no usable training clip" in types["broken"]["error"]
    assert types["fan"]["n_skipped"] == 1 and types["fan"]["n_clips"] == N_CLIPS

    cfg = preset("tiny", TINY)
    for mt in ("fan", "valve"):
        e = types[mt]
        assert e["epochs"] == 2 and len(e["losses"]) == 2 and e["resumes"] == []
        art = load_artifact(models, mt)
        assert art.model_id == e["model_id"] and art.threshold > 0
        assert art.summary["losses"] == e["losses"]
        assert art.kind == "unet" and any(k.startswith("model.") for k in art.state)
    assert load_artifact(models, "fan").summary["skipped"][0]["reason"].startswith("unreadable")
    # one worker = single-process training on the same tiles
    assert types["fan"]["losses"][0] == pytest.approx(local_first_epoch_loss(data, "fan", cfg, s3_endpoint), rel=1e-4)
    # checkpoints under the run's own prefix, through the S3 endpoint
    loc = open_location(models, s3_endpoint)
    assert loc.fs.exists(f"{loc.path}/_runs/{manifest['run_id']}/fan")


@pytest.mark.ray
@pytest.mark.slow
def test_train_model_flag_baseline_ae_on_ray_train_and_knn(ray_cluster, tmp_path, capsys):
    """``--model baseline-ae`` trains the autoencoder on Ray Train like the U-Net (epochs,
    losses, checkpoints); ``--model knn`` stores its features without a trainer. Each
    artifact says its kind and loads into a scorer."""
    from asd_core.detector import Scorer
    from jobs import train

    data = str(tmp_path / "data")
    write_type(data, "fan", seed=0)
    ae_models, knn_models = str(tmp_path / "ae"), str(tmp_path / "knn")
    assert train.main([data, ae_models, "--model", "baseline-ae", "--preset", "tiny", "--set", "ae_epochs=3",
                       "--set", "ae_batch_size=64"]) == 0
    entry = read_record(ae_models)["types"]["fan"]
    assert entry["model_kind"] == "baseline-ae" and entry["epochs"] == 3 and len(entry["losses"]) == 3
    assert entry["model_id"].startswith("baseline-ae-")
    art = load_artifact(ae_models, "fan")
    assert art.kind == "baseline-ae" and art.state["cov_inv"].shape == (2, 128, 128)
    assert train.main([data, knn_models, "--model", "knn", "--preset", "tiny"]) == 0
    entry = read_record(knn_models)["types"]["fan"]
    assert entry["model_kind"] == "knn" and entry["epochs"] == 0 and entry["losses"] == []
    knn = load_artifact(knn_models, "fan")
    assert knn.kind == "knn" and knn.state["bank.bank"].shape == (N_CLIPS, 128)
    wav = harmonic_tone(np.random.default_rng(9), SECONDS, f0=150.0)
    for a in (art, knn):
        assert np.isfinite(Scorer({"fan": a}).score_wav("fan", wav).score)
    assert "knn-" in capsys.readouterr().out


@pytest.mark.ray
@pytest.mark.slow
def test_injected_failure_resumes_from_checkpoint_then_resume_flag(ray_cluster, tmp_path):
    from jobs import train

    data, models = str(tmp_path / "archive"), str(tmp_path / "models")
    write_type(data, "fan", seed=0)
    cfg = preset("tiny", {"epochs": "4", "checkpoint_every": "2", "threshold_max_clips": "4"})

    # Two data-parallel workers; the last rank dies once at the start of epoch 2 (0-based).
    m1 = train.run_training(
        data, models, config=cfg, workers_per_model=2, max_failures=1, fail_once={"fan": 2}, cpus_per_worker=0.5
    )
    fan = m1["types"]["fan"]
    assert fan["status"] == "ok", fan
    assert fan["epochs"] == 4 and len(fan["losses"]) == 4
    assert fan["resumes"] == [2]  # restarted from the epoch-2 checkpoint, epochs 0-1 not redone
    assert (Path(models) / "_runs" / m1["run_id"] / "_injected_failure_fan").exists()
    # DDP over 2 CPU workers vs one process: BatchNorm normalises each rank's half-batch
    # separately (SyncBatchNorm is GPU-only), so the first loss agrees only loosely.
    assert fan["losses"][0] == pytest.approx(local_first_epoch_loss(data, "fan", cfg), rel=0.01)

    # --resume of the finished run with the same epochs: kept, nothing retrained
    m2 = train.run_training(data, models, config=cfg, resume=True)
    assert m2["run_id"] == m1["run_id"] and m2["types"]["fan"].get("kept_from_previous")
    # --resume with more epochs: continues from the last checkpoint (epoch 4), runs only epoch 5
    cfg5 = cfg.override({"epochs": 5})
    m3 = train.run_training(data, models, config=cfg5, resume=True, cpus_per_worker=0.5)
    fan3 = m3["types"]["fan"]
    assert fan3["status"] == "ok" and fan3["epochs"] == 5
    assert fan3["losses"][:4] == fan["losses"] and fan3["resumes"] == [2, 4]
    assert load_artifact(models, "fan").summary["epochs"] == 5
    # a model change cannot resume those checkpoints
    with pytest.raises(ValueError, match="do not fit"):
        train.run_training(data, models, config=cfg5.override({"width": 16}), resume=True)
