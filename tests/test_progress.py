"""Progress output: a moving bar in a terminal, status lines in a log."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asd_core.audio import encode_wav
from asd_core.dcase import ClipName
from tests.signals import harmonic_tone

SNIPPET = """
import logging, time
from asd_core.progress import Progress
logging.basicConfig(level=logging.INFO, format="%(message)s")
with Progress("scoring", 6, "clips") as p:
    for _ in range(6):
        time.sleep(0.15)
        p.update(1)
"""


def _run_in_pty(env, argv: list[str] | None = None, timeout: float = 10) -> str:
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv or [sys.executable, "-c", SNIPPET], stdin=slave, stdout=slave, stderr=slave,
                            env=env, cwd=os.path.dirname(os.path.dirname(__file__)))
    os.close(slave)
    out = b""
    while True:
        r, _, _ = select.select([master], [], [], timeout)
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
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
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


TRAINING = """
import logging
from asd_core.trainrun import TrainingProgress
logging.basicConfig(level=logging.INFO, format="%(message)s")
with TrainingProgress(["fan", "valve"], 2) as p:
    p.epoch("fan", 1, 0.5, 1.0)
    p.epoch("valve", 1, 0.7, 1.0)
    p.epoch("fan", 1, 0.5, 1.0)   # a restarted worker group repeats an epoch
    p.epoch("fan", 2, 0.4, 1.0)
    p.type_finished("fan")
    p.type_finished("valve")       # failed after 1 epoch: its epochs count as passed
"""


def test_training_progress_lines_in_a_log_and_a_terminal(tmp_path):
    log = tmp_path / "train.log"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", TRAINING], stdout=f, stderr=subprocess.STDOUT, check=True,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
    lines = log.read_text().splitlines()
    assert lines.count("fan: epoch 2/2 loss 0.40000 (1.0 s)") == 1
    assert sum(x.startswith("fan: epoch 1/2") for x in lines) == 2 and "\r" not in log.read_text()
    assert lines[-1].startswith("training: 4/4 epochs (100%)"), lines
    text = _run_in_pty({**os.environ, "ASD_PROGRESS": "auto", "COLUMNS": "100"},
                       [sys.executable, "-c", TRAINING])
    assert "valve: epoch 1/2 loss 0.70000" in text and "4/4" in text and "epochs/s" in text


def _clips(root: Path, machine_type: str, split: str, n: int, rng, label: str = "normal") -> None:
    for i in range(n):
        name = ClipName(machine_type, "00", i, split, "source", label, "a_1")
        path = root / name.relpath()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_wav(harmonic_tone(rng, 2.0, f0=200 + 7 * i + (60 if label == "anomaly" else 0))))


RAY_OWN = ("TrainController", "RayTrainWorker", "streaming_executor", "Started a local Ray instance",
           "Reporting training result", "Checkpoint successfully created")


@pytest.mark.ray
@pytest.mark.slow
def test_train_and_score_in_a_terminal_show_bars_not_rays_lines(tmp_path):
    """`asd train` then `asd score` in a pty: a bar over epochs with one line per epoch,
    a scoring bar that moves every few clips, and none of Ray's own lines."""
    rng = np.random.default_rng(2)
    data = tmp_path / "data"
    _clips(data, "fan", "train", 8, rng)
    _clips(data, "fan", "test", 8, rng)
    _clips(data, "fan", "test", 8, rng, label="anomaly")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(ASD_PROGRESS="auto", COLUMNS="120")
    asd = [sys.executable, "-m", "jobs.cli"]
    text = _run_in_pty(env, [*asd, "train", str(data), str(tmp_path / "models"), "--model", "baseline-ae",
                             "--set", "ae_epochs=3", "--set", "ae_batch_size=64", "--address", "local"], timeout=240)
    for own in RAY_OWN:
        assert own not in text, text[-3000:]
    for epoch in (1, 2, 3):
        assert len([x for x in text.replace("\r", "\n").splitlines() if x.startswith(f"fan: epoch {epoch}/3 loss")]) == 1
    assert "3/3 epochs" in text
    text = _run_in_pty(env, [*asd, "score", str(data), str(tmp_path / "models"), str(tmp_path / "out"),
                             "--address", "local", "--actors", "1"], timeout=240)
    for own in RAY_OWN:
        assert own not in text, text[-3000:]
    counts = {int(f.split("/16")[0].rsplit(" ", 1)[-1].strip("| ")) for f in text.split("\r")
              if f.startswith("scoring") and "/16" in f}
    assert 16 in counts and min(counts - {0}) == 4, text[-3000:]  # the first update after one CPU batch of 4


def test_synth_in_a_pipe_writes_lines_not_carriage_returns(tmp_path):
    env = {**os.environ, "ASD_PROGRESS_INTERVAL": "0.2"}
    out = subprocess.run([sys.executable, "-m", "jobs.cli", "synth", str(tmp_path / "a"), "--machines", "fan",
                          "--train-source", "6", "--train-target", "1", "--test", "2", "--seconds", "2"],
                         capture_output=True, text=True, env=env, check=True)
    assert "\r" not in out.stderr
    lines = [x for x in out.stderr.splitlines() if "synth: " in x]
    assert lines and "15/15 clips (100%)" in lines[-1], out.stderr
