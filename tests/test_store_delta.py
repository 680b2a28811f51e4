"""The run store on Delta Lake (asd_core.store), on a local folder and on the embedded
S3 server: the tables two nights leave, a kill at every step of a commit, two runs at
once, SIGTERM/SIGINT, a run whose lease was taken over, damaged tables and their
repair, crafted files that lead outside OUT, the incremental lookup's partitions,
compaction, conversion of the former layout.

No Ray: a fake pipeline stages the rows (what jobs.score's driver writes), and the
model index is a stand-in. Runs that must be killed or run concurrently run in a
subprocess (:func:`_child`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asd_core import results, scorerun
from asd_core.catalog import ListedClip
from asd_core.runs import LeaseHeld
from asd_core.runstore import LEASE, LeaseLost, RunStore, StoreError, storage_options, write_table
from asd_core.storage import open_location, read_bytes, write_bytes
from asd_core.store import legacy
from asd_core.store.runstore import STEPS

from .children import CTRL_C_REACHES

REPO = Path(__file__).resolve().parents[1]
D1, D2 = "2026-11-23", "2026-11-24"
MODEL = {"model_id": "knn-0123456789ab", "model_kind": "knn"}
KILLED = 9


# ---------------------------------------------------------------- runs without Ray
def fake_models(loc, machine_types=None, bad=None):
    return {"fan": dict(MODEL), "pump": dict(MODEL)}


def night_clips(data: str, date: str | None, n: int = 8, start: int = 0) -> list[ListedClip]:
    """``n`` clips of one night: fan and pump, every fourth an anomaly, the sixth silent;
    with ``date`` the template's fields (date, name, unit), without it none."""
    clips = []
    for i in range(start, start + n):
        name = f"silent{i:04d}" if i % 8 == 5 else f"c{i:04d}"
        attrs = {"date": date, "name": name, "unit": f"u{i % 2}"} if date else {}
        folder = f"{date}/" if date else ""
        clips.append(ListedClip(f"{data}/{folder}{'fan' if i % 2 else 'pump'}/{name}.flac", 1000 + i, None, "",
                                "fan" if i % 2 else "pump", f"etag:{i}", "", "00", "source" if i % 4 < 2 else "target",
                                "anomaly" if i % 4 == 0 else "normal", "test", attrs))
    return clips


def fake_pipeline(kill: bool = False, sleep: float = 0.0, mark: str | None = None):
    def run(items, models, stage, out):
        if mark:
            Path(mark).write_text("scoring")
        time.sleep(sleep)
        now = datetime.now(timezone.utc)
        rows = []
        for it in items:
            r = dict(it, scored_at=now)
            if it["file_name"].startswith("silent"):
                r.update(status="error", error_reason="silent", error="digital silence")
            else:
                s = 0.9 if it["label"] == "anomaly" else 0.1 + 0.001 * (it["size"] % 100)
                r.update(status="ok", anomaly_score=s, decision=int(s > 0.5), threshold=0.5, n_tiles=3)
            rows.append(r)
        write_table(out, f"{stage}/part-00000.parquet", results.to_table(rows))
        if kill:
            os._exit(KILLED)

    return run


def run_night(out: str, data: str, run_id: str, clips: list[ListedClip], *, incremental: bool = True,
              lease: bool = False, pipeline=None, **opts) -> dict:
    data_uri = uri_of_data(data, data)
    o = scorerun.ScoreOptions(data_uri, f"{data_uri}-models", out, run_id=run_id, incremental=incremental, **opts)
    pipe = pipeline or fake_pipeline()
    if lease:
        return scorerun.run_with_lease(o, pipe, clips)
    return scorerun.score_run(o, pipe, clips, run_id=run_id)


def _child() -> None:
    """A run in its own process: ``python -c 'from tests.test_store_delta import _child; _child()' SPEC``."""
    spec = json.loads(sys.argv[1])
    scorerun.model_index = fake_models
    step, sync = spec.get("kill_at"), spec.get("sync")

    def hook(self, name):
        if name == step:
            os._exit(KILLED)
        if sync and name == "intent":  # both runs commit at the same time
            Path(sync, spec["run_id"]).write_text("ready")
            deadline = time.time() + 120
            while len(os.listdir(sync)) < 2 and time.time() < deadline:
                time.sleep(0.05)

    RunStore._step = hook
    clips = [c for d, n, s in spec["clips"] for c in night_clips(spec["data"], d, n, s)]
    pipe = fake_pipeline(kill=step == "staged", sleep=spec.get("sleep", 0), mark=spec.get("mark"))
    summary = run_night(spec["out"], spec["data"], spec["run_id"], clips, incremental=spec.get("incremental", True),
                        lease=spec.get("lease", False), pipeline=pipe, lease_ttl_s=spec.get("ttl", 6 * 3600))
    print(json.dumps({"n_scored": summary["n_scored"]}))


def child(spec: dict, wait: bool = True):
    cmd = [sys.executable, "-c", "from tests.test_store_delta import _child; _child()", json.dumps(spec)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                **CTRL_C_REACHES)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- where
@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path, monkeypatch):
    """``(out, data)`` on a local folder or in a fresh bucket of the embedded S3 server."""
    monkeypatch.setattr(scorerun, "model_index", fake_models)
    if request.param == "local":
        return str(tmp_path / "out"), str(tmp_path / "data")
    bucket = request.getfixturevalue("s3_bucket")
    return f"{bucket}/out", f"{bucket[len('s3://'):]}/data"


@pytest.fixture
def local(tmp_path, monkeypatch):
    monkeypatch.setattr(scorerun, "model_index", fake_models)
    return str(tmp_path / "out"), str(tmp_path / "data")


def dt(out: str, name: str):
    from deltalake import DeltaTable

    loc = open_location(out)
    return DeltaTable(f"{out.rstrip('/')}/{name}", storage_options=storage_options(loc))


def table(out: str, name: str) -> pa.Table:
    return dt(out, name).to_pyarrow_table()


def staged(out: str) -> list[str]:
    loc = open_location(out)
    d = f"{loc.path}/_staging"
    return [p for p in loc.fs.ls(d, detail=False)] if loc.fs.exists(d) else []


def uri_of_data(data: str, path: str) -> str:
    return path if data.startswith("/") else f"s3://{path}"


# ---------------------------------------------------------------- two nights
def test_two_nights_latest_once_per_clip_history_row_per_clip_per_run(where, capsys):
    out, data = where
    n1 = night_clips(data, D1, 8)
    s1 = run_night(out, data, "night1", n1, incremental=False)
    n2 = night_clips(data, D1, 8) + night_clips(data, D2, 8, start=8)
    s2 = run_night(out, data, "night2", n2, incremental=False)  # night 1's clips again, and new ones
    assert (s1["n_scored"], s2["n_scored"]) == (8, 16)
    latest = table(out, "latest").to_pandas()
    assert len(latest) == 16 and latest["path"].is_unique and set(latest["run_id"]) == {"night2"}
    history = table(out, "scores").to_pandas()
    assert len(history) == 24 and history.groupby("path").size().to_dict() == {
        uri_of_data(data, c.path): 2 if i < 8 else 1 for i, c in enumerate(n2)}
    # template fields are columns; partitions: run_date (history), the clip's date (latest)
    assert {"date", "unit", "name", "run_date"} <= set(history.columns)
    assert set(latest["clip_part"]) == {D1, D2} and (latest["clip_part"] == latest["date"]).all()
    assert dt(out, "latest").metadata().partition_columns == ["clip_part"]
    assert dt(out, "scores").metadata().partition_columns == ["run_date"]
    # alerts: the anomalies first (by score), then the silent microphones
    alerts = table(out, "alerts").to_pandas()
    a2 = alerts[alerts["run_id"] == "night2"].sort_values("alert_rank")
    assert a2["alert_kind"].tolist() == ["anomaly"] * 4 + ["sensor"] * 2
    assert set(a2.loc[a2["alert_kind"] == "sensor", "error_reason"]) == {"silent"}
    assert s2["alerts"] == "4 clips over threshold: pump 4; 2 sensor alerts: fan silent 2"
    assert (s2["n_anomaly_alerts"], s2["n_sensor_alerts"]) == (4, 2)
    metrics = table(out, "metrics").to_pandas()
    assert set(metrics["run_id"]) == {"night1", "night2"} and {"machine_type", "auc_source"} <= set(metrics.columns)
    store = RunStore(open_location(out))
    assert [r["run_id"] for r in store.runs()] == ["night1", "night2"]
    assert store.record("night2")["summary"]["n_scored"] == 16 and store.is_published("night1")
    loc = open_location(out)
    assert loc.fs.exists(f"{loc.path}/submission/night2/anomaly_score_fan_section_00_test.csv")
    assert staged(out) == []
    # plain readers: asd scores
    from jobs.scores import main

    capsys.readouterr()
    assert main([out, "--latest", "--format", "csv"]) == 0
    import io

    import pandas as pd

    csv = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(csv) == 16 and csv["path"].is_unique and {"date", "unit", "clip_part"} <= set(csv.columns)


def test_asd_scores_run_rows_as_parquet_and_refusals(local, tmp_path, capsys):
    from jobs.scores import main

    out, data = local
    run_night(out, data, "night1", night_clips(data, D1, 8))
    target = tmp_path / "n1.parquet"
    assert main([out, "--run-id", "night1", "--format", "parquet", "--out", str(target)]) == 0
    t = pq.read_table(target)
    assert t.num_rows == 8 and {"run_date", "date", "unit"} <= set(t.column_names)
    import pandas as pd

    df = pd.read_parquet(target)  # plain pandas: integer columns stay integers (nullable), error rows or not
    assert str(df["decision"].dtype).startswith("Int") and str(df["n_tiles"].dtype).startswith("Int"), df.dtypes
    assert main([out, "--run-id", "nope"]) == 2
    assert "not published" in capsys.readouterr().err
    with pytest.raises(ValueError, match="already published"):
        run_night(out, data, "night1", night_clips(data, D1, 8))


def test_clips_without_a_date_go_to_hash_buckets_and_stay_incremental(local):
    out, data = local
    clips = night_clips(data, None, 8)
    run_night(out, data, "n1", clips)
    latest = table(out, "latest").to_pandas()
    assert latest["clip_part"].str.fullmatch(r"h\d\d").all() and "date" not in latest.columns
    s = run_night(out, data, "n2", clips)
    assert (s["n_scored"], s["n_skipped"]) == (0, 8)


# ---------------------------------------------------------------- a kill at every step
def _kill_then_next(out: str, data: str, step: str) -> dict:
    """Night 1 runs under a 2-second lease and is killed at ``step`` (its lease stays,
    as after SIGKILL); night 2 starts once that lease has expired."""
    proc = child({"out": out, "data": data, "run_id": "night1", "clips": [[D1, 8, 0]], "kill_at": step,
                  "lease": True, "ttl": 2})
    assert proc.returncode == KILLED, proc.stdout + proc.stderr
    time.sleep(2)
    return run_night(out, data, "night2", night_clips(data, D1, 8) + night_clips(data, D2, 4, start=8), lease=True)


@pytest.mark.slow
@pytest.mark.parametrize("step", ["staged", *STEPS])
def test_a_kill_at_any_step_of_a_commit_then_the_next_run(where, step):
    """Killed before its commit record: nothing of night 1 is visible and night 2 scores
    its clips; killed after it: night 2 first finishes night 1. Either way every clip
    has one committed row, and the alerts and metrics of the rows that count are there."""
    out, data = where
    s2 = _kill_then_next(out, data, step)
    committed = step not in ("staged", "checked", "outputs")
    store = RunStore(open_location(out))
    assert store.is_published("night1") == committed
    assert s2["n_scored"] == (4 if committed else 12) and s2["n_skipped"] == (8 if committed else 0)
    history = table(out, "scores").to_pandas()
    latest = table(out, "latest").to_pandas()
    paths = {uri_of_data(data, c.path) for c in night_clips(data, D1, 8) + night_clips(data, D2, 4, start=8)}
    assert len(history) == 12 and set(history["path"]) == paths  # one committed row per clip
    assert len(latest) == 12 and set(latest["path"]) == paths
    runs = {"night1", "night2"} if committed else {"night2"}
    assert set(table(out, "runs")["run_id"].to_pylist()) == runs
    assert set(table(out, "metrics")["run_id"].to_pylist()) == runs  # every committed night's metrics
    alerts = table(out, "alerts").to_pandas()
    anomalies = set(latest.loc[latest["decision"] == 1, "path"])
    assert anomalies and anomalies <= set(alerts.loc[alerts["alert_kind"] == "anomaly", "path"])
    silent = set(latest.loc[latest["error_reason"] == "silent", "path"])
    assert silent <= set(alerts.loc[alerts["alert_kind"] == "sensor", "path"])
    if committed:  # night 1's own alerts and metrics, finished by night 2
        n1 = alerts[alerts["run_id"] == "night1"]
        assert set(n1["path"]) >= {p for p in anomalies if f"/{D1}/" in p}
        assert store.record("night1")["summary"]["n_scored"] == 8
        loc = open_location(out)
        assert loc.fs.exists(f"{loc.path}/submission/night1/anomaly_score_fan_section_00_test.csv")
    assert staged(out) == []


# ---------------------------------------------------------------- two runs at once
@pytest.mark.slow
@pytest.mark.parametrize("before", [0, 1], ids=["empty-out", "after-a-night"])
def test_two_concurrent_runs_lose_no_rows(where, tmp_path, before):
    """Two runs on one OUT (no lease: the worst case) commit at the same moment into the
    same partitions, four clips in common: both nights are there whole, whether the
    tables exist already or the two runs create them."""
    out, data = where
    if before:
        run_night(out, data, "before", night_clips(data, D2, 4, start=20))
    sync = tmp_path / "sync"
    sync.mkdir()
    procs = [child({"out": out, "data": data, "run_id": rid, "clips": [[D1, 8, start]], "sync": str(sync),
                    "incremental": False}, wait=False) for rid, start in (("run-a", 0), ("run-b", 4))]
    for p in procs:
        text, _ = p.communicate(timeout=300)
        assert p.returncode == 0, text
    history = table(out, "scores").to_pandas()
    history = history[history["run_id"] != "before"]
    assert sorted(history.groupby("run_id").size().items()) == [("run-a", 8), ("run-b", 8)]
    latest = table(out, "latest").to_pandas()
    assert len(latest) == 12 + 4 * before and latest["path"].is_unique
    latest = latest[latest["run_id"] != "before"]
    newest = history.sort_values("scored_at").groupby("path").tail(1).set_index("path")["run_id"]
    assert latest.set_index("path")["run_id"].sort_index().equals(newest.sort_index())
    assert sorted(table(out, "runs")["run_id"].to_pylist()) == ["before"] * before + ["run-a", "run-b"]
    assert {"run-a", "run-b"} <= set(table(out, "alerts")["run_id"].to_pylist())


# ---------------------------------------------------------------- signals and the lease
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_run_releases_its_lease(where, tmp_path, sig):
    out, data = where
    mark = tmp_path / "scoring"
    proc = child({"out": out, "data": data, "run_id": "stopped", "clips": [[D1, 8, 0]], "lease": True,
                  "sleep": 120, "mark": str(mark)}, wait=False)
    deadline = time.time() + 120
    while not mark.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert mark.exists(), proc.communicate()[0]
    proc.send_signal(sig)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in text, text
    loc = open_location(out)
    assert not loc.fs.exists(f"{loc.path}/{LEASE}")
    s = run_night(out, data, "next", night_clips(data, D1, 8), lease=True)  # not blocked
    assert s["n_scored"] == 8 and staged(out) == []


def test_a_run_whose_lease_was_taken_over_commits_nothing(local):
    from asd_core.runs import Lease

    out, data = local
    loc = open_location(out)
    loc.fs.makedirs(loc.path, exist_ok=True)
    slow = RunStore(loc)
    clips = night_clips(data, D1, 8)
    stage = slow.begin("slow")  # the slow run stages its night ...
    early = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows = [{"path": c.path, "file_name": c.path.rsplit("/", 1)[-1], "machine_type": c.machine_type, "split": "test",
             "status": "ok", "anomaly_score": 0.2, "decision": 0, "threshold": 0.5, "run_id": "slow",
             "models_uri": f"{uri_of_data(data, data)}-models", "attributes": c.attributes_json(),
             "scored_at": early} for c in clips]
    write_table(loc, f"{stage}/part-00000.parquet", results.to_table(rows))
    new, record = slow.publish("slow", [r["path"] for r in rows], {"date": D1})
    # ... its lease expires; another run takes it over and is still running
    with Lease(loc, f"{loc.path}/{LEASE}", "other"):
        with pytest.raises(LeaseLost, match="held by run 'other'"):
            slow.finish(record, {})
    assert not slow.is_published("slow") and not table_exists(out, "scores") and staged(out) == []
    # a late commit after the other run finished never puts older scores back into latest
    run_night(out, data, "other", clips, incremental=False)
    late = RunStore(loc)
    stage = late.begin("late")
    write_table(loc, f"{stage}/part-00000.parquet",
                results.to_table([{**r, "path": uri_of_data(data, r["path"]), "run_id": "late"} for r in rows]))
    new, record = late.publish("late", [uri_of_data(data, r["path"]) for r in rows], {"date": D1})
    late.finish(record, {})
    latest = table(out, "latest").to_pandas()
    assert set(latest["run_id"]) == {"other"} and len(latest) == 8
    assert len(table(out, "scores")) == 16  # the late rows are history, not the latest view


def table_exists(out: str, name: str) -> bool:
    loc = open_location(out)
    return loc.fs.exists(f"{loc.path}/{name}/_delta_log")


def test_lease_refuses_a_second_run_and_expires(local):
    from asd_core.runs import Lease

    out, data = local
    loc = open_location(out)
    loc.fs.makedirs(loc.path, exist_ok=True)
    with Lease(loc, f"{loc.path}/{LEASE}", "holder"):
        with pytest.raises(LeaseHeld, match="holder"):
            run_night(out, data, "n1", night_clips(data, D1, 4), lease=True)
    Lease(loc, f"{loc.path}/{LEASE}", "dead", ttl_s=-1.0).acquire()  # a killed run's, expired
    assert run_night(out, data, "n1", night_clips(data, D1, 4), lease=True)["n_scored"] == 4


# ---------------------------------------------------------------- damaged state
def _two_nights(out, data):
    run_night(out, data, "night1", night_clips(data, D1, 8))
    run_night(out, data, "night2", night_clips(data, D2, 8, start=8))


def _one_line(e: BaseException | str) -> str:
    text = str(e)
    assert "\n" not in text.strip(), text
    return text


@pytest.mark.slow
def test_a_garbage_commit_in_latest_is_one_line_and_repair_works(where, capsys):
    from jobs.scores import main

    out, data = where
    _two_nights(out, data)
    loc = open_location(out)
    v = dt(out, "latest").version()
    write_bytes(loc, f"{loc.path}/latest/_delta_log/{v + 1:020d}.json", b"garbage{")
    with pytest.raises(StoreError) as e:
        run_night(out, data, "night3", night_clips(data, D2, 8, start=8))
    text = _one_line(e.value)
    assert f"{loc.uri}/latest" in text and "--repair" in text
    capsys.readouterr()
    assert main([out, "--latest"]) == 2 and "latest" in _one_line(capsys.readouterr().err.strip())
    assert main([out, "--repair"]) == 0
    assert "set aside" in capsys.readouterr().out
    s = run_night(out, data, "night3", night_clips(data, D2, 8, start=8) + night_clips(data, D2, 2, start=16))
    assert (s["n_skipped"], s["n_scored"]) == (8, 2)
    latest = table(out, "latest").to_pandas()
    assert len(latest) == 18 and latest["path"].is_unique


def test_a_missing_data_file_is_one_line_and_repair_rescores_its_clips(local, capsys):
    from jobs.scores import main

    out, data = local
    _two_nights(out, data)
    victim = next(Path(out, "scores").glob("run_date=*/*.parquet"))
    victim.unlink()
    capsys.readouterr()
    assert main([out, "--run-id", "night1"]) == 2
    err = _one_line(capsys.readouterr().err.strip())
    assert "scores" in err and "--repair" in err
    assert main([out, "--repair"]) == 0
    assert "dropped 1 missing data file" in capsys.readouterr().out
    latest = table(out, "latest").to_pandas()
    lost = 16 - len(latest)
    assert lost > 0 and latest["path"].is_unique  # latest rebuilt from what the history still has
    s = run_night(out, data, "night3", night_clips(data, D1, 8) + night_clips(data, D2, 8, start=8))
    assert s["n_scored"] == lost and len(table(out, "latest")) == 16


def test_a_garbage_commit_record_in_staging_is_one_line_and_repair_sets_it_aside(local, capsys):
    from jobs.scores import main

    out, data = local
    run_night(out, data, "night1", night_clips(data, D1, 8))
    bad = Path(out, "_staging", "crashed", "_out", "COMMIT.json")
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(StoreError) as e:
        run_night(out, data, "night2", night_clips(data, D2, 4, start=8))
    assert "COMMIT.json" in _one_line(e.value) and "--repair" in str(e.value)
    assert main([out, "--repair"]) == 0
    assert run_night(out, data, "night2", night_clips(data, D2, 4, start=8))["n_scored"] == 4
    assert list(Path(out, "_repair", "_staging").iterdir())


# ---------------------------------------------------------------- nothing outside OUT
def _crafted_commit(out: str, name: str, file_uri: str) -> None:
    loc = open_location(out)
    v = dt(out, name).version()
    add = {"add": {"path": file_uri, "partitionValues": {"clip_part": D1} if name == "latest" else {},
                   "size": 100, "modificationTime": 0, "dataChange": True}}
    info = {"commitInfo": {"timestamp": 0, "operation": "WRITE"}}
    write_bytes(loc, f"{loc.path}/{name}/_delta_log/{v + 1:020d}.json",
                (json.dumps(info) + "\n" + json.dumps(add) + "\n").encode())


def test_a_log_naming_a_file_outside_out_is_never_read(where, tmp_path, capsys):
    from jobs.scores import main

    out, data = where
    _two_nights(out, data)
    if out.startswith("s3://"):
        outside = f"s3://secret-{uuid.uuid4().hex[:8]}/secret.parquet"
    else:
        secret = tmp_path / "secret" / "s.parquet"
        write_table(open_location(str(tmp_path)), str(secret), results.to_table([{"path": "SECRET", "status": "ok"}]))
        outside = f"file://{secret}"
    _crafted_commit(out, "latest", outside)
    with pytest.raises(StoreError, match="outside the table"):
        run_night(out, data, "night3", night_clips(data, D2, 8, start=8))
    capsys.readouterr()
    assert main([out, "--latest"]) == 2
    got = capsys.readouterr()
    assert "SECRET" not in got.out and "outside the table" in _one_line(got.err.strip())
    assert main([out, "--repair"]) == 0  # the crafted commit is set aside
    assert len(table(out, "latest")) == 16


def test_links_and_crafted_staging_never_reach_outside_out(local, tmp_path):
    out, data = local
    run_night(out, data, "night1", night_clips(data, D1, 8))
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "f").write_text("x")
    # a staging folder that is a link to a folder elsewhere: neither read nor removed
    os.symlink(keep, Path(out, "_staging", "evil"))
    with pytest.raises(StoreError, match="outside"):
        run_night(out, data, "night2", night_clips(data, D2, 4, start=8))
    assert (keep / "f").exists()
    Path(out, "_staging", "evil").unlink()
    # a commit record whose record names paths and dates that lead out: refused, nothing written outside
    crafted = Path(out, "_staging", "crafted", "_out", "COMMIT.json")
    crafted.parent.mkdir(parents=True)
    crafted.write_text(json.dumps({"run_id": "crafted", "record": {"run_id": "crafted", "date": "../../x",
                                                                     "scores_path": str(keep)}}))
    before = sorted(p for p in tmp_path.rglob("*") if not str(p).startswith(out))
    with pytest.raises(ValueError, match="date"):
        run_night(out, data, "night2", night_clips(data, D2, 4, start=8))
    assert sorted(p for p in tmp_path.rglob("*") if not str(p).startswith(out)) == before
    crafted.parent.parent.joinpath("_out", "COMMIT.json").unlink()
    # a staged part that is a link to a file elsewhere: not read
    secret = tmp_path / "secret.parquet"
    write_table(open_location(str(tmp_path)), str(secret), results.to_table([{"path": "SECRET", "status": "ok"}]))
    store = RunStore(open_location(out))
    stage = store.begin("night2")
    os.symlink(secret, Path(stage, "part-00000.parquet"))
    with pytest.raises(StoreError, match="outside"):
        store.publish("night2", ["SECRET"], {"date": D2})
    # a link inside a table: optimize refuses to vacuum it
    os.symlink(keep, Path(out, "scores", "run_date=evil"))
    with pytest.raises(StoreError, match="symbolic link"):
        store.optimize()
    assert (keep / "f").exists()


# ---------------------------------------------------------------- what a night reads
def test_a_night_reads_and_merges_only_its_partitions(local, capsys):
    """Night 1's latest partition is gone (deleted by hand): a night of other dates
    neither looks it up nor merges into it, so it does not notice; a whole read does."""
    from jobs.scores import main

    out, data = local
    _two_nights(out, data)
    for f in Path(out, "latest", f"clip_part={D1}").iterdir():
        f.unlink()
    s = run_night(out, data, "night3", night_clips(data, D2, 8, start=8) + night_clips(data, "2026-11-25", 4, 16))
    assert (s["n_skipped"], s["n_scored"]) == (8, 4)
    capsys.readouterr()
    assert main([out, "--latest"]) == 2 and "--repair" in _one_line(capsys.readouterr().err.strip())


# ---------------------------------------------------------------- compaction and clean-up
def test_optimize_compacts_and_vacuums_and_runs_on_a_schedule(local, monkeypatch, capsys):
    from asd_core.store import layout
    from jobs.scores import main

    out, data = local
    monkeypatch.setattr(layout, "OPTIMIZE_EVERY", 3)
    for n in range(3):
        run_night(out, data, f"night{n}", night_clips(data, f"2026-11-2{n}", 4))
    assert any(h["operation"] == "OPTIMIZE" for h in dt(out, "runs").history())  # the third run compacted
    run_night(out, data, "night3", night_clips(data, "2026-11-29", 4))
    files = len(list(Path(out, "runs").glob("*.parquet")))
    capsys.readouterr()
    assert main([out, "--optimize", "--retain-hours", "0"]) == 0
    assert "runs:" in capsys.readouterr().out
    assert len(list(Path(out, "runs").glob("*.parquet"))) < files and len(dt(out, "runs").file_uris()) == 1
    assert len(table(out, "runs")) == 4 and len(table(out, "latest")) == 16


# ---------------------------------------------------------------- the former layout
def _legacy_output(out: str, data: str) -> dict:
    """An output as the one-file index wrote it: a format-1 run, two format-2 runs (the
    second re-scored two clips), the index, metrics, alerts."""
    loc = open_location(out)
    root = loc.path
    clips = night_clips(data, D1, 8)
    runs = {}

    def rows(rid, cs, hour):
        at = datetime(2026, 11, 23, hour, tzinfo=timezone.utc)
        return results.to_table([{"path": uri_of_data(data, c.path), "file_name": c.path.rsplit("/", 1)[-1],
                                  "machine_type": c.machine_type, "section": "00", "domain": c.domain,
                                  "label": c.label, "split": "test", "status": "ok", "anomaly_score": 0.1 + hour / 10,
                                  "decision": 0, "threshold": 0.5, "model_id": MODEL["model_id"],
                                  "models_uri": f"{uri_of_data(data, data)}-models", "size": c.size,
                                  "fingerprint": c.fingerprint, "attributes": c.attributes_json(), "run_id": rid,
                                  "scored_at": at} for c in cs])

    old = rows("old1", clips[:2], 1)
    write_table(loc, f"{root}/scores/old1/part-00000.parquet", old)
    write_bytes(loc, f"{root}/runs/old1.json", json.dumps({
        "run_id": "old1", "scores_path": f"{root}/scores/old1", "files": ["part-00000.parquet"], "n_rows": 2,
        "n_error": 0, "published_at": "2026-11-23T01:00:00+00:00", "split": "test"}).encode())
    write_table(loc, f"{root}/metrics/old1/metrics.parquet", results.metrics_table([], "old1"))
    for rid, cs, hour in (("n1", clips[2:6], 2), ("n2", clips[4:8], 3)):
        t = rows(rid, cs, hour)
        d = f"{root}/scores/date={D1}/run={rid}"
        write_table(loc, f"{d}/part-00000.parquet", t)
        manifest = {"format": 2, "run_id": rid, "date": D1, "scores_path": d, "files": ["part-00000.parquet"],
                    "n_rows": t.num_rows, "n_ok": t.num_rows, "n_error": 0, "split": "test",
                    "published_at": f"2026-11-23T0{hour}:00:00+00:00"}
        write_bytes(loc, f"{d}/_SUCCESS", json.dumps(manifest).encode())
        write_bytes(loc, f"{root}/runs/{rid}.json", json.dumps({**manifest, "summary": {"n_scored": 4}}).encode())
        write_table(loc, f"{root}/metrics/date={D1}/run={rid}/metrics.parquet", results.metrics_table([], rid))
        write_table(loc, f"{root}/evaluated/date={D1}/run={rid}/evaluated.parquet", t)
        write_table(loc, f"{root}/alerts/{rid}.parquet", t.slice(0, 0))
        runs[rid] = t
    latest = pa.concat_tables([old, runs["n1"].slice(0, 2), runs["n2"]])
    write_table(loc, f"{root}/latest/scores.parquet", latest)
    return {"clips": clips, "latest": latest}


def test_asd_scores_migrate_converts_the_former_layout_once(where, capsys):
    from jobs.report import report
    from jobs.scores import main

    out, data = where
    made = _legacy_output(out, data)
    store = RunStore(open_location(out))
    assert store.layout() == "legacy" and [r["run_id"] for r in store.runs()] == ["old1", "n1", "n2"]
    capsys.readouterr()
    assert main([out, "--migrate"]) == 0
    assert '"runs": 3' in capsys.readouterr().out
    assert store.layout() == "delta"
    history = table(out, "scores").to_pandas()
    assert sorted(history.groupby("run_id").size().items()) == [("n1", 4), ("n2", 4), ("old1", 2)]
    latest = table(out, "latest").to_pandas().set_index("path")
    want = made["latest"].to_pandas().set_index("path")
    assert len(latest) == 8 and latest["run_id"].sort_index().equals(want["run_id"].sort_index())
    assert [r["run_id"] for r in store.runs()] == ["old1", "n1", "n2"]
    assert store.record("n1")["format"] == 3 and store.read_run(store.record("old1")).num_rows == 2
    assert report(out, plots=False)["run_id"] == "n2"
    loc = open_location(out)
    assert loc.fs.exists(f"{loc.path}/_legacy/MIGRATED.json") and loc.fs.exists(f"{loc.path}/_legacy/runs/n1.json")
    assert main([out, "--migrate"]) == 0 and "nothing to convert" in capsys.readouterr().out
    # the next night carries the converted latest rows
    s = run_night(out, data, "night3", made["clips"])
    assert (s["n_skipped"], s["n_scored"]) == (8, 0)


def test_the_first_run_converts_and_rebuilds_a_garbage_index(local):
    out, data = local
    made = _legacy_output(out, data)
    Path(out, "latest", "scores.parquet").write_bytes(b"garbage")
    s = run_night(out, data, "night3", made["clips"])
    assert (s["n_skipped"], s["n_scored"]) == (8, 0)
    assert sorted(table(out, "runs")["run_id"].to_pylist()) == ["n1", "n2", "night3", "old1"]


def test_an_interrupted_conversion_resumes(local):
    out, data = local
    _legacy_output(out, data)
    code = ("import os, sys; from asd_core.runstore import RunStore; from asd_core.storage import open_location\n"
            "n = []\n"
            "def hook(self, name):\n"
            "    n.append(name)\n"
            "    if name == 'scores' and n.count('scores') == 2: os._exit(9)\n"
            "RunStore._step = hook\n"
            f"RunStore(open_location({out!r})).migrate()\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == KILLED, proc.stderr
    assert RunStore(open_location(out)).layout() == "migrating"
    RunStore(open_location(out)).migrate()
    history = table(out, "scores").to_pandas()
    assert sorted(history.groupby("run_id").size().items()) == [("n1", 4), ("n2", 4), ("old1", 2)]
    assert len(table(out, "latest")) == 8


def test_reading_the_former_layout_without_converting_it(local, capsys):
    from jobs.scores import main

    out, data = local
    _legacy_output(out, data)
    capsys.readouterr()
    assert main([out, "--run-id", "n1"]) == 0 and capsys.readouterr().out.count("\n") == 5
    assert main([out, "--latest"]) == 0 and capsys.readouterr().out.count("\n") == 9
    assert RunStore(open_location(out)).layout() == "legacy"  # readers never convert
    assert legacy.present(RunStore(open_location(out)))
    assert read_bytes(open_location(out), f"{out}/runs/n1.json")


def test_a_garbage_journal_or_index_of_the_former_layout_does_not_stop_the_next_run(local):
    out, data = local
    made = _legacy_output(out, data)
    Path(out, "_journal.json").write_text("{garbage")
    Path(out, "latest", "scores.parquet").write_bytes(b"PAR1garbage")
    s = run_night(out, data, "night3", made["clips"] + night_clips(data, D2, 2, start=8))
    assert (s["n_skipped"], s["n_scored"]) == (8, 2)
    assert not Path(out, "_journal.json").exists() and len(table(out, "latest")) == 10
