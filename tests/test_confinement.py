"""Inputs stay inside their roots: a manifest row, a section, a machine type, a
template's ``--only`` value or a run id never becomes a path outside DATA_URI,
MODELS_URI or OUT_URI. Real files (and the embedded S3 server for S3 keys); no Ray."""

from __future__ import annotations

import json
import os
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from asd_core import results
from asd_core.artifact import ArtifactError, artifact_dir, save_artifact, set_current
from asd_core.audio import encode_wav
from asd_core.catalog import ManifestError, list_clips, list_pattern, parse_only, read_manifest
from asd_core.config import preset
from asd_core.runstore import JOURNAL, RunStore, write_table
from asd_core.storage import ensure_bucket, open_location, write_bytes
from tests.signals import SR, harmonic_tone

CFG = preset("tiny")


def _wav(seed: int = 0) -> bytes:
    return encode_wav(harmonic_tone(np.random.default_rng(seed), seconds=1.0), SR)


def _put(loc, rel: str, data: bytes) -> None:
    write_bytes(loc, f"{loc.path}/{rel}", data)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _one_line(text: str) -> str:
    lines = [x for x in text.splitlines() if x.strip()]
    assert len(lines) == 1, text
    return lines[0]


# ---------------------------------------------------------------- the one check
def test_check_segment_accepts_folder_names_and_refuses_paths():
    from asd_core.paths import SEGMENT_MAX, check_segment, is_segment

    for good in ("fan", "ToyCar", "3DPrinter", "00", "id_00", "2026-11-24", "knn-0123456789ab",
                 "20261124T021500Z-1a2b3c", "a.b", "a..b", "x" * SEGMENT_MAX):
        assert check_segment(good, "machine type") == good
    for bad in ("", ".", "..", "../x", "a/b", "/abs", "x=1", ".hidden", "-x", "_runs", "a b", "a\\b", "a\nb",
                "x" * (SEGMENT_MAX + 1), None, 3):
        assert not is_segment(bad)
        with pytest.raises(ValueError) as e:
            check_segment(bad, "section")
        msg = str(e.value)
        assert msg.startswith("section ") and "\n" not in msg and len(msg) < 300


def test_manifest_path_roots_compare_whole_segments():
    from asd_core.paths import OutsideRoot, confine_manifest_path

    assert confine_manifest_path("fan/a.wav", "s3://data") == "s3://data/fan/a.wav"
    assert confine_manifest_path("s3://data/fan/a.wav", "s3://data") == "s3://data/fan/a.wav"
    assert confine_manifest_path("/fan/a.wav", "s3://data/p") == "s3://data/p/fan/a.wav"  # relative on S3, as before
    assert confine_manifest_path("fan/../b.wav", "/d/root") == "/d/root/b.wav"
    assert confine_manifest_path("file:///d/root/x.wav", "/d/root") == "/d/root/x.wav"
    for path, root in [("s3://data-evil/a.wav", "s3://data"), ("s3://data/../evil/a.wav", "s3://data"),
                       ("s3://b/p2/a.wav", "s3://b/p"), ("s3://b//p/a.wav", "s3://b/p"), ("../x.wav", "s3://b/p"),
                       ("../../../x.wav", "s3://b"), ("/d/root-evil/x.wav", "/d/root"), ("../x.wav", "/d/root"),
                       ("file:///etc/passwd", "/d/root"), ("/d/root/../x.wav", "/d/root")]:
        with pytest.raises(OutsideRoot):
            confine_manifest_path(path, root)
    # an allowed root is explicit, and compared the same way
    assert confine_manifest_path("s3://other/k/a.wav", "s3://data", ["s3://other/"]) == "s3://other/k/a.wav"
    with pytest.raises(OutsideRoot):
        confine_manifest_path("s3://other-evil/a.wav", "s3://data", ["s3://other"])
    assert confine_manifest_path("/mnt/x/a.wav", "/d/root", ["/mnt/x"]) == "/mnt/x/a.wav"
    for bad_root in ("s3://", "s3://b/../c", "http://x", "/local/on/s3/data"):
        with pytest.raises(ValueError):
            confine_manifest_path("a.wav", "s3://data", [bad_root])


# ---------------------------------------------------------------- manifest rows (scoring)
def _outside_manifest(tmp_path: Path) -> tuple[object, Path, Path]:
    data = open_location(str(tmp_path / "data"))
    _put(data, "fan/ok.wav", _wav(0))
    _put(data, "fan/ok2.wav", _wav(1))
    outside = tmp_path / "outside"
    for name in ("stolen.wav", "stolen2.wav", "stolen3.wav", "stolen4.wav"):
        _put(open_location(str(outside)), name, _wav(2))
    _put(open_location(str(tmp_path / "data-evil")), "x.wav", _wav(3))
    man = tmp_path / "m.csv"
    man.write_text("path,machine_type,section\n"
                   "fan/ok.wav,fan,00\n"
                   "fan/sub/../ok2.wav,fan,00\n"  # normalised, stays inside: valid as before
                   "../outside/stolen.wav,fan,00\n"
                   f"{outside}/stolen2.wav,fan,00\n"
                   f"file://{outside}/stolen3.wav,fan,00\n"
                   f"{tmp_path}/data/../outside/stolen4.wav,fan,00\n"
                   f"{tmp_path}/data-evil/x.wav,fan,00\n")
    return data, man, outside


def test_manifest_rows_outside_data_root_are_bad_rows(tmp_path):
    data, man, outside = _outside_manifest(tmp_path)
    rows = read_manifest(str(man), data)
    assert [c.reason for c in rows] == ["", ""] + ["bad_manifest_row"] * 5
    assert rows[1].path == f"{data.path}/fan/ok2.wav"
    for line, c in enumerate(rows[2:], start=4):
        assert f"manifest row {line}:" in c.error and "outside" in c.error and "--allow-root" in c.error
        assert "\n" not in c.error
        assert not c.path.startswith(str(outside)) or not c.ok
    # the same through the one entry point the jobs call
    listed = list_clips(data, manifest=str(man))
    assert [c.ok for c in listed] == [True, True] + [False] * 5


def test_allow_root_names_where_else_clips_may_be(tmp_path):
    data, man, outside = _outside_manifest(tmp_path)
    rows = list_clips(data, manifest=str(man), allow_roots=[str(outside)])
    assert [c.reason for c in rows] == [""] * 6 + ["bad_manifest_row"]  # data-evil is not under data
    assert rows[2].path == f"{outside}/stolen.wav" and rows[2].size > 0
    with pytest.raises(ValueError, match="--allow-root needs --manifest"):
        list_clips(data, allow_roots=[str(outside)])
    with pytest.raises(ValueError, match="--allow-root"):
        list_clips(data, manifest=str(man), allow_roots=["s3://elsewhere"])  # other storage than DATA_URI


@pytest.mark.s3
def test_manifest_rows_outside_data_root_on_s3(s3_bucket, s3_endpoint):
    root = open_location(s3_bucket, s3_endpoint)
    other = f"{s3_bucket}-other"
    ensure_bucket(open_location(other, s3_endpoint))
    data = open_location(f"{s3_bucket}/data", s3_endpoint)
    _put(data, "fan/ok.wav", _wav(0))
    _put(root, "outside/stolen.wav", _wav(1))
    _put(root, "data-evil/x.wav", _wav(2))
    _put(open_location(other, s3_endpoint), "clips/y.wav", _wav(3))
    man = f"{s3_bucket}/m.csv"
    text = ("path,machine_type\n"
            "fan/ok.wav,fan\n"
            "../outside/stolen.wav,fan\n"
            f"{s3_bucket}/data-evil/x.wav,fan\n"
            f"{s3_bucket}/data/../outside/stolen.wav,fan\n"
            f"{other}/clips/y.wav,fan\n")
    write_bytes(root, man[len("s3://"):], text.encode())
    rows = read_manifest(man, data, endpoint_url=s3_endpoint)
    assert [c.reason for c in rows] == ["", "bad_manifest_row", "bad_manifest_row", "bad_manifest_row",
                                        "bad_manifest_row"]
    assert all("outside" in c.error for c in rows[1:])
    # an explicitly allowed bucket is read; a prefix of its name is not enough
    rows = read_manifest(man, data, endpoint_url=s3_endpoint, allow_roots=[f"{other}/"])
    assert [c.reason for c in rows] == ["", "bad_manifest_row", "bad_manifest_row", "bad_manifest_row", ""]
    assert rows[4].path == f"{other[len('s3://'):]}/clips/y.wav" and rows[4].size > 0 and rows[4].fingerprint
    rows = read_manifest(man, data, endpoint_url=s3_endpoint, allow_roots=[s3_bucket[: -3]])
    assert rows[4].reason == "bad_manifest_row"


@pytest.mark.s3
def test_s3_keys_with_dot_dot_folders_are_not_machine_types(s3_bucket, s3_endpoint):
    """On S3 a key may hold a '..' folder: the template's machine type is then '..'."""
    data = open_location(s3_bucket, s3_endpoint)
    _put(data, "2026-11-24/fan/a.wav", _wav(0))
    _put(data, "2026-11-24/../b.wav", _wav(1))
    listed = {c.path.rsplit("/", 2)[-2]: c for c in list_pattern(data, "{date}/{machine_type}/{name}.wav")}
    assert listed["fan"].ok and listed["fan"].machine_type == "fan"
    bad = listed[".."]
    assert bad.reason == "bad_name" and bad.machine_type == "" and "machine_type '..'" in bad.error


# ---------------------------------------------------------------- sections and submission files
def test_bad_section_in_a_manifest_is_a_bad_row(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    evil = f"/../../../../../../../../..{target}/X"
    data = open_location(str(tmp_path / "data"))
    _put(data, "fan/a.wav", _wav(0))
    _put(data, "fan/b.wav", _wav(1))
    man = tmp_path / "m.csv"
    man.write_text(f"path,machine_type,section\nfan/a.wav,fan,{evil}\nfan/b.wav,fan,00\n")
    rows = read_manifest(str(man), data)
    assert rows[0].reason == "bad_manifest_row" and rows[0].section is None and "section" in rows[0].error
    assert "manifest row 2:" in rows[0].error
    assert rows[1].ok and rows[1].section == "00"


def test_submission_file_names_stay_in_the_submission_folder(tmp_path):
    """Score rows carrying such a section or machine type (rows written before the
    check): the submission files are written the way the scoring job writes them."""
    target = tmp_path / "elsewhere"
    target.mkdir()
    evil = f"/../../../../../../../../..{target}/X"
    df = pd.DataFrame([
        {"file_name": "a.wav", "machine_type": "fan", "section": evil, "split": "test", "status": "ok",
         "anomaly_score": 1.0, "decision": 1},
        {"file_name": "b.wav", "machine_type": "fan", "section": "00", "split": "test", "status": "ok",
         "anomaly_score": 0.5, "decision": 0},
        {"file_name": "c.wav", "machine_type": "../../../x", "section": "00", "split": "test", "status": "ok",
         "anomaly_score": 0.5, "decision": 0},
    ])
    out = open_location(str(tmp_path / "out"))
    sub_dir = f"{out.path}/submission/r1"
    files = results.submission_files(df)
    for name, text in files.items():
        write_bytes(out, f"{sub_dir}/{name}", text.encode())
    assert not any(target.iterdir())
    assert sorted(files) == ["anomaly_score_fan_section_00_test.csv", "decision_result_fan_section_00_test.csv"]
    assert _files(tmp_path) == {
        "out/submission/r1/anomaly_score_fan_section_00_test.csv",
        "out/submission/r1/decision_result_fan_section_00_test.csv"}


# ---------------------------------------------------------------- machine types and models
def _fake_fitted():
    import torch

    return types.SimpleNamespace(state={"bank": torch.zeros(2, 3)}, extras={}, threshold=0.5,
                                 train_scores=np.zeros(2))


def test_training_manifest_with_a_path_out_of_its_roots_is_refused(tmp_path):
    data = open_location(str(tmp_path / "data"))
    _put(data, "fan/a.wav", _wav(0))
    _put(open_location(str(tmp_path)), "outside.wav", _wav(1))
    man = tmp_path / "train.csv"
    for body, what in [("fan/a.wav,..,00", "machine_type '..'"),
                       ("fan/a.wav,../x,00", "machine_type '../x'"),
                       ("fan/a.wav,fan,../../x", "section '../../x'"),
                       ("../outside.wav,fan,00", "outside")]:
        man.write_text(f"path,machine_type,section\n{body}\n")
        with pytest.raises(ManifestError) as e:
            read_manifest(str(man), data, training=True)
        assert "row 2" in str(e.value) and what in str(e.value) and "\n" not in str(e.value)
        with pytest.raises(ManifestError):
            list_clips(data, split="train", manifest=str(man), training=True, machines=["fan"])
    # the same rows when scoring: bad rows, the others kept
    man.write_text("path,machine_type\nfan/a.wav,..\n")
    (row,) = read_manifest(str(man), data)
    assert row.reason == "bad_manifest_row" and row.machine_type == "" and "machine_type '..'" in row.error


def test_a_model_is_never_written_outside_models_uri(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    before = _files(tmp_path)
    for mt in ("..", "../x", "a/b", "", "."):
        with pytest.raises(ArtifactError, match="machine type"):
            save_artifact(str(models), mt, _fake_fitted(), CFG)
    assert _files(tmp_path) == before
    model_id = save_artifact(str(models), "fan", _fake_fitted(), CFG)  # a good name still saves
    loc = open_location(str(models))
    with pytest.raises(ArtifactError, match="machine type"):
        set_current(loc, "..", model_id)
    with pytest.raises(ArtifactError, match="model id"):
        set_current(loc, "fan", "../fan")
    with pytest.raises(ArtifactError, match="machine type"):
        artifact_dir(loc, "..")
    assert not (tmp_path / "current.json").exists() and not (tmp_path / model_id).exists()
    assert json.loads((models / "fan" / "current.json").read_text())["model_id"] == model_id


def test_asd_models_type_and_set_current_stay_in_models_uri(tmp_path, capsys):
    from jobs.models import main

    models = tmp_path / "models"
    model_id = save_artifact(str(models), "fan", _fake_fitted(), CFG)
    # a version folder in MODELS_URI's parent: '--type ..' must not list it
    (tmp_path / model_id).mkdir()
    (tmp_path / model_id / "artifact.json").write_text("{}")
    before = _files(tmp_path)
    for argv in ([str(models), "--type", ".."], [str(models), "--set-current", "..", model_id],
                 [str(models), "--set-current", "fan", "../models/fan"]):
        capsys.readouterr()
        assert main(argv) == 2
        out = capsys.readouterr()
        assert out.out == "" and "asd models:" in _one_line(out.err) and "not a folder name" in out.err
    assert _files(tmp_path) == before
    assert main([str(models), "--type", "fan"]) == 0


# ---------------------------------------------------------------- templates
def test_only_values_and_template_folders_stay_in_data_root(tmp_path, capsys):
    data = open_location(str(tmp_path / "data"))
    _put(data, "2026-11-24/fan/a.wav", _wav(0))
    _put(open_location(str(tmp_path)), "fan/stolen.wav", _wav(1))  # in DATA_URI's parent
    pattern = "{date}/{machine_type}/{name}.wav"
    for bad in ("..", ".", "../..", "a/b", "{x}"):
        with pytest.raises(ValueError) as e:
            parse_only([f"date={bad}"])
        assert "--only" in str(e.value) and "\n" not in str(e.value)
        with pytest.raises(ValueError, match="--only date"):
            list_pattern(data, pattern, only={"date": bad})
    with pytest.raises(ValueError, match="'.' or '..'"):
        list_pattern(data, "../{machine_type}/{name}.wav", only={"machine_type": "fan"})
    assert parse_only(["date=2026-11-24"]) == {"date": "2026-11-24"}
    (ok,) = list_pattern(data, pattern, only={"date": "2026-11-24"})
    assert ok.ok and ok.machine_type == "fan"
    # the CLI: one line, exit 2, nothing listed
    from jobs.manifest import main

    out_csv = tmp_path / "m.csv"
    capsys.readouterr()
    assert main([data.uri, "--pattern", pattern, "--only", "date=..", "--out", str(out_csv)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and _one_line(out.err).startswith("asd manifest: --only date '..'")
    assert not out_csv.exists()


def test_dcase_folder_that_is_not_a_name_is_a_bad_name(tmp_path):
    from asd_core.catalog import list_archive

    data = open_location(str(tmp_path / "data"))
    name = "section_00_source_test_normal_0000.wav"
    _put(data, f"fan/test/{name}", _wav(0))
    _put(data, f"my fan/test/{name}", _wav(1))
    listed = {c.path.split("/")[-3]: c for c in list_archive(data)}
    assert listed["fan"].ok
    assert listed["my fan"].reason == "bad_name" and "machine type folder 'my fan'" in listed["my fan"].error


# ---------------------------------------------------------------- run ids under OUT
def _score_rows(path: str) -> pa.Table:
    return results.to_table([{"path": path, "file_name": "x.wav", "machine_type": "fan", "section": "00",
                              "split": "test", "status": "ok", "anomaly_score": 1.0, "run_id": "x"}])


def test_asd_scores_run_id_cannot_read_outside_out(tmp_path, capsys):
    from jobs.scores import main

    out = tmp_path / "a" / "out"
    store = RunStore(open_location(str(out)))
    store.out.fs.makedirs(str(out / "runs"), exist_ok=True)
    secret = tmp_path / "secret"
    write_table(store.out, str(secret / "s.parquet"), _score_rows("/secret/clip.wav"))
    # a record outside OUT that '--run-id ../../x' reaches: runs/../../x.json
    (tmp_path / "x.json").write_text(json.dumps({"run_id": "x", "scores_path": str(secret), "files": ["s.parquet"]}))
    capsys.readouterr()
    assert main([str(out), "--run-id", "../../x"]) == 2
    got = capsys.readouterr()
    assert got.out == "" and _one_line(got.err).startswith("asd scores: --run-id '../../x'")
    # a record inside OUT whose files are elsewhere
    (out / "runs" / "r1.json").write_text(json.dumps({"run_id": "r1", "scores_path": str(secret),
                                                      "files": ["s.parquet"]}))
    assert main([str(out), "--run-id", "r1"]) == 2
    got = capsys.readouterr()
    assert got.out == "" and "outside" in _one_line(got.err)
    (out / "runs" / "r2.json").write_text(json.dumps({"run_id": "r2", "scores_path": str(out / "scores"),
                                                      "files": ["../../../secret/s.parquet"]}))
    assert main([str(out), "--run-id", "r2"]) == 2
    assert "file" in _one_line(capsys.readouterr().err)
    with pytest.raises(ValueError, match="run id"):
        store.record("../../x")


def test_a_journal_naming_a_folder_outside_out_deletes_nothing(tmp_path):
    out = open_location(str(tmp_path / "out"))
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "f").write_text("x")
    write_bytes(out, f"{out.path}/{JOURNAL}", json.dumps({"run_id": "r", "scores_path": str(keep)}).encode())
    store = RunStore(out)
    with pytest.raises(ValueError, match="outside"):
        store.begin("r2")
    assert (keep / "f").exists()
    with pytest.raises(ValueError, match="run id"):
        RunStore(open_location(str(tmp_path / "out2"))).begin("../x")
    assert not (tmp_path / "x").exists()


def test_report_of_a_record_with_a_bad_run_id_writes_nothing_outside(tmp_path, capsys):
    from jobs.report import main

    out = tmp_path / "out"
    loc = open_location(str(out))
    rid = "../../../x"
    write_bytes(loc, str(out / "runs" / "r.json"), json.dumps({
        "run_id": rid, "date": "2026-01-01", "format": 2, "published_at": "2026-01-01T00:00:00", "split": "test",
        "n_rows": 0, "n_error": 0}).encode())
    mdir = out / "metrics" / "date=2026-01-01" / "run=.."
    os.makedirs(mdir, exist_ok=True)
    write_table(loc, str(out / "metrics" / "x" / "metrics.parquet"), results.metrics_table([]))
    os.makedirs(out / "evaluated" / "date=2026-01-01" / "run=..", exist_ok=True)
    write_table(loc, str(out / "evaluated" / "x" / "evaluated.parquet"), results.empty_scores())
    before = _files(tmp_path)
    capsys.readouterr()
    assert main([str(out), "--no-plots"]) == 2
    assert "run id" in _one_line(capsys.readouterr().err)
    assert _files(tmp_path) == before


def test_a_run_read_through_another_spelling_of_out_still_reads(tmp_path, capsys):
    """Records hold absolute paths: OUT reached through a symlink is still OUT."""
    from jobs.scores import main

    out = tmp_path / "real" / "out"
    store = RunStore(open_location(str(out)))
    d = store.run_dir("r1", "2026-01-01")
    write_table(store.out, f"{d}/part-00000.parquet", _score_rows(str(out / "clip.wav")))
    write_bytes(store.out, store.record_path("r1"), json.dumps({"run_id": "r1", "scores_path": d,
                                                                "files": ["part-00000.parquet"]}).encode())
    (tmp_path / "link").symlink_to(tmp_path / "real")
    capsys.readouterr()
    assert main([str(tmp_path / "link" / "out"), "--run-id", "r1"]) == 0
    assert "clip.wav" in capsys.readouterr().out
