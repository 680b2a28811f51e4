"""Inputs are checked before Ray starts: one line naming the problem, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from asd_core.audio import encode_wav
from asd_core.storage import open_location, write_bytes
from tests.signals import SR, harmonic_tone


def _cli(*args) -> int:
    from jobs import cli

    return cli.main([*map(str, args)])


@pytest.fixture
def dcase(tmp_path):
    """<tmp>/archive/dev/{fan,valve}/{train,test}/...: the archive root is .../dev."""
    rng = np.random.default_rng(0)
    loc = open_location(str(tmp_path / "archive" / "dev"))
    for mt in ("fan", "valve"):
        for split in ("train", "test"):
            name = f"section_00_source_{split}_normal_0000_a.wav"
            write_bytes(loc, f"{loc.path}/{mt}/{split}/{name}", encode_wav(harmonic_tone(rng, 1.0), SR))
    return tmp_path


@pytest.mark.parametrize("cmd", ["score", "train"])
def test_unknown_machine_type_names_the_types_found(dcase, capsys, cmd):
    extra = [dcase / "out"] if cmd == "score" else []
    rc = _cli(cmd, dcase / "archive" / "dev", dcase / "models", *extra, "--machines", "fna")
    out = capsys.readouterr().out
    assert rc == 2 and "--machines fna" in out and "fan, valve" in out
    assert not (dcase / "out").exists() and not (dcase / "models").exists()


@pytest.mark.parametrize("cmd", ["score", "train"])
def test_archive_root_one_level_too_high_is_explained(dcase, capsys, cmd):
    extra = [dcase / "out"] if cmd == "score" else []
    rc = _cli(cmd, dcase / "archive", dcase / "models", *extra)
    out = capsys.readouterr().out
    assert rc == 2 and "one level too high" in out and "dev" in out and "fan" in out
    assert not (dcase / "models").exists()


def test_typo_in_path_and_unknown_scheme_are_one_line(dcase, capsys):
    assert _cli("score", dcase / "archiv", dcase / "models", dcase / "out") == 2
    out = capsys.readouterr().out
    assert "not found" in out and "archiv" in out and "Traceback" not in out
    assert _cli("score", "gs://bucket/data", dcase / "models", dcase / "out") == 2
    assert "unsupported URI scheme" in capsys.readouterr().out


@pytest.mark.s3
def test_wrong_bucket_is_named(s3_endpoint, capsys):
    assert _cli("score", "s3://no-such-bucket-x1/data", "s3://no-such-bucket-x1/models", "/tmp/unused-out",
                "--endpoint-url", s3_endpoint) == 2
    out = capsys.readouterr().out
    assert "no-such-bucket-x1" in out and "not found" in out


@pytest.mark.s3
def test_missing_credentials_say_how_to_set_them(s3_endpoint, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true", RAY_ADDRESS="127.0.0.1:1")
    p = subprocess.run([sys.executable, "-m", "jobs.cli", "score", "s3://plant/data", "s3://plant/models",
                        str(tmp_path / "out"), "--endpoint-url", s3_endpoint], env=env, capture_output=True,
                       text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert p.returncode == 2, p.stdout + p.stderr
    assert "NoCredentialsError" in p.stdout and "set credentials" in p.stdout
    assert "Traceback" not in p.stdout + p.stderr
