"""A plant engineer's own nights: labels without sections, several --only values,
empty nights, strict JSON, quiet start-up, readable model listings. No Ray: the
models are knn (nothing to train) or a tiny U-Net trained in process, and an empty
night never starts Ray."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from asd_core import results
from asd_core.artifact import all_versions, format_versions, save_artifact
from asd_core.audio import encode_wav
from asd_core.catalog import list_pattern, parse_only, read_manifest
from asd_core.config import preset
from asd_core.detector import train_type
from asd_core.storage import open_location, write_bytes
from jobs import score as score_job
from tests.signals import SR, add_clicks, harmonic_tone


def _wav(seed: int, anomalous: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 0.1 * harmonic_tone(rng, seconds=2.0)
    return add_clicks(rng, x) if anomalous else x


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"bare {name} in JSON")

    return json.loads(text, parse_constant=refuse)


def test_labels_without_sections_are_one_section(tmp_path):
    data = open_location(str(tmp_path / "data"))
    rows = []
    for i in range(8):
        label = "anomaly" if i % 2 else "normal"
        write_bytes(data, f"{data.path}/clips/{i}.wav", encode_wav(_wav(i, label == "anomaly"), SR))
        rows.append({"path": f"clips/{i}.wav", "machine_type": "press", "label": label})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    listed = read_manifest(str(tmp_path / "m.csv"), data)
    assert {c.section for c in listed} == {"00"}
    scored = [{"path": c.path, "file_name": c.path.rsplit("/", 1)[-1], "machine_type": c.machine_type,
               "section": c.section, "domain": c.domain, "label": c.label, "status": "ok",
               "anomaly_score": float(i % 2), "decision": i % 2} for i, c in enumerate(listed)]
    sections, official = results.compute_metrics(results.to_table(scored).to_pandas())
    assert [(m.machine_type, m.section) for m in sections] == [("press", "00")]
    assert sections[0].auc == 1.0 and sections[0].n_clips == 8


def test_several_only_values_select_each_night(tmp_path):
    assert parse_only(["date=A", "date=B"]) == {"date": ["A", "B"]}
    assert parse_only(["date=A,B", "unit=u1"]) == {"date": ["A", "B"], "unit": "u1"}
    assert parse_only(["date=A", "date=A"]) == {"date": "A"}
    data = open_location(str(tmp_path))
    for day in ("2026-11-24", "2026-11-25", "2026-11-26"):
        write_bytes(data, f"{data.path}/{day}/press/rec_1.wav", encode_wav(_wav(1), SR))
    pattern = "{date}/{machine_type}/{name}.wav"
    two = list_pattern(data, pattern, only=parse_only(["date=2026-11-24", "date=2026-11-26"]))
    assert sorted(c.attributes["date"] for c in two) == ["2026-11-24", "2026-11-26"]
    assert len(list_pattern(data, pattern, only=parse_only(["date=2026-11-24,2026-11-25"]))) == 2


@pytest.fixture
def knn_models(tmp_path):
    cfg = preset("tiny").override({"model.kind": "knn"})
    models = open_location(str(tmp_path / "models"))
    save_artifact(models, "press", train_type([_wav(s) for s in range(6)], cfg).fitted, cfg)
    return models


def test_an_empty_night_is_a_normal_night(tmp_path, knn_models, capsys):
    data = open_location(str(tmp_path / "data"))
    write_bytes(data, f"{data.path}/2026-11-26/press/rec_1.wav", encode_wav(_wav(1), SR))
    out = tmp_path / "out"
    rc = score_job.main([data.uri, knn_models.uri, str(out), "--pattern", "{date}/{machine_type}/{name}.wav",
                         "--only", "date=2026-11-27", "--run-id", "holiday", "--json"])
    text = capsys.readouterr().out.splitlines()
    assert rc == 0, text
    assert "no clips listed" in text[0] and "2026-11-27" in text[0]
    summary = _strict(text[-1])  # strict JSON: no bare NaN
    assert summary["n_listed"] == 0 and summary["official_score"] is None
    from asd_core.runstore import RunStore

    assert RunStore(open_location(str(out))).record("holiday")["n_rows"] == 0
    # a missing DATA_URI is still a failure
    assert score_job.main([str(tmp_path / "nope"), knn_models.uri, str(out), "--pattern",
                           "{date}/{machine_type}/{name}.wav", "--only", "date=2026-11-27"]) == 2


def test_a_note_in_a_nights_folder_is_listed_not_an_error(tmp_path, knn_models, capsys):
    data = open_location(str(tmp_path / "data"))
    write_bytes(data, f"{data.path}/2026-11-27/notes.txt", b"mic 3 moved on Tuesday")
    write_bytes(data, f"{data.path}/2026-11-27/rec_9.wav", encode_wav(_wav(1), SR))  # audio the template misses
    pattern = "{date}/{machine_type}/{name}.wav"
    listed = {c.path.rsplit("/", 1)[-1]: c.reason for c in list_pattern(data, pattern)}
    assert listed == {"notes.txt": "not_audio", "rec_9.wav": "bad_name"}
    data_only_note = open_location(str(tmp_path / "night"))
    write_bytes(data_only_note, f"{data_only_note.path}/2026-11-27/notes.txt", b"holiday")
    out = tmp_path / "out"
    rc = score_job.main([data_only_note.uri, knn_models.uri, str(out), "--pattern", pattern, "--run-id", "n1",
                         "--max-error-rate", "0", "--json"])
    summary = _strict(capsys.readouterr().out.splitlines()[-1])
    assert rc == 0 and summary["n_error"] == 0 and summary["n_not_audio"] == 1, summary
    from asd_core.runstore import RunStore

    rows = RunStore(open_location(str(out))).read_run(RunStore(open_location(str(out))).record("n1")).to_pylist()
    assert [(r["path"].rsplit("/", 1)[-1], r["error_reason"]) for r in rows] == [("notes.txt", "not_audio")]
    assert "1 not audio, not scored" in score_job.format_summary({**summary, "n_listed": 1})


def test_start_up_check_does_not_warn_about_its_own_mask(tmp_path, caplog):
    from asd_core.pipeline import ScoreActor

    cfg = preset("tiny").override({"epochs": 1})
    assert cfg.score.rule.startswith("knn_err")  # the neighbour rules warn about a foreign K
    models = open_location(str(tmp_path / "models"))
    save_artifact(models, "press", train_type([_wav(s) for s in range(4)], cfg).fitted, cfg)
    with caplog.at_level(logging.WARNING):
        actor = ScoreActor(models_uri=models.uri, machine_types=["press"])
    assert actor.scorer is not None and not actor.bad
    assert not [r for r in caplog.records if "masks" in r.getMessage()], caplog.text


def test_model_listing_shows_no_epochs_for_kinds_without_training(knn_models):
    text = format_versions(all_versions(knn_models))
    row = next(line for line in text.splitlines() if line.startswith("press"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[3] == "knn" and cells[5] == "-"


def test_a_tree_without_split_holds_normals_out_and_never_evaluates_training_clips(tmp_path):
    """MIMII-style tree: training keeps a seeded share of the normals out; the artifact
    records the rule; scoring evaluates the held-out normals and the anomalies only."""
    from asd_core.pipeline import clip_items, model_index
    from asd_core.trainprep import select_training_clips
    from asd_core.trainrun import hold_out

    data = open_location(str(tmp_path / "data"))
    for i in range(30):
        write_bytes(data, f"{data.path}/fan/id_00/normal/{i:04d}.wav", encode_wav(_wav(i), SR))
    for i in range(6):
        write_bytes(data, f"{data.path}/fan/id_00/abnormal/{i:04d}.wav", encode_wav(_wav(100 + i, True), SR))
    pattern = "{machine_type}/{section}/{label}/{name}.wav"
    cfg = preset("tiny").override({"model.kind": "knn"})
    train_listing = list_pattern(data, pattern, split="train")
    kept, rule = hold_out(train_listing, data, cfg)
    paths, skipped, _ = select_training_clips(kept, dcase_layout=False)
    held = {c.path for c in train_listing if c.label == "normal"} - set(paths)
    assert rule["n_held_out"] == len(held) and 2 <= len(held) <= 12  # about a fifth of 30
    assert all("abnormal" in p for p, _ in skipped)  # anomalies never train
    trained = train_type([_wav(int(p.rsplit("/", 1)[-1][:4])) for p in paths], cfg)
    trained.fitted.extras["holdout"] = rule
    models = open_location(str(tmp_path / "models"))
    save_artifact(models, "fan", trained.fitted, cfg)
    from asd_core.holdout import HoldOut

    items = clip_items(list_pattern(data, pattern, split="test"), data, model_index(models), "r1")
    assert len(items) == 36  # every clip is scored
    scored = pd.DataFrame([{**i, "status": "ok", "anomaly_score": 1.0} for i in items])
    kept, n_trained = results.drop_training_clips(scored, {"fan": HoldOut.from_dict(rule)}, data.path)
    assert n_trained == len(paths)  # trained on: never evaluated
    assert set(results.evaluable(kept)["path"]) == held | {i["path"] for i in items if "abnormal" in i["path"]}


def test_readers_say_one_line_when_storage_is_unreachable(monkeypatch, capsys):
    from jobs import report as report_job
    from jobs import scores as scores_job

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    dead = ["s3://plant/out", "--endpoint-url", "http://127.0.0.1:9"]  # nothing listens on port 9
    for job in (scores_job, report_job):
        capsys.readouterr()
        assert job.main(dead) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot be read: EndpointConnectionError" in err[0], err


def test_scores_of_an_output_without_runs_is_an_error_not_an_empty_table(tmp_path, capsys):
    from jobs import scores as scores_job

    assert scores_job.main([str(tmp_path / "nope"), "--latest", "--format", "csv"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "no published scoring run under" in captured.err
