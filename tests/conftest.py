"""Shared fixtures: a real S3-compatible server on 127.0.0.1 and a real local Ray cluster."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

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
    if not REAL_SAMPLES.is_dir():
        pytest.skip("shared real samples are not present")
    return REAL_SAMPLES
