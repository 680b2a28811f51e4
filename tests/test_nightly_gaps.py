"""The last nightly-failure gaps: a missing output bucket, a published run id used
again, a stopped run's staging folder, a model version without weights. No Ray: a
models URI without artifacts publishes error rows without starting it."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from asd_core.artifact import ArtifactError, save_artifact, set_current
from asd_core.audio import encode_wav
from asd_core.config import preset
from asd_core.runstore import RunStore
from asd_core.storage import ensure_bucket, open_location, write_bytes
from jobs import score as score_job
from tests.signals import SR, harmonic_tone


def _archive(loc) -> None:
    """Two test clips of one machine type in the DCASE layout."""
    for i in range(2):
        wav = encode_wav(harmonic_tone(np.random.default_rng(i), seconds=1.5), SR)
        write_bytes(loc, f"{loc.path}/fan/test/section_00_source_test_normal_{i:04d}_a_1.wav", wav)


@pytest.mark.s3
def test_score_into_a_missing_bucket_creates_it(s3_bucket, s3_endpoint, capsys):
    """As asd train does for its models bucket: no NoSuchBucket traceback after Ray."""
    data = open_location(f"{s3_bucket}/data", s3_endpoint)
    _archive(data)
    models = open_location(f"{s3_bucket}/models", s3_endpoint)
    ensure_bucket(models)
    out_uri = f"s3://out-{uuid.uuid4().hex[:10]}/night"
    rc = score_job.main([data.uri, models.uri, out_uri, "--endpoint-url", s3_endpoint, "--run-id", "n1"])
    text = capsys.readouterr().out
    assert rc == 2 and "no model artifact" in text and "Traceback" not in text  # 2: no model, rows published
    record = RunStore(open_location(out_uri, s3_endpoint)).record("n1")
    assert record["n_error"] == 2


def test_a_published_run_id_is_refused_before_anything_starts(tmp_path, capsys):
    data = open_location(str(tmp_path / "data"))
    _archive(data)
    (tmp_path / "models").mkdir()
    args = [data.uri, str(tmp_path / "models"), str(tmp_path / "out"), "--run-id", "night1"]
    assert score_job.main(args) == 2  # published (as errors: no model)
    capsys.readouterr()
    assert score_job.main(args) == 2
    lines = [x for x in capsys.readouterr().out.splitlines() if x.strip()]
    assert len(lines) == 1 and "already published" in lines[0] and "night1" in lines[0], lines


def test_a_stopped_runs_staging_folder_is_removed_by_the_next_run(tmp_path):
    data = open_location(str(tmp_path / "data"))
    _archive(data)
    (tmp_path / "models").mkdir()
    left = tmp_path / "out" / "_staging" / "stopped-run"
    left.mkdir(parents=True)
    (left / "part-00000.parquet").write_bytes(b"half a file")
    assert score_job.main([data.uri, str(tmp_path / "models"), str(tmp_path / "out"), "--run-id", "next"]) == 2
    assert not left.exists()
    assert not any((tmp_path / "out" / "_staging").iterdir())


def test_set_current_refuses_a_version_without_weights(tmp_path):
    import torch

    from asd_core.kinds import Fitted

    cfg = preset("tiny").override({"model.kind": "knn"})
    fitted = Fitted({"bank.bank": torch.zeros(2, 3)}, {}, 0.5, np.zeros(2))
    first = save_artifact(str(tmp_path), "fan", fitted, cfg)
    second = save_artifact(str(tmp_path), "fan", Fitted({"bank.bank": torch.ones(2, 3)}, {}, 0.6, np.zeros(2)), cfg)
    assert first != second
    (tmp_path / "fan" / first / "weights.pt").unlink()
    with pytest.raises(ArtifactError, match="weights"):
        set_current(str(tmp_path), "fan", first)
    assert json.loads((tmp_path / "fan" / "current.json").read_text())["model_id"] == second
