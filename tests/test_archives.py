"""Real plants' archives: path templates, manifests, unlabelled nights, alerts, the run
store's latest view and incremental index."""

from __future__ import annotations

import io
import json
import re
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import soundfile as sf

from asd_core import results
from asd_core.catalog import ManifestError, PathPattern, list_clips, list_pattern, read_manifest, write_manifest
from asd_core.runstore import JOURNAL, SUCCESS, RunStore, alert_summary, storage_options, write_table
from asd_core.storage import ensure_bucket, open_location, write_bytes
from tests.signals import ANOMALIES, SR, harmonic_tone


def e2e(fn):
    return pytest.mark.ray(pytest.mark.s3(pytest.mark.slow(fn)))


HUM = {"press-07": 180.0, "fan-3": 310.0}


def _audio(rng, f0, anomaly=False, fmt="FLAC") -> bytes:
    x = harmonic_tone(rng, seconds=3.0, f0=f0 * rng.uniform(0.98, 1.02))
    if anomaly:
        x = ANOMALIES[int(rng.integers(0, 2))](rng, x)  # clicks or a new tone: plainly audible
    buf = io.BytesIO()
    sf.write(buf, x, SR, format=fmt)
    return buf.getvalue()


def _write(loc, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        write_bytes(loc, f"{loc.path}/{rel}", data)


# ---------------------------------------------------------------- templates and manifests (no Ray)
def test_pattern_maps_fields_and_matches_extension_in_any_case():
    p = PathPattern.parse("{date}/{machine_type}/{name}.flac")
    assert p.match("2026-11-24/press-07/153012.FLAC") == {"date": "2026-11-24", "machine_type": "press-07",
                                                          "name": "153012"}
    assert p.match("2026-11-24/press-07/extra/153012.flac") is None  # a placeholder stays inside one folder
    assert p.match("2026-11-24/press-07/153012.wav") is None
    with pytest.raises(ValueError, match="machine_type"):
        PathPattern.parse("{date}/{name}.flac")


def test_list_pattern_mimii_tree_labels_and_unmatched_files(tmp_path):
    rng = np.random.default_rng(0)
    loc = open_location(str(tmp_path))
    _write(loc, {
        "fan/id_00/normal/00000012.wav": _audio(rng, 200, fmt="WAV"),
        "fan/id_00/abnormal/00000003.WAV": _audio(rng, 200, True, fmt="WAV"),
        "fan/id_02/normal/00000001.ogg": _audio(rng, 200, fmt="OGG"),
        "fan/notes.txt": b"not audio",
        "fan/id_00/broken/00000004.wav": _audio(rng, 200, fmt="WAV"),
    })
    listed = {c.path[len(loc.path) + 1 :]: c for c in list_pattern(loc, "{machine_type}/{section}/{label}/{name}.wav")}
    # .ogg does not match a template ending in .wav; notes.txt matches nothing
    assert listed["fan/id_00/normal/00000012.wav"].label == "normal"
    assert listed["fan/id_00/abnormal/00000003.WAV"].label == "anomaly"  # MIMII's "abnormal"
    assert listed["fan/id_00/abnormal/00000003.WAV"].section == "id_00"
    assert listed["fan/id_00/normal/00000012.wav"].attributes == {"name": "00000012"}
    assert listed["fan/notes.txt"].reason == "not_audio" and "not audio" in listed["fan/notes.txt"].error
    assert listed["fan/id_00/broken/00000004.wav"].reason == "bad_name"  # label 'broken'
    assert "label 'broken'" in listed["fan/id_00/broken/00000004.wav"].error
    assert listed["fan/id_02/normal/00000001.ogg"].reason == "bad_name"
    # every file is listed, usable or not
    assert len(listed) == 5


def test_manifest_rows_missing_object_bad_row_and_refusals(tmp_path):
    rng = np.random.default_rng(1)
    data = open_location(str(tmp_path / "data"))
    _write(data, {"a/1.flac": _audio(rng, 200), "a/2.flac": _audio(rng, 200), "b/1.flac": _audio(rng, 300)})
    man = tmp_path / "m.csv"
    man.write_text("path,machine_type,label,site\n"
                   "a/1.flac,press,normal,north\n"
                   f"{data.path}/b/1.flac,press,,south\n"  # an absolute path
                   "a/missing.flac,press,normal,north\n"
                   "a/2.flac,press,broken,north\n"
                   ",press,normal,north\n")
    rows = read_manifest(str(man), data)
    assert [c.reason for c in rows] == ["", "", "not_found", "bad_manifest_row", "bad_manifest_row"]
    assert rows[0].attributes == {"site": "north"} and rows[1].label is None
    assert "row 4" in rows[2].error and "missing.flac" in rows[2].error
    assert "row 5" in rows[3].error and "broken" in rows[3].error
    assert rows[0].size == (tmp_path / "data/a/1.flac").stat().st_size and rows[0].fingerprint
    # training: an anomaly is refused, naming the row
    man.write_text("path,machine_type,label\na/1.flac,press,normal\na/2.flac,press,anomaly\n")
    with pytest.raises(ManifestError, match="row 3.*anomaly"):
        read_manifest(str(man), data, training=True)
    man.write_text("path,machine_type\na/1.flac,press\na/1.flac,press\n")
    with pytest.raises(ManifestError, match="rows 2 and 3"):
        read_manifest(str(man), data)
    man.write_text("file,machine_type\na/1.flac,press\n")
    with pytest.raises(ManifestError, match="no 'path' column"):
        read_manifest(str(man), data)


def test_manifest_written_from_a_template_reads_back_the_same_clips(tmp_path):
    rng = np.random.default_rng(2)
    data = open_location(str(tmp_path / "data"))
    _write(data, {f"2026-11-2{d}/{mt}/{1000 + i}.flac": _audio(rng, f0) for d in (3, 4) for mt, f0 in HUM.items()
                  for i in range(2)})
    listed = list_pattern(data, "{date}/{machine_type}/{name}.flac")
    night = list_pattern(data, "{date}/{machine_type}/{name}.flac", only={"date": "2026-11-24"})
    assert [c.path for c in night] == [c.path for c in listed if "/2026-11-24/" in c.path] and len(night) == 4
    assert {c.attributes["date"] for c in night} == {"2026-11-24"}
    assert list_pattern(data, "{date}/{machine_type}/{name}.flac", only={"date": "2030-01-01"}) == []
    with pytest.raises(ValueError, match="not placeholders"):
        list_pattern(data, "{date}/{machine_type}/{name}.flac", only={"day": "x"})
    for ext in ("csv", "parquet"):
        uri = write_manifest(listed, data, str(tmp_path / f"m.{ext}"))
        back = list_clips(data, manifest=uri)
        assert [(c.path, c.machine_type, c.attributes, c.size) for c in back] == \
            [(c.path, c.machine_type, c.attributes, c.size) for c in listed]


# ---------------------------------------------------------------- the run store (no Ray)
def _rows(run_id, paths, score=1.0, status="ok", reason=None):
    return results.to_table([
        {"path": p, "file_name": p.rsplit("/", 1)[-1], "machine_type": "m", "split": "test", "size": 1,
         "fingerprint": "x", "model_id": "knn-1", "models_uri": "models", "status": status, "error_reason": reason,
         "anomaly_score": score if status == "ok" else None, "decision": int(score > 0.5) if status == "ok" else None,
         "threshold": 0.5, "run_id": run_id} for p in paths])


def _publish(store, run_id, table, date="2026-11-24", **manifest):
    stage = store.begin(run_id)
    write_table(store.out, f"{stage}/part-0.parquet", table)
    new, record = store.publish(run_id, table["path"].to_pylist(), {"date": date, **manifest})
    store.finish(record, {})
    return record


def _table(out: str, name: str) -> pa.Table:
    from deltalake import DeltaTable

    loc = open_location(out)
    return DeltaTable(f"{loc.uri}/{name}", storage_options=storage_options(loc)).to_pyarrow_table()


def test_run_store_latest_row_per_clip_and_history(tmp_path):
    store = RunStore(open_location(str(tmp_path)))
    _publish(store, "n1", _rows("n1", ["a", "b"], status="error", reason="read_failed"))
    _publish(store, "n2", _rows("n2", ["b", "c"], score=0.9), date="2026-11-25")
    latest = store.latest().to_pandas().set_index("path")
    assert list(latest.index) == ["a", "b", "c"] and latest.loc["b", "run_id"] == "n2"
    history = _table(str(tmp_path), "scores").to_pandas()  # partitioned by run_date
    assert len(history) == 4 and set(history["run_date"]) == {"2026-11-24", "2026-11-25"}
    # one night's partition reads only that night
    assert store.read_run(store.record("n2")).num_rows == 2
    with pytest.raises(ValueError, match="already published"):
        store.begin("n1")
    # latest equals a rebuild from the history
    assert store.rebuild_latest() == 3
    assert store.latest().to_pandas().set_index("path")["run_id"].to_dict() == latest["run_id"].to_dict()
    # incremental: a transient error is retried, an ok row settles its clip
    items = [{"path": p, "size": 1, "fingerprint": "x", "model_id": "knn-1"} for p in "abc"]
    carried, todo = store.settled(items, split="test", models_uri="models", n_masks=None)
    assert [r["path"] for r in carried] == ["b", "c"] and [i["path"] for i in todo] == ["a"]
    carried, todo = store.settled(items, split="test", models_uri="other-models", n_masks=None)
    assert not carried


def test_a_publish_the_former_layout_left_half_done_is_finished_or_rolled_back(tmp_path):
    """An output of the one-file index whose last publish crashed (its _journal.json is
    there): converting it removes the files of a publish that never committed and
    keeps a committed one whose record was never written."""
    out = open_location(str(tmp_path))
    root = out.path
    write_table(out, f"{root}/latest/scores.parquet", _rows("n1", ["a"]))
    d1 = f"{root}/scores/date=2026-11-24/run=n1"
    write_table(out, f"{d1}/part-00000.parquet", _rows("n1", ["a"]))
    m1 = {"format": 2, "run_id": "n1", "date": "2026-11-24", "scores_path": d1, "files": ["part-00000.parquet"],
          "published_at": "2026-11-24T01:00:00+00:00"}
    write_bytes(out, f"{d1}/{SUCCESS}", json.dumps(m1).encode())
    write_bytes(out, f"{root}/runs/n1.json", json.dumps(m1).encode())
    # crashed after the commit (_SUCCESS), before the index and the record
    d4 = f"{root}/scores/date=2026-11-25/run=n4"
    write_table(out, f"{d4}/part-00000.parquet", _rows("n4", ["c"]))
    write_bytes(out, f"{d4}/{SUCCESS}", json.dumps({**m1, "run_id": "n4", "scores_path": d4, "date": "2026-11-25",
                                                      "published_at": "2026-11-25T01:00:00+00:00"}).encode())
    write_bytes(out, f"{root}/{JOURNAL}", json.dumps({"run_id": "n4", "scores_path": d4}).encode())
    store = RunStore(out)
    _publish(store, "n5", _rows("n5", ["d"]), date="2026-11-26")  # the first run converts
    assert store.is_published("n4") and not out.fs.exists(f"{root}/{JOURNAL}")
    assert sorted(store.latest()["path"].to_pylist()) == ["a", "c", "d"]  # n4 was never in the former index
    assert sorted(_table(str(tmp_path), "scores")["run_id"].to_pylist()) == ["n1", "n4", "n5"]
    # crashed before the commit: the moved files are removed
    out2 = open_location(str(tmp_path / "two"))
    d2 = f"{out2.path}/scores/date=2026-11-25/run=n2"
    write_table(out2, f"{d2}/part-00000.parquet", _rows("n2", ["b"]))
    write_bytes(out2, f"{out2.path}/{JOURNAL}", json.dumps({"run_id": "n2", "scores_path": d2}).encode())
    store2 = RunStore(out2)
    _publish(store2, "n3", _rows("n3", ["e"]))
    assert not store2.is_published("n2") and store2.latest()["path"].to_pylist() == ["e"]
    assert not out2.fs.exists(d2) and not out2.fs.exists(f"{out2.path}/_legacy/scores/date=2026-11-25/run=n2")


def test_alerts_over_threshold_first_then_sensor_alerts():
    rows = pa.concat_tables([_rows("n", ["x1", "x2"], score=0.9), _rows("n", ["y"], score=0.1),
                             _rows("n", ["z"], status="error", reason="unreadable"),
                             _rows("n", ["w"], status="error", reason="read_failed")])
    rows = rows.set_column(rows.schema.get_field_index("machine_type"), "machine_type",
                           pa.array(["press-07", "fan-3", "press-07", "press-07", "fan-3"]))
    rows = rows.set_column(rows.schema.get_field_index("anomaly_score"), "anomaly_score",
                           pa.array([0.9, 0.95, 0.1, None, None]))
    store = RunStore(open_location("/tmp/unused-alerts-" + uuid.uuid4().hex))
    over = rows.filter(pa.compute.equal(rows["decision"], 1))
    assert alert_summary(over) == "2 clips over threshold: fan-3 1, press-07 1"
    assert alert_summary(over.slice(0, 0)) == "no clip over threshold"
    _, alerts = store.write_alerts("n", rows)
    # machines first (highest score first), then the dead microphone; a read failure is no alert
    assert alerts["path"].to_pylist() == ["x2", "x1", "z"]
    assert alerts["alert_kind"].to_pylist() == ["anomaly", "anomaly", "sensor"]
    assert alerts["alert_rank"].to_pylist() == [1, 2, 3]
    assert alert_summary(alerts) == "2 clips over threshold: fan-3 1, press-07 1; 1 sensor alert: press-07 unreadable 1"
    assert alert_summary(alerts.slice(2)) == "no clip over threshold; 1 sensor alert: press-07 unreadable 1"


# ---------------------------------------------------------------- through the jobs
@pytest.fixture(scope="module")
def plant(s3_endpoint):
    """A dated plant archive, FLAC with arbitrary names (some upper-case), no labels:
    3 nights of recordings for two machines; night 1 holds only normal sound."""
    bucket = f"s3://plant-{uuid.uuid4().hex[:10]}"
    ensure_bucket(open_location(bucket, s3_endpoint))
    rng = np.random.default_rng(7)
    nights = {}
    for n, date in enumerate(("2026-11-22", "2026-11-23", "2026-11-24")):
        files = {}
        for mt, f0 in HUM.items():
            for i in range(8 if n == 0 else 4):
                anomaly = n > 0 and i == 0
                ext = "FLAC" if i % 3 == 0 else "flac"
                files[f"{date}/{mt}/{150000 + 100 * n + i}.{ext}"] = _audio(rng, f0, anomaly)
        nights[date] = files
    return {"bucket": bucket, "data": f"{bucket}/audio", "nights": nights}


def _cli(*args) -> int:
    from jobs import cli

    return cli.main([*map(str, args)])


@e2e
def test_plant_archive_train_by_manifest_score_by_pattern_three_nights(ray_cluster, plant, s3_endpoint, capsys):
    data = open_location(plant["data"], s3_endpoint)
    dates = list(plant["nights"])
    _write(data, plant["nights"][dates[0]])
    pattern = "{date}/{machine_type}/{name}.flac"
    man = f"{plant['bucket']}/train.csv"
    assert _cli("manifest", plant["data"], "--pattern", pattern, "--out", man, "--endpoint-url", s3_endpoint) == 0
    text = capsys.readouterr().out
    assert "16 clips match" in text and "press-07: 8 clips" in text
    models = f"{plant['bucket']}/models"
    assert _cli("train", plant["data"], models, "--manifest", man, "--model", "knn", "--preset", "tiny",
                "--endpoint-url", s3_endpoint) == 0
    out = f"{plant['bucket']}/out"
    seen = {}
    for n, date in enumerate(dates):
        if n:
            _write(data, plant["nights"][date])
        if n == 2:  # a recording replaced in place: scored again, still one latest row
            replaced = f"{dates[1]}/fan-3/150101.flac"
            _write(data, {replaced: _audio(np.random.default_rng(99), HUM["fan-3"], anomaly=True)})
        capsys.readouterr()
        rc = _cli("score", plant["data"], models, out, "--pattern", pattern, "--incremental", "--run-id",
                  f"night{n + 1}", "--endpoint-url", s3_endpoint)
        text = capsys.readouterr().out
        assert rc == 0, text
        assert "no labelled clips: no metrics" in text
        m = re.search(r"(\d+) clips? over threshold: (.*) \(alerts at", text) or re.search(r"no clip over", text)
        assert m, text
        seen[n] = text
    store = RunStore(open_location(out, s3_endpoint))
    # night 2 scored only its own new clips, night 3 its new clips and the replaced one
    assert store.record("night2")["n_rows"] == 8 and store.record("night3")["n_rows"] == 9
    # the anomalies of nights 2 and 3 are alerted, with their machine type
    for night in ("night2", "night3"):
        alerts = store.read_output("alerts", store.record(night)).to_pandas()
        assert set(alerts.columns) >= {"machine_type", "section", "anomaly_score", "threshold", "path", "alert_kind",
                                       "date"}
        over = alerts[alerts["alert_kind"] == "anomaly"]
        assert (over["anomaly_score"] > over["threshold"]).all()
        anomalous = {f"{plant['data']}/{d}/{mt}/{150000 + 100 * k + 0}.FLAC" for k, d in enumerate(dates) if k
                     for mt in HUM if d in night or k == int(night[-1]) - 1}
        assert anomalous <= set(alerts["path"]), (anomalous, alerts["path"].tolist())
    # readers see each clip once: the latest view, through 'asd scores' and DuckDB
    n_clips = sum(len(f) for f in plant["nights"].values())
    capsys.readouterr()
    assert _cli("scores", out, "--latest", "--format", "csv", "--endpoint-url", s3_endpoint) == 0
    latest = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(latest) == n_clips and latest["path"].is_unique
    assert latest.set_index("path").loc[f"{plant['data']}/{replaced}", "run_id"] == "night3"
    assert json.loads(latest["attributes"].iloc[0])["date"] in dates
    # the tables as any Delta reader sees them: deltalake, DuckDB over its Arrow dataset, Ray Data
    from deltalake import DeltaTable

    opts = storage_options(store.out)
    history = DeltaTable(f"{out}/scores", storage_options=opts).to_pandas()
    assert len(history) == n_clips + 1  # the replaced clip has a row per run that scored it
    assert set(history["run_date"]) <= {r["date"] for r in store.runs()} and set(history["date"]) == set(dates)
    dt = DeltaTable(f"{out}/latest", storage_options=opts)
    assert dt.to_pandas()["path"].is_unique and set(dt.to_pandas()["clip_part"]) == set(dates)
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    con.register("latest", dt.to_pyarrow_dataset())
    assert con.execute("select count(*), count(distinct path) from latest").fetchone() == (n_clips, n_clips)
    import ray.data

    ds = ray.data.read_delta(f"{out}/latest", storage_options=opts)
    assert ds.count() == n_clips


@e2e
def test_mimii_tree_through_pattern_and_a_manifest_with_bad_rows(ray_cluster, s3_endpoint, capsys):
    bucket = f"s3://mimii-{uuid.uuid4().hex[:10]}"
    ensure_bucket(open_location(bucket, s3_endpoint))
    data = open_location(f"{bucket}/mimii", s3_endpoint)
    rng = np.random.default_rng(3)
    files = {f"fan/id_00/normal/{i:08d}.wav": _audio(rng, 200, fmt="WAV") for i in range(12)}
    files.update({f"fan/id_00/abnormal/{i:08d}.wav": _audio(rng, 200, True, fmt="WAV") for i in range(4)})
    _write(data, files)
    pattern = "{machine_type}/{section}/{label}/{name}.wav"
    models = f"{bucket}/models"
    # training through the template leaves the abnormal clips out
    assert _cli("train", data.uri, models, "--pattern", pattern, "--model", "knn", "--preset", "tiny",
                "--endpoint-url", s3_endpoint) == 0
    from asd_core.trainrun import read_record

    manifest = read_record(models, None, s3_endpoint)
    fan = manifest["types"]["fan"]  # no split in the tree: a seeded fifth of the normals is held out
    assert fan["n_clips"] + fan["n_held_out"] == 12 and fan["n_held_out"] > 0
    man = f"{bucket}/score.csv"
    rows = ["path,machine_type,section,label"]
    rows += [f"fan/id_00/normal/{i:08d}.wav,fan,id_00,normal" for i in range(8, 12)]
    rows += [f"fan/id_00/abnormal/{i:08d}.wav,fan,id_00,anomaly" for i in range(4)]
    rows += ["fan/id_00/normal/99999999.wav,fan,id_00,normal", "fan/id_00/normal/00000000.wav,fan,id_00,weird"]
    write_bytes(open_location(man, s3_endpoint), man[5:], ("\n".join(rows) + "\n").encode())
    out = f"{bucket}/out"
    capsys.readouterr()
    assert _cli("score", data.uri, models, out, "--manifest", man, "--endpoint-url", s3_endpoint, "--json") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n_listed"] == summary["n_scored"] == 10  # one row per manifest row
    assert summary["errors_by_reason"] == {"bad_manifest_row": 1, "not_found": 1}
    assert summary["labelled"] and summary["sections"][0]["section"] == "id_00"
    # no domains in MIMII: the section's AUC over all clips; clicks and a new tone are found
    assert summary["sections"][0]["auc"] > 0.8


def test_manifest_refused_before_ray_starts(tmp_path, capsys):
    """A training manifest listing an anomaly stops 'asd train' with exit 2 before
    anything starts (no models folder is created)."""
    data = open_location(str(tmp_path / "d"))
    _write(data, {"a/1.flac": _audio(np.random.default_rng(0), 200)})
    man = tmp_path / "m.csv"
    man.write_text("path,machine_type,label\na/1.flac,press,anomaly\n")
    assert _cli("train", data.uri, str(tmp_path / "models"), "--manifest", str(man)) == 2
    assert "labelled anomaly" in capsys.readouterr().out
    assert not (tmp_path / "models").exists()
