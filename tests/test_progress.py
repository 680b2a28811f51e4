"""Progress output: a moving bar in a terminal, status lines in a log."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys

SNIPPET = """
import logging, time
from asd_core.progress import Progress
logging.basicConfig(level=logging.INFO, format="%(message)s")
with Progress("scoring", 6, "clips") as p:
    for _ in range(6):
        time.sleep(0.15)
        p.update(1)
"""


def _run_in_pty(env) -> str:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", SNIPPET], stdin=slave, stdout=slave, stderr=slave, env=env,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    os.close(slave)
    out = b""
    while True:
        r, _, _ = select.select([master], [], [], 10)
        if not r:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=30)
    os.close(master)
    return out.decode(errors="replace")


def test_terminal_shows_a_moving_bar():
    env = {**os.environ, "ASD_PROGRESS": "auto", "COLUMNS": "100"}
    text = _run_in_pty(env)
    frames = [f for f in text.split("\r") if "scoring" in f and "/6" in f]
    counts = {f.split("/6")[0].rsplit(" ", 1)[-1].strip("| ") for f in frames}
    assert len(counts) >= 3, text  # the bar is redrawn as clips finish
    assert "6/6" in text and "clips/s" in text


def test_log_gets_periodic_status_lines(tmp_path):
    env = {**os.environ, "ASD_PROGRESS_INTERVAL": "0.2"}
    log = tmp_path / "job.log"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", SNIPPET], stdout=f, stderr=subprocess.STDOUT, env=env, check=True,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
    lines = [x for x in log.read_text().splitlines() if x.startswith("scoring: ")]
    assert 2 <= len(lines) <= 7, lines
    assert all("clips/s" in x for x in lines) and lines[-1].startswith("scoring: 6/6 clips (100%)")
    assert "\r" not in log.read_text()  # no bar in a file
