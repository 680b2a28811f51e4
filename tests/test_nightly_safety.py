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
import pyarrow.parquet as pq
import pytest

from asd_core import results
from asd_core.artifact import load_artifact, read_meta, save_artifact
from asd_core.audio import encode_wav
from asd_core.config import preset
from asd_core.dcase import ClipName
from asd_core.detector import train_type
from asd_core.runs import Lease, LeaseHeld, validate_run_id
from asd_core.storage import ensure_bucket, open_location, pyarrow_filesystem, read_bytes, write_bytes
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
            save_artifact(loc, mt, t.model, CFG, t.normalizer, t.threshold)
    return loc.uri


@pytest.fixture
def bucket(s3_bucket):
    return s3_bucket


def _write(uri: str, clips: dict[str, bytes], endpoint: str | None = None) -> str:
    loc = open_location(uri, endpoint)
    for rel, data in clips.items():
        write_bytes(loc, f"{loc.path}/{rel}", data)
    return loc.uri


def _good_clips(mt: str, n: int = 2, start: int = 0) -> dict[str, bytes]:
    return {_name(mt, start + i): encode_wav(_clip(start + i, TYPES.get(mt, 250.0)), SR) for i in range(n)}


def _rows(out_uri: str, endpoint: str | None = None) -> pd.DataFrame:
    out = open_location(out_uri, endpoint)
    return pq.read_table(f"{out.path}/scores", filesystem=pyarrow_filesystem(out)).to_pandas()


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
        path = f"{loc.path}/scores/_lease.json"
        first = Lease(loc, path, "run-a").acquire()
        with pytest.raises(LeaseHeld, match="run-a"):
            Lease(loc, path, "run-b").acquire()
        Lease(loc, path, "run-b").release()  # not the owner: a no-op
        assert json.loads(read_bytes(loc, path))["owner"] == "run-a"
        first.release()
        with Lease(loc, path, "run-b", ttl_s=-1.0):  # an already-expired lease ...
            Lease(loc, path, "run-c").acquire().release()  # ... is taken over
        assert not loc.fs.exists(path)
