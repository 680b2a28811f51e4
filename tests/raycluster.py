"""A real Ray head for tests that go through the job API (``ray job submit``,
``asd submit``): started with ``ray start --head --block`` in its own session, on free
ports and its own temp dir, token auth on (Ray 2.60's default), and stopped by
process id, never with ``ray stop`` (which stops every cluster of this user)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RAY_BIN = Path(sys.executable).with_name("ray")


@dataclass
class Head:
    address: str  # the dashboard (job API), http://127.0.0.1:<port>
    env: dict[str, str]  # what a client process needs (token auth on, no RAY_ADDRESS)
    process: subprocess.Popen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """Processes of session ``sid``: everything ``ray start`` (run with a new session) spawned."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == sid and fields[0] != "Z":  # after "pid (comm)": state ppid pgrp session
                out.append(int(d.name))
    return out


def stop_cluster(head: subprocess.Popen) -> None:
    """SIGTERM to ``ray start --block``, then SIGKILL whatever of its session is left
    after 5 s (an idle head is gone in ~3 s; one that ran jobs can take 20 s, which
    a throw-away test cluster need not wait for)."""
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while session_pids(head.pid) and time.monotonic() < deadline:
        time.sleep(1)
    for pid in session_pids(head.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while session_pids(head.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.wait(timeout=10)


@contextlib.contextmanager
def ray_head(num_cpus: int = 2) -> Iterator[Head]:
    """A running head whose job agent answers; stopped (every process) on exit."""
    port, dash, agent, client = (free_port() for _ in range(4))
    temp_dir = tempfile.mkdtemp(prefix="asdray-")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "token"  # `ray start --head` turns token auth on; the client must send it
    head_log = Path(temp_dir) / "head.log"
    with open(head_log, "w") as f:
        head = subprocess.Popen(
            [str(RAY_BIN), "start", "--head", "--block", "--num-cpus", str(num_cpus), "--port", str(port),
             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--temp-dir", temp_dir,
             "--dashboard-agent-listen-port", str(agent), "--ray-client-server-port", str(client),
             "--include-dashboard", "true", "--disable-usage-stats"],
            env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in head_log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, head_log.read_text()[-3000:]
            time.sleep(1)
        yield Head(f"http://127.0.0.1:{dash}", env, head)
    finally:
        stop_cluster(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not session_pids(head.pid)


def run_when_ready(cmd: list[str], head: Head, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a job-API client command; the head's job agent comes up a few seconds after
    the runtime, so "No available agent" is retried (up to a minute)."""
    for _ in range(30):
        out = subprocess.run(cmd, env=head.env, capture_output=True, text=True, timeout=timeout)
        if "No available agent" not in out.stderr:
            return out
        time.sleep(2)
    return out
