"""`asd submit`: the cron route through Ray's job API keeps `asd score`'s exit codes
(0 published, 1 published with too many failed clips, 2 nothing could start) and prints
the command's one-line error once; a job whose command never ran is told apart (3).
Plain `ray job submit` of `asd train` with S3 credentials in the runtime env, too. One
real head (`ray start --head`) serves the module."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from asd_core.artifact import load_artifact, save_artifact
from asd_core.audio import encode_wav
from asd_core.config import preset
from asd_core.dcase import ClipName
from asd_core.detector import train_type
from jobs.submit import NOT_RUN, STOPPED, entrypoint, exit_code
from tests.raycluster import RAY_BIN, ray_head, run_when_ready
from tests.signals import harmonic_tone
from tests.test_train_job import write_type

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def head():
    with ray_head() as h:
        yield h


def test_exit_code_is_the_commands_own_where_it_ran():
    assert exit_code("SUCCEEDED", 0) == 0
    assert exit_code("FAILED", 1) == 1
    assert exit_code("FAILED", 2) == 2
    assert exit_code("FAILED", None) == NOT_RUN  # runtime env failed, driver never started
    assert exit_code("STOPPED", None) == STOPPED
    assert entrypoint("python", ["score", "s3://a b/x", "m"]) == "python -m jobs.cli score 's3://a b/x' m"


def _clips(root: Path, split: str, n: int, rng, *, broken: bool = False) -> None:
    for i in range(n):
        name = ClipName("fan", "00", i, split, "source", "normal", "a_1")
        path = root / name.relpath()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not a wav file" if broken else encode_wav(harmonic_tone(rng, 2.0, f0=200 + 5 * i)))


def _error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("asd score:")]


@pytest.mark.ray
@pytest.mark.slow
def test_submit_exits_with_the_score_commands_code(head, tmp_path):
    rng = np.random.default_rng(5)
    data, broken, models = tmp_path / "archive", tmp_path / "broken", tmp_path / "models"
    _clips(data, "test", 3, rng)
    _clips(broken, "test", 3, rng, broken=True)
    cfg = preset("tiny", {"kind": "knn", "knn_k": "2"})
    save_artifact(str(models), "fan", train_type([harmonic_tone(rng, 2.0, f0=200.0 + f) for f in range(4)], cfg).fitted, cfg)

    def submit(*command: str | Path, python: str = sys.executable) -> subprocess.CompletedProcess:
        return run_when_ready([sys.executable, "-m", "jobs.cli", "submit", "--address", head.address,
                               "--python", python, "--", *map(str, command)], head)

    missing = submit("score", tmp_path / "nope", models, tmp_path / "out-missing")
    ok = submit("score", data, models, tmp_path / "out")
    failed = submit("score", broken, models, tmp_path / "out-broken", "--max-error-rate", "0.5")
    never = submit("score", data, models, tmp_path / "out-never", python="/no/such/python")

    log = missing.stdout + missing.stderr
    assert missing.returncode == 2, log[-3000:]
    errors = _error_lines(log)
    assert len(errors) == 1 and "not found" in errors[0] and "nope" in errors[0], log[-3000:]
    assert "FAILED (exit 2)" in missing.stderr

    log = ok.stdout + ok.stderr
    assert ok.returncode == 0, log[-3000:]
    assert "SUCCEEDED (exit 0)" in ok.stderr and not _error_lines(log)
    assert any((tmp_path / "out").iterdir())

    log = failed.stdout + failed.stderr
    assert failed.returncode == 1, log[-3000:]
    assert "FAILED (exit 1)" in failed.stderr

    log = never.stdout + never.stderr
    # the job's shell ran, the command did not exist: not one of score's own codes
    assert never.returncode not in (0, 1, 2), log[-3000:]
    assert f"(exit {never.returncode})" in never.stderr.splitlines()[-1], log[-3000:]


def test_submit_to_no_cluster_is_one_line_and_exit_3(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "submit", "--address", "http://127.0.0.1:9", "--", "score", "a", "b", "c"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == NOT_RUN, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("asd submit: cannot submit to http://127.0.0.1:9"), out.stderr[-2000:]
    assert "Traceback" not in out.stderr


@pytest.mark.ray
@pytest.mark.s3
@pytest.mark.slow
def test_ray_job_submit_of_asd_train_keeps_the_secret_out_of_the_log(head, s3_bucket, s3_endpoint):
    data, models = f"{s3_bucket}/archive", f"{s3_bucket}/models"
    write_type(data, "valve", seed=1, endpoint=s3_endpoint)
    secret = f"job-secret-{uuid.uuid4().hex[:8]}"  # moto takes any key: check it never reaches the log
    runtime_env = {"env_vars": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": secret}}
    out = run_when_ready([
        str(RAY_BIN), "job", "submit", "--address", head.address, "--working-dir", str(REPO),
        "--runtime-env-json", json.dumps(runtime_env), "--",
        sys.executable, "-m", "jobs.train", data, models, "--preset", "tiny",
        "--set", "epochs=1", "--set", "threshold_max_clips=4", "--endpoint-url", s3_endpoint,
    ], head)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "valve: epoch 1/1 loss" in log and "succeeded" in log
    assert secret not in log
    assert load_artifact(models, "valve").summary["epochs"] == 1
