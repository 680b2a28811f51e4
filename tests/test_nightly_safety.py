"""Nightly runs fail loudly and leak nothing: secrets stay out of Ray's logs, runs
with nothing to score still publish, storage outages and bad artifacts are visible,
incremental keys see replaced files, every file gets a row, run names stay inside
their folder, one run at a time per output, complete submission files, and resource
requests the cluster cannot meet fail fast.

Real moto S3 server and real Ray (the session's ``ray_cluster``; two tests start their
own in a subprocess); tiny models trained once for the module.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from asd_core.artifact import artifact_dir, load_artifact, read_meta, save_artifact
from asd_core.audio import encode_wav
from asd_core.config import preset
from asd_core.dcase import ClipName
from asd_core.detector import train_type
from asd_core.runs import Lease, LeaseHeld, validate_run_id
from asd_core.runstore import LEASE, RunStore
from asd_core.storage import ensure_bucket, open_location, read_bytes, write_bytes
from tests.signals import SR, harmonic_tone

REPO = Path(__file__).resolve().parents[1]
CFG = preset("tiny").override({"epochs": 1})
K = 4
TYPES = {"fan": 200.0, "valve": 330.0}


def e2e(fn):
    return pytest.mark.ray(pytest.mark.s3(pytest.mark.slow(fn)))


def _clip(seed: int, f0: float, seconds: float = 2.5) -> np.ndarray:
    return harmonic_tone(np.random.default_rng(seed), seconds=seconds, f0=f0)


def _name(mt: str, idx: int, domain: str = "source", label: str = "normal") -> str:
    return ClipName(mt, "00", idx, "test", domain, label).relpath()


@pytest.fixture(scope="module")
def trained():
    out = {}
    for i, (mt, f0) in enumerate(TYPES.items()):
        out[mt] = train_type([_clip(50 + i * 10 + j, f0) for j in range(4)], CFG)
    return out


def _save_models(loc, trained, types=None):
    for mt, t in trained.items():
        if types is None or mt in types:
            save_artifact(loc, mt, t.fitted, CFG)
    return loc.uri


def _write(uri: str, clips: dict[str, bytes], endpoint: str | None = None) -> str:
    loc = open_location(uri, endpoint)
    for rel, data in clips.items():
        write_bytes(loc, f"{loc.path}/{rel}", data)
    return loc.uri


def _good_clips(mt: str, n: int = 2, start: int = 0) -> dict[str, bytes]:
    return {_name(mt, start + i): encode_wav(_clip(start + i, TYPES.get(mt, 250.0)), SR) for i in range(n)}


def _rows(out_uri: str, endpoint: str | None = None) -> pd.DataFrame:
    """The history table (every run's rows), read as any Delta reader reads it."""
    from deltalake import DeltaTable

    from asd_core.runstore import storage_options

    out = open_location(out_uri, endpoint)
    return DeltaTable(f"{out.uri}/scores", storage_options=storage_options(out)).to_pandas()


def _score(*args: str) -> int:
    from jobs import score

    return score.main([*map(str, args), "--masks", str(K)])


# ---------------------------------------------------------------- 7. run names stay inside their folder
def test_train_run_name_cannot_leave_models_uri(tmp_path):
    from jobs import train

    models = tmp_path / "a" / "b" / "models"
    train_clip = ClipName("fan", "00", 0, "train", "source", "normal").relpath()
    data = _write(str(tmp_path / "data"), {train_clip: encode_wav(_clip(1, 200.0), SR)})
    rc = train.main([data, str(models), "--preset", "tiny", "--run-name", "../../x"])
    assert rc == 2
    assert not any(tmp_path.rglob("manifest.json"))
    for bad in ("../x", "a/b", "..", "x=1", ""):
        with pytest.raises(ValueError):
            validate_run_id(bad)
    assert validate_run_id("20260124T021500Z-1a2b3c") == "20260124T021500Z-1a2b3c"


# ---------------------------------------------------------------- 8. one run at a time per output
def test_lease_is_exclusive_and_expires(tmp_path, s3_bucket, s3_endpoint):
    for loc in (open_location(str(tmp_path)), open_location(s3_bucket, s3_endpoint)):
        path = f"{loc.path}/{LEASE}"
        first = Lease(loc, path, "run-a").acquire()
        with pytest.raises(LeaseHeld, match="run-a"):
            Lease(loc, path, "run-b").acquire()
        Lease(loc, path, "run-b").release()  # not the owner: a no-op
        assert json.loads(read_bytes(loc, path))["owner"] == "run-a"
        first.release()
        with Lease(loc, path, "run-b", ttl_s=-1.0):  # an already-expired lease ...
            Lease(loc, path, "run-c").acquire().release()  # ... is taken over
        assert not loc.fs.exists(path)


def _held_message_run(out_uri, endpoint):
    return Lease(open_location(out_uri, endpoint), f"{open_location(out_uri, endpoint).path}/{LEASE}", "night-a")


# ---------------------------------------------------------------- one archive, several nights
SILENT = _name("fan", 20)
LOW_RATE = _name("fan", 21)
NOT_AUDIO = "fan/test/section_00_source_test_normal_0022.m4a"  # not a format soundfile decodes
NESTED = "fan/test/old/section_00_source_test_normal_0023.wav"
REPLACED = _name("fan", 0)


@pytest.fixture(scope="module")
def site(s3_endpoint, trained):
    """``s3://<bucket>/{data,models,out}``: fan with a good model, valve whose weights
    are random bytes; fan's test folder also holds silence, an 8 kHz copy, an .m4a and
    a file in a sub-folder."""
    bucket = f"s3://night-{uuid.uuid4().hex[:10]}"
    ensure_bucket(open_location(bucket, s3_endpoint))
    clips = {**_good_clips("fan", 3), **_good_clips("valve", 2)}
    clips[SILENT] = encode_wav(np.zeros(int(2.5 * SR), np.float32), SR)
    clips[LOW_RATE] = encode_wav(_clip(0, TYPES["fan"])[::2], SR // 2)
    clips[NOT_AUDIO] = b"\x00\x00\x00\x20ftypM4A " + bytes(100)
    clips[NESTED] = clips[_name("fan", 1)]
    _write(f"{bucket}/data", clips, s3_endpoint)
    models = open_location(f"{bucket}/models", s3_endpoint)
    _save_models(models, trained)
    rng = np.random.default_rng(0)
    valve = artifact_dir(models, "valve").path  # the current version's folder
    write_bytes(models, f"{valve}/weights.pt", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return {"data": f"{bucket}/data", "models": models.uri, "out": f"{bucket}/out", "clips": clips}


@pytest.fixture(scope="module")
def night1(ray_cluster, site, s3_endpoint):
    rc = _score(site["data"], site["models"], site["out"], "--run-id", "n1", "--incremental")
    return rc, _rows(site["out"], s3_endpoint).set_index("path")


@e2e
def test_every_file_gets_a_row_silence_and_low_rate_flagged(night1, site):
    """Case 6: .m4a and sub-folder files get rows; silence is `silent`; an 8 kHz file
    is `low_sample_rate` with its source rate recorded."""
    rc, df = night1
    data = site["data"]
    assert rc == 0
    assert sorted(df.index) == sorted(f"{data}/{rel}" for rel in site["clips"])
    reason = df["error_reason"].to_dict()
    assert reason[f"{data}/{NOT_AUDIO}"] == "unsupported_format"
    assert reason[f"{data}/{NESTED}"] == "bad_name"
    assert reason[f"{data}/{SILENT}"] == "silent"
    assert reason[f"{data}/{LOW_RATE}"] == "low_sample_rate"
    assert df.loc[f"{data}/{LOW_RATE}", "source_sample_rate"] == SR // 2
    ok = df[df["status"] == "ok"]
    assert len(ok) == 3 and (ok["source_sample_rate"] == SR).all() and (ok["machine_type"] == "fan").all()


@e2e
def test_bad_artifact_fails_only_its_type_and_names_the_file(night1, site, s3_endpoint):
    """Case 4: valve's weights are random bytes: its rows are `bad_model` naming the
    artifact; fan is scored."""
    _, df = night1
    valve = df[df["machine_type"] == "valve"]
    assert len(valve) == 2 and (valve["error_reason"] == "bad_model").all()
    weights = f"{artifact_dir(open_location(site['models'], s3_endpoint), 'valve').uri}/weights.pt"  # names the file itself
    assert all(weights in e for e in valve["error"])
    assert (df[df["machine_type"] == "fan"]["status"] == "ok").sum() == 3


@e2e
def test_output_lease_refuses_a_second_run(night1, site, s3_endpoint, capsys):
    """Case 8: while a run holds OUT/_lease.json, a second one exits 2 naming it."""
    with _held_message_run(site["out"], s3_endpoint):
        capsys.readouterr()
        rc = _score(site["data"], site["models"], site["out"], "--run-id", "n1b", "--incremental")
    assert rc == 2 and "night-a" in capsys.readouterr().out
    out = open_location(site["out"], s3_endpoint)
    assert not RunStore(out).is_published("n1b") and "n1b" not in set(_rows(site["out"], s3_endpoint)["run_id"])


@e2e
def test_incremental_rescores_a_replaced_file_of_the_same_size(night1, site, s3_endpoint):
    """Case 5: same path, same size, other content (another ETag) is scored again."""
    _, before = night1
    data = open_location(site["data"], s3_endpoint)
    new = encode_wav(_clip(99, TYPES["fan"]), SR)
    assert len(new) == len(site["clips"][REPLACED])
    write_bytes(data, f"{data.path}/{REPLACED}", new)
    assert _score(site["data"], site["models"], site["out"], "--run-id", "n2", "--incremental") == 0
    df = _rows(site["out"], s3_endpoint)
    n2 = df[df["run_id"] == "n2"]
    # the replaced clip, plus valve's bad_model rows (retried: a repaired artifact may keep its id)
    assert set(n2["path"]) == {f"{site['data']}/{REPLACED}", *(p for p in before.index if "/valve/" in p)}
    row = n2.set_index("path").loc[f"{site['data']}/{REPLACED}"]
    assert row["status"] == "ok" and row["fingerprint"].startswith("etag:")
    assert row["fingerprint"] != before.loc[f"{site['data']}/{REPLACED}", "fingerprint"]


@e2e
def test_edited_artifact_json_gets_a_new_model_id(night1, site, s3_endpoint):
    """Case 4: the id covers config, normaliser and threshold: an edited threshold is a
    new model, so incremental runs score fan again under the new id."""
    models = open_location(site["models"], s3_endpoint)
    old_id = read_meta(models, "fan")["model_id"]
    path = f"{artifact_dir(models, 'fan').path}/artifact.json"
    meta = json.loads(read_bytes(models, path))
    assert meta["model_id"] == old_id  # the stored id is the computed one
    meta["threshold"] *= 2
    write_bytes(models, path, json.dumps(meta).encode())
    new_id = read_meta(models, "fan")["model_id"]
    assert new_id != old_id and load_artifact(models, "fan").model_id == new_id
    assert _score(site["data"], site["models"], site["out"], "--run-id", "n3", "--incremental") == 0
    n3 = _rows(site["out"], s3_endpoint).query("run_id == 'n3' and status == 'ok'")
    assert len(n3) == 3 and set(n3["model_id"]) == {new_id}
    assert n3["threshold"].tolist() == pytest.approx([meta["threshold"]] * 3)


@e2e
def test_incremental_night_with_only_a_bad_name_publishes(night1, site, s3_endpoint):
    """Case 2: the only new file is not DCASE-named: its error row is published, no Ray needed."""
    data = open_location(site["data"], s3_endpoint)
    write_bytes(data, f"{data.path}/fan/test/recording_0001.wav", site["clips"][_name("fan", 1)])
    models = open_location(site["models"], s3_endpoint)
    models.fs.rm(f"{models.path}/valve", recursive=True)  # valve has no model now: a final error
    assert _score(site["data"], site["models"], site["out"], "--run-id", "n4", "--incremental") == 0
    n4 = _rows(site["out"], s3_endpoint).query("run_id == 'n4'")
    assert dict(zip(n4["file_name"], n4["error_reason"], strict=True)) == {
        "recording_0001.wav": "bad_name",
        **{f: "no_model" for f in n4[n4["machine_type"] == "valve"]["file_name"]},
    }
    store = RunStore(open_location(site["out"], s3_endpoint))
    assert store.is_published("n4") and store.read_run(store.record("n4")).num_rows == len(n4)


@e2e
def test_gpu_request_on_a_cluster_without_gpus_fails_fast(night1, site, s3_endpoint, tmp_path, capsys):
    """Case 10: no GPU and no autoscaler: both jobs fail at once, naming what is missing."""
    from jobs import train

    t0 = time.perf_counter()
    rc = _score(site["data"], site["models"], str(tmp_path / "out"), "--gpus-per-actor", "1")
    assert rc == 2 and "1 GPU" in capsys.readouterr().out
    train_clip = ClipName("fan", "00", 0, "train", "source", "normal").relpath()
    data = _write(str(tmp_path / "data"), {train_clip: encode_wav(_clip(1, 200.0), SR)})
    rc = train.main([data, str(tmp_path / "models"), "--preset", "tiny", "--gpus-per-worker", "1"])
    assert rc == 2 and "1 GPU" in capsys.readouterr().out
    assert not list((tmp_path / "models").rglob("manifest.json"))
    assert time.perf_counter() - t0 < 60


# ---------------------------------------------------------------- 2. nothing scorable
def test_models_uri_without_models_publishes_errors_and_exits_2(s3_bucket, s3_endpoint, capsys):
    """Case 2: no model at all: checked before Ray starts, one line naming the URI,
    every clip's error row published, exit 2."""
    data = _write(f"{s3_bucket}/data", {**_good_clips("fan", 2), "fan/test/x.wav": b"RIFF"}, s3_endpoint)
    missing = f"{s3_bucket}/no-such-models"
    rc = _score(data, missing, f"{s3_bucket}/out", "--run-id", "r1")
    text = capsys.readouterr().out
    assert rc == 2 and f"no model artifact under {missing}" in text
    df = _rows(f"{s3_bucket}/out", s3_endpoint)
    assert sorted(df["error_reason"]) == ["bad_name", "no_model", "no_model"] and set(df["run_id"]) == {"r1"}


@e2e
def test_only_types_without_models_publishes_error_rows(ray_cluster, s3_bucket, s3_endpoint, trained):
    """Case 2: every clip is of a type with no model: rows published, no actor started."""
    data = _write(f"{s3_bucket}/data", _good_clips("bandsaw", 2), s3_endpoint)
    models = _save_models(open_location(f"{s3_bucket}/models", s3_endpoint), trained, ["fan"])
    assert _score(data, models, f"{s3_bucket}/out", "--run-id", "r1") == 0
    df = _rows(f"{s3_bucket}/out", s3_endpoint)
    assert list(df["error_reason"]) == ["no_model", "no_model"]


# ---------------------------------------------------------------- 3. storage outage
@e2e
def test_every_clip_unreadable_is_a_failed_run(ray_cluster, s3_bucket, s3_endpoint, trained, capsys):
    """Case 3: listed but unreadable objects (archived storage class: what an outage
    after listing looks like) are read_failed rows; the run is published and exits 1."""
    data = open_location(f"{s3_bucket}/data", s3_endpoint)
    for rel, blob in _good_clips("fan", 2).items():
        data.fs.pipe_file(f"{data.path}/{rel}", blob, StorageClass="GLACIER")
    models = _save_models(open_location(f"{s3_bucket}/models", s3_endpoint), trained, ["fan"])
    rc = _score(data.uri, models, f"{s3_bucket}/out", "--run-id", "r1")
    assert rc == 1 and "every clip (2) failed to read" in capsys.readouterr().out
    df = _rows(f"{s3_bucket}/out", s3_endpoint)
    assert list(df["error_reason"]) == ["read_failed", "read_failed"]
    from jobs.score import build_parser

    assert "--max-read-failure-rate" in build_parser().format_help()
    assert build_parser().parse_args(["d", "m", "o"]).max_read_failure_rate == 0.5


# ---------------------------------------------------------------- 1. no secret in Ray's files
def _subprocess_env(tmp: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PYTHONPATH=str(REPO), RAY_TMPDIR=tmp, RAY_DEDUP_LOGS="0", **extra)
    return env


@e2e
def test_secret_never_reaches_ray_session_files_or_outputs(s3_bucket, s3_endpoint, trained):
    """Case 1: a scoring job that starts its own Ray with a marker secret key: workers
    read S3 (so they have the credentials), yet no file of the Ray session, no output
    object and nothing the job printed holds the marker."""
    import tempfile

    marker = f"SECRETMARKER{uuid.uuid4().hex}"
    data = _write(f"{s3_bucket}/data", _good_clips("fan", 2), s3_endpoint)
    models = _save_models(open_location(f"{s3_bucket}/models", s3_endpoint), trained, ["fan"])
    tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "jobs.score", data, models, f"{s3_bucket}/out", "--masks", str(K),
             "--run-id", "leak", "--max-error-rate", "0"],
            cwd=REPO, env=_subprocess_env(tmp, AWS_SECRET_ACCESS_KEY=marker), capture_output=True, text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
        assert "2 ok" in proc.stdout
        found = []
        n_files = 0
        for root, _, files in os.walk(tmp):
            for f in files:
                p = Path(root, f)
                if p.is_file() and not p.is_socket():
                    n_files += 1
                    if marker.encode() in p.read_bytes():
                        found.append(str(p))
        assert n_files > 10 and any("runtime_env" in str(p) or "raylet" in str(p) for p in Path(tmp).rglob("*.log"))
        assert found == []
        assert marker not in proc.stdout and marker not in proc.stderr
        out = open_location(f"{s3_bucket}/out", s3_endpoint)
        for p in out.fs.find(out.path):
            assert marker.encode() not in read_bytes(out, p), p
    finally:
        subprocess.run(["rm", "-rf", tmp], check=False)


# ---------------------------------------------------------------- 10. a stopped training run says so
@e2e
def test_sigterm_leaves_the_training_manifest_stopped(tmp_path):
    import tempfile

    data = tmp_path / "data"
    for i in range(3):
        name = ClipName("fan", "00", i, "train", "source", "normal").relpath()
        _write(str(data), {name: encode_wav(_clip(i, 200.0), SR)})
    models = tmp_path / "models"
    tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.train", str(data), str(models), "--preset", "tiny", "--set", "epochs=500",
         "--run-name", "stop1"],
        cwd=REPO, env=_subprocess_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        manifest = models / "_runs" / "stop1" / "manifest.json"
        deadline = time.time() + 180
        while not manifest.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert manifest.exists() and json.loads(manifest.read_text())["status"] == "running"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode != 0, out[-2000:]
        got = json.loads(manifest.read_text())
        assert got["status"] == "stopped" and got["types"]["fan"]["status"] == "stopped", out[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["rm", "-rf", tmp], check=False)
