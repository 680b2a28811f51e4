"""`asd demo` stopped with Ctrl-C leaves no Ray or S3 server process behind."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .children import CTRL_C_REACHES

ROOT = Path(__file__).resolve().parents[1]


def _pids(pattern: str) -> set[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


@pytest.mark.slow
@pytest.mark.ray
def test_ctrl_c_stops_ray_and_the_s3_server(tmp_path):
    before = _pids("raylet") | _pids("gcs_server")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.demo", "--workdir", str(tmp_path), "--machines", "fan"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **CTRL_C_REACHES,
    )
    lines, port = [], None
    try:
        deadline = time.monotonic() + 180
        for line in proc.stdout:  # wait until training has started
            lines.append(line)
            m = re.search(r"S3-compatible server on http://127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else port
            if line.startswith("[demo] archive written") or time.monotonic() > deadline:
                break
        assert port and any(line.startswith("[demo] archive written") for line in lines), "".join(lines[-20:])
        during = (_pids("raylet") | _pids("gcs_server")) - before
        assert during, "the demo should have started its own Ray cluster"
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, rest[-2000:]
    assert "interrupted" in rest
    time.sleep(2)
    assert not (during & (_pids("raylet") | _pids("gcs_server")))
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the S3 server still listens"
