"""Shared fixtures: a real S3-compatible server on 127.0.0.1 and a real local Ray cluster."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

# Real DCASE 2023 recordings: $ASD_REAL_SAMPLES when set, else ../shared/real-samples/dcase2023
# beside the clone. The folder holds <machine_type>/{train,test}/*.wav.
REAL_SAMPLES_ENV = "ASD_REAL_SAMPLES"
REAL_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "real-samples" / "dcase2023"

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """An in-process moto S3 server (real HTTP on 127.0.0.1); yields its endpoint URL.

    Sets ``AWS_ENDPOINT_URL`` and dummy credentials for the session, so Ray workers
    started afterwards inherit them.
    """
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
            mp.setenv(k, v)
        yield endpoint
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint) -> str:
    """A fresh, empty bucket; yields ``s3://<bucket>``."""
    from asd_core.storage import ensure_bucket, open_location

    uri = f"s3://t-{uuid.uuid4().hex[:12]}"
    ensure_bucket(open_location(uri, s3_endpoint))
    return uri


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint):
    """A local Ray cluster shared by the session's Ray tests (2 CPUs, no dashboard)."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture
def real_samples() -> Path:
    """The real-sample folder; skips when neither ``$ASD_REAL_SAMPLES`` nor the default
    folder exists, and fails when ``$ASD_REAL_SAMPLES`` names a missing folder (someone
    asked for the samples: a typo must not turn into a silent skip)."""
    env = os.environ.get(REAL_SAMPLES_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            pytest.fail(f"{REAL_SAMPLES_ENV}={env} is not a folder")
        return path
    if not REAL_SAMPLES.is_dir():
        pytest.skip(f"real samples not present: set {REAL_SAMPLES_ENV}=/path/to/dcase2023 or put them in {REAL_SAMPLES}")
    return REAL_SAMPLES
