"""The scoring job end to end: a local Ray cluster, the moto S3 server, tiny models.

One archive in the DCASE layout (two machine types with models, one without) plus
every kind of bad input; the runs build on each other (night 1, an incremental
re-run, new clips), so the module shares one output location.
"""

from __future__ import annotations

import io
import re
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest

from asd_core import results
from asd_core.artifact import save_artifact
from asd_core.audio import decode, encode_wav
from asd_core.config import preset
from asd_core.dcase import ClipName
from asd_core.detector import Scorer, train_type
from asd_core.metrics import official_score, section_metrics
from asd_core.runstore import RunStore
from asd_core.storage import ensure_bucket, open_location, pyarrow_filesystem, read_bytes, write_bytes
from tests.signals import ANOMALIES, SR, harmonic_tone


def e2e(fn):
    """Marks of the tests that run the job on Ray against the S3 server."""
    return pytest.mark.ray(pytest.mark.s3(pytest.mark.slow(fn)))


TYPES = {"fan": 200.0, "ToyTank": 330.0}  # machine type -> hum f0 (Hz)
K = 8  # masks per tile in these runs


def _tone(rng, f0, seconds=3.0):
    return harmonic_tone(rng, seconds=seconds, f0=f0 * rng.uniform(0.98, 1.02))


@pytest.fixture(scope="module")
def bucket(s3_endpoint):
    uri = f"s3://score-{uuid.uuid4().hex[:10]}"
    ensure_bucket(open_location(uri, s3_endpoint))
    return uri


CFG = preset("tiny").override({"epochs": 2})


@pytest.fixture(scope="module")
def trained():
    """Tiny models for ``fan`` and ``ToyTank`` (no Ray, no storage: a few seconds)."""
    out = {}
    for i, (mt, f0) in enumerate(TYPES.items()):
        rng = np.random.default_rng(100 + i)
        out[mt] = train_type([_tone(rng, f0) for _ in range(10)], CFG)
    return out


def _save(loc, trained):
    for mt, t in trained.items():
        save_artifact(loc, mt, t.fitted, CFG)
    return loc.uri


@pytest.fixture(scope="module")
def models_uri(bucket, s3_endpoint, trained):
    return _save(open_location(f"{bucket}/models", s3_endpoint), trained)


@pytest.fixture(scope="module")
def local_models(tmp_path_factory, trained):
    return _save(open_location(str(tmp_path_factory.mktemp("models"))), trained)


def _test_clips(mt: str, f0: float, seed: int, start: int = 0) -> dict[str, bytes]:
    """8 labelled test clips: {source, target} x {normal, anomaly} x 2."""
    rng = np.random.default_rng(seed)
    out = {}
    idx = start
    for domain in ("source", "target"):
        for label in ("normal", "anomaly"):
            for _ in range(2):
                x = _tone(rng, f0)
                if label == "anomaly":
                    x = ANOMALIES[idx % len(ANOMALIES)](rng, x)
                name = ClipName(mt, "00", idx, "test", domain, label, attributes="a_1").relpath()
                out[name] = encode_wav(x, SR)
                idx += 1
    return out


# relpath -> expected error reason
BAD = {
    "fan/test/section_00_source_test_normal_0100_a_1.wav": "empty",
    "fan/test/section_00_source_test_normal_0101_a_1.wav": "unreadable",  # truncated WAV
    "fan/test/section_00_source_test_normal_0102_a_1.wav": "unreadable",  # random bytes
    "fan/test/section_00_source_test_normal_0103_a_1.wav": "too_short",  # 0.3 s
    "fan/test/recording_153012.wav": "bad_name",
    "bandsaw/test/section_00_source_test_normal_0000_a_1.wav": "no_model",
}


def _bad_clips() -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    good = encode_wav(harmonic_tone(rng, 3.0), SR)
    blobs = [
        b"",
        good[: len(good) // 3],
        rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        encode_wav(harmonic_tone(rng, 0.3), SR),
        good,
        good,
    ]
    return dict(zip(BAD, blobs, strict=True))


@pytest.fixture(scope="module")
def archive(bucket, s3_endpoint):
    loc = open_location(f"{bucket}/data", s3_endpoint)
    clips = {}
    for i, (mt, f0) in enumerate(TYPES.items()):
        clips.update(_test_clips(mt, f0, seed=i))
    clips.update(_bad_clips())
    for rel, data in clips.items():
        write_bytes(loc, f"{loc.path}/{rel}", data)
    return loc.uri, clips


@pytest.fixture(scope="module")
def out_uri(bucket):
    return f"{bucket}/out"


@pytest.fixture(scope="module")
def night1(ray_cluster, archive, models_uri, out_uri, s3_endpoint):
    from jobs.score import run_scoring

    return run_scoring(archive[0], models_uri, out_uri, n_masks=K, run_id="night1", batch_size=4,
                       endpoint_url=s3_endpoint)


def _scores(out_uri, endpoint):
    out = open_location(out_uri, endpoint)
    return pq.read_table(f"{out.path}/scores", filesystem=pyarrow_filesystem(out))


@e2e
def test_every_clip_one_row_with_errors_explained(night1, archive, out_uri, s3_endpoint):
    data_uri, clips = archive
    table = _scores(out_uri, s3_endpoint)
    assert table.num_rows == len(clips) == night1["n_listed"] == night1["n_scored"]
    df = table.to_pandas()
    assert sorted(df["path"]) == sorted(f"{data_uri}/{rel}" for rel in clips)
    assert set(df["run_id"]) == {"night1"}
    by_path = df.set_index("path")
    for rel, reason in BAD.items():
        row = by_path.loc[f"{data_uri}/{rel}"]
        assert row["status"] == "error" and row["error_reason"] == reason, (rel, row["error"])
        assert row["error"] and np.isnan(row["anomaly_score"])
    ok = df[df["status"] == "ok"]
    assert len(ok) == 16 and ok["anomaly_score"].notna().all()
    assert set(ok["decision"]) <= {0, 1} and (ok["n_tiles"] == 2).all()
    assert set(ok["model_id"].str.slice(0, 5)) == {"unet-"}
    assert night1["n_error"] == len(BAD) and night1["errors_by_reason"]["unreadable"] == 2
    # the manifest publishes the run
    out = open_location(out_uri, s3_endpoint)
    store = RunStore(out)
    record = store.record("night1")
    assert record["scores_path"] == store.run_dir("night1", record["date"])
    assert record["n_rows"] == len(clips) and record["n_error"] == len(BAD)
    assert record["summary"]["n_scored"] == len(clips)
    assert not out.fs.exists(f"{out.path}/_staging/night1") and not out.fs.exists(f"{out.path}/_journal.json")
    # the index holds every clip once, equal to the run's rows
    latest = store.latest().to_pandas().set_index("path").sort_index()
    assert sorted(latest.index) == sorted(table.to_pandas()["path"])
    assert (latest["run_id"] == "night1").all()


@e2e
def test_scores_equal_scorer_on_the_same_clip(night1, archive, models_uri, out_uri, s3_endpoint):
    """Batch independence: the pipeline's score is Scorer.score_wav's on the clip alone."""
    data_uri, clips = archive
    scorer = Scorer.from_location(open_location(models_uri, s3_endpoint), list(TYPES), n_masks=K)
    df = _scores(out_uri, s3_endpoint).to_pandas().set_index("path")
    checked = 0
    for rel, data in clips.items():
        row = df.loc[f"{data_uri}/{rel}"]
        if row["status"] != "ok":
            continue
        want = scorer.score_wav(row["machine_type"], decode(data, SR, 1.1))
        assert row["anomaly_score"] == pytest.approx(want.score, rel=1e-5)
        assert row["decision"] == want.decision and row["model_id"] == want.model_id
        checked += 1
    assert checked == 16


@e2e
def test_metrics_match_asd_core_metrics(night1, out_uri, s3_endpoint):
    out = open_location(out_uri, s3_endpoint)
    df = _scores(out_uri, s3_endpoint).to_pandas()
    want = []
    for mt in sorted(TYPES):
        g = df[(df["machine_type"] == mt) & (df["status"] == "ok")]
        want.append(section_metrics(mt, "00", (g["label"] == "anomaly").astype(int), g["anomaly_score"],
                                    g["domain"], g["decision"].astype(int)))
    store = RunStore(out)
    got = results.sections_from_table(store.read_output("metrics", store.record("night1")))
    assert [(m.machine_type, m.section) for m in got] == [(m.machine_type, m.section) for m in want]
    for g, w in zip(got, want, strict=True):
        assert g.model_kind == "unet"
        for k, v in w.to_dict().items():
            if k != "model_kind":
                assert getattr(g, k) == (pytest.approx(v) if isinstance(v, float) else v), k
    assert night1["official_score"] == pytest.approx(official_score(want))
    # the anomalies are built to be seen: a working pipeline ranks them higher
    assert all(m.auc_source > 0.6 for m in got)


@e2e
def test_submission_files_official_format(night1, out_uri, s3_endpoint):
    out = open_location(out_uri, s3_endpoint)
    sub = f"{out.path}/submission/night1"
    names = sorted(p.rsplit("/", 1)[-1] for p in out.fs.ls(sub, detail=False))
    # every test clip with a section is written (the evaluator refuses a section with a
    # missing file), so bandsaw, whose only clip has no model, gets its files too
    assert names == sorted(f"{kind}_{mt}_section_00_test.csv" for mt in [*TYPES, "bandsaw"]
                           for kind in ("anomaly_score", "decision_result"))
    df = _scores(out_uri, s3_endpoint).to_pandas()
    for mt in TYPES:
        rows_of = df[(df["machine_type"] == mt) & df["section"].notna()].set_index("file_name")
        ok = rows_of[rows_of["status"] == "ok"]
        for kind in ("anomaly_score", "decision_result"):
            text = read_bytes(out, f"{sub}/{kind}_{mt}_section_00_test.csv").decode()
            rows = [line.split(",") for line in text.strip().split("\n")]
            assert all(len(r) == 2 for r in rows)
            assert sorted(r[0] for r in rows) == sorted(rows_of.index)  # all test files, no header
            for name, value in rows:
                if name not in ok.index:  # error clip: the section's top score, flagged
                    assert float(value) == pytest.approx(ok["anomaly_score"].max()) if kind == "anomaly_score" \
                        else int(value) == 1
                elif kind == "anomaly_score":
                    assert float(value) == pytest.approx(ok.loc[name, "anomaly_score"])
                else:
                    assert int(value) == ok.loc[name, "decision"]


@e2e
def test_parquet_readable_by_duckdb(night1, out_uri, s3_endpoint, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    out = open_location(out_uri, s3_endpoint)
    for p in out.fs.find(RunStore(out).record("night1")["scores_path"]):
        if p.endswith(".parquet"):
            (tmp_path / p.rsplit("/", 1)[-1]).write_bytes(read_bytes(out, p))
    con = duckdb.connect()
    n_err, n = con.execute(
        f"select count(*) filter (where status = 'error'), count(*) from read_parquet('{tmp_path}/*.parquet')"
    ).fetchone()
    assert (n_err, n) == (len(BAD), night1["n_listed"])


@e2e
def test_incremental_rerun_adds_nothing_then_scores_only_new(night1, archive, models_uri, out_uri, s3_endpoint):
    from jobs.score import run_scoring

    data_uri, clips = archive
    again = run_scoring(data_uri, models_uri, out_uri, n_masks=K, run_id="night2", incremental=True,
                        endpoint_url=s3_endpoint)
    assert again["n_scored"] == 0 and again["n_skipped"] == len(clips)
    assert _scores(out_uri, s3_endpoint).num_rows == len(clips)  # no duplicates
    assert again["official_score"] == pytest.approx(night1["official_score"])

    new = _test_clips("fan", TYPES["fan"], seed=11, start=20)
    loc = open_location(data_uri, s3_endpoint)
    for rel, data in new.items():
        write_bytes(loc, f"{loc.path}/{rel}", data)
    third = run_scoring(data_uri, models_uri, out_uri, n_masks=K, run_id="night3", incremental=True,
                        endpoint_url=s3_endpoint)
    assert third["n_scored"] == len(new) and third["n_skipped"] == len(clips) and third["n_error"] == 0
    df = _scores(out_uri, s3_endpoint).to_pandas()
    assert len(df) == len(clips) + len(new) and df["path"].is_unique
    assert set(df[df["run_id"] == "night3"]["path"]) == {f"{data_uri}/{rel}" for rel in new}
    fan = next(s for s in third["sections"] if s["machine_type"] == "fan")
    assert fan["n_clips"] == 8 + len(new)  # metrics over every listed clip, not only the new ones


@pytest.fixture(scope="module")
def eval_archive(bucket, s3_endpoint):
    """Unlabelled evaluation names plus the official ground-truth CSVs."""
    rng = np.random.default_rng(21)
    data = open_location(f"{bucket}/eval", s3_endpoint)
    labels, domains = io.StringIO(), io.StringIO()
    for i in range(8):
        anomaly, target = i % 2, (i // 2) % 2
        x = _tone(rng, TYPES["fan"])
        if anomaly:
            x = ANOMALIES[i % 3](rng, x)
        name = ClipName("fan", "00", i, "test").filename
        write_bytes(data, f"{data.path}/fan/test/{name}", encode_wav(x, SR))
        labels.write(f"{name},{anomaly}\n")
        domains.write(f"{name},{target}\n")
    gt = open_location(f"{bucket}/gt", s3_endpoint)
    write_bytes(gt, f"{gt.path}/ground_truth_data/ground_truth_fan_section_00_test.csv", labels.getvalue().encode())
    write_bytes(gt, f"{gt.path}/ground_truth_domain/ground_truth_fan_section_00_test.csv", domains.getvalue().encode())
    return data.uri, gt.uri


@e2e
def test_cli_with_ground_truth_and_report(ray_cluster, eval_archive, models_uri, s3_endpoint, tmp_path, capsys):
    from jobs import cli

    data_uri, gt_uri = eval_archive
    out = tmp_path / "out"
    rc = cli.main(["score", data_uri, models_uri, str(out), "--masks", str(K), "--run-id", "eval1",
                   "--endpoint-url", s3_endpoint, "--ground-truth", gt_uri, "--max-error-rate", "0"])
    assert rc == 0
    assert "8 scored (8 ok, 0 errors)" in capsys.readouterr().out
    scores = pq.read_table(out / "scores").to_pandas().sort_values("file_name")
    # the names carry no label or domain: the rows take them from the CSVs
    assert scores["label"].tolist() == ["normal", "anomaly"] * 4
    assert scores["domain"].tolist() == ["source", "source", "target", "target"] * 2
    from deltalake import DeltaTable

    metrics = DeltaTable(str(out / "metrics")).to_pyarrow_table().to_pandas()
    assert metrics["n_clips"].tolist() == [8] and metrics["auc_target"].notna().all()
    assert (out / "submission" / "eval1" / "anomaly_score_fan_section_00_test.csv").exists()
    # Delta readers: metrics is one schema; the latest table keeps integer columns with nullable types
    import pandas as pd
    import pyarrow as pa

    latest = DeltaTable(str(out / "latest")).to_pyarrow_table().to_pandas(types_mapper={pa.int8(): pd.Int8Dtype()}.get)
    assert str(latest["decision"].dtype) == "Int8" and len(latest) == 8

    rc = cli.main(["report", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "AUC(source)" in text and "Official score" in text and "fan" in text
    for png in ("roc_fan.png", "hist_fan.png"):
        assert (out / "report" / "eval1" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- model kinds
@pytest.fixture(scope="module")
def knn_trained():
    cfg = preset("tiny", {"kind": "knn"})
    return {mt: train_type([_tone(np.random.default_rng(200 + i), f0) for _ in range(10)], cfg)
            for i, (mt, f0) in enumerate(TYPES.items())}


@e2e
def test_two_kinds_under_one_models_uri_one_row_per_clip(archive, trained, knn_trained, bucket, s3_endpoint):
    """fan has a U-Net and ToyTank a knn model under the same models URI: every clip gets
    one row, scored by its own type's kind, and the metrics say which kind they are."""
    from jobs.score import run_scoring

    loc = open_location(f"{bucket}/mixed-models", s3_endpoint)
    save_artifact(loc, "fan", trained["fan"].fitted, CFG)
    save_artifact(loc, "ToyTank", knn_trained["ToyTank"].fitted, knn_trained["ToyTank"].config)
    out_uri = f"{bucket}/out-mixed"
    summary = run_scoring(archive[0], loc.uri, out_uri, n_masks=K, run_id="mixed", endpoint_url=s3_endpoint)
    df = _scores(out_uri, s3_endpoint).to_pandas()
    assert len(df) == summary["n_listed"] >= len(archive[1]) and df["path"].is_unique
    ok = df[df["status"] == "ok"]
    assert set(ok.loc[ok["machine_type"] == "fan", "model_kind"]) == {"unet"}
    assert set(ok.loc[ok["machine_type"] == "ToyTank", "model_kind"]) == {"knn"}
    assert ok.loc[ok["machine_type"] == "ToyTank", "model_id"].str.startswith("knn-").all()
    assert {(m["machine_type"], m["model_kind"]) for m in summary["sections"]} == {("fan", "unet"), ("ToyTank", "knn")}


@e2e
def test_report_puts_two_kinds_side_by_side(archive, models_uri, knn_trained, bucket, s3_endpoint):
    """A U-Net run and a knn run published into one OUT_URI: the report prints every
    kind's AUCs per machine type next to each other, with each kind's official score."""
    from jobs.report import report
    from jobs.score import run_scoring

    knn_loc = open_location(f"{bucket}/knn-models", s3_endpoint)
    for mt, t in knn_trained.items():
        save_artifact(knn_loc, mt, t.fitted, t.config)
    out_uri = f"{bucket}/out-kinds"
    run_scoring(archive[0], models_uri, out_uri, n_masks=K, run_id="unet-night", endpoint_url=s3_endpoint)
    run_scoring(archive[0], knn_loc.uri, out_uri, run_id="knn-night", endpoint_url=s3_endpoint)
    rep = report(out_uri, endpoint_url=s3_endpoint)
    text = rep["table"]
    assert "Model kinds side by side" in text
    head = next(line for line in text.splitlines() if line.startswith("Machine") and "knn AUC(s)" in line)
    assert "unet AUC(s)" in head and "knn pAUC" in head
    rows = {line.split("|")[0].strip(): line for line in text.splitlines()}
    assert "fan" in rows and "ToyTank" in rows and "official score" in rows
    assert rows["fan"].count("|") == head.count("|")  # a value or '-' under every kind
    roc = [f for f in rep["files"] if f.endswith("roc_fan.png")]
    assert roc and read_bytes(open_location(out_uri, s3_endpoint), roc[0][len("s3://"):])[:4] == b"\x89PNG"


# ---------------------------------------------------------------- the stages without Ray
def _local_archive(root, clips: dict[str, bytes]) -> str:
    loc = open_location(str(root))
    for rel, data in clips.items():
        write_bytes(loc, f"{loc.path}/{rel}", data)
    return loc.uri


def test_stages_without_ray_error_rows_and_batch_independence(tmp_path, local_models):
    """fetch_decode + ScoreActor called directly: every row comes out, bad ones with
    their reason, and a clip's score does not depend on its batch-mates."""
    import pyarrow as pa

    from asd_core.catalog import list_archive
    from asd_core.pipeline import ScoreActor, clip_items, fetch_decode, model_index

    clips = {**_test_clips("fan", TYPES["fan"], seed=3), **_test_clips("ToyTank", TYPES["ToyTank"], seed=4),
             **_bad_clips()}
    data = open_location(_local_archive(tmp_path / "data", clips))
    models_loc = open_location(local_models)
    models = model_index(models_loc)
    items = clip_items(list_archive(data), data, models, "r1")
    gone = f"{data.path}/fan/test/section_00_source_test_normal_0104_a_1.wav"  # listed, then deleted
    items.append({**items[0], "path": gone, "file_name": gone.rsplit("/", 1)[-1]})
    decoded = fetch_decode(results.to_table(items), data_uri=data.uri, endpoint_url=None, models=models)
    assert decoded.num_rows == len(items)
    assert decoded.column("path").to_pylist() == [i["path"] for i in items]
    actor = ScoreActor(models_uri=models_loc.uri, machine_types=list(TYPES), n_masks=K)
    batch = actor(decoded)
    assert batch.schema == results.SCORE_SCHEMA
    rows = {r["path"]: r for r in batch.to_pylist()}
    assert rows[gone]["error_reason"] == "read_failed"
    for rel, reason in BAD.items():
        assert rows[f"{data.path}/{rel}"]["error_reason"] == reason
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 16
    # the same clips one at a time
    for i in range(0, decoded.num_rows, 5):
        alone = actor(decoded.slice(i, 1)).to_pylist()[0]
        together = rows[alone["path"]]
        assert alone["status"] == together["status"]
        if alone["status"] == "ok":
            assert alone["anomaly_score"] == pytest.approx(together["anomaly_score"], rel=1e-5)
    assert pa.Table.from_pylist(list(rows.values())).num_rows == len(items)


def test_the_decode_stage_carries_each_clips_envelope_and_a_missing_one_is_an_error_row(tmp_path, local_models):
    """The default rule reads the waveform's envelope spectrum, which the decode stage
    computes beside the tiles: scores through the two stages equal the Scorer's on the
    same bytes, and a row that lost its vector on the way is an error row, not a crash
    and not a score made without it."""
    import pyarrow as pa

    from asd_core.catalog import list_archive
    from asd_core.pipeline import ScoreActor, clip_items, fetch_decode, model_index

    assert CFG.score.rule == "knn_err_stats_env"
    clips = _test_clips("fan", TYPES["fan"], seed=5)
    data = open_location(_local_archive(tmp_path / "data", clips))
    models = model_index(open_location(local_models))
    decoded = fetch_decode(results.to_table(clip_items(list_archive(data), data, models, "r1")), data_uri=data.uri,
                           endpoint_url=None, models=models)
    vectors = decoded.column("vector").to_pylist()
    assert all(v is not None and len(v) == 128 * 8 for v in vectors)  # 128 float64 per clip
    actor = ScoreActor(models_uri=local_models, machine_types=["fan"], n_masks=K)
    rows = actor(decoded).to_pylist()
    scorer = Scorer.from_location(open_location(local_models), ["fan"], n_masks=K)
    for r in rows:
        assert r["status"] == "ok", r
        rel = r["path"].split(data.path + "/", 1)[1]
        assert r["anomaly_score"] == pytest.approx(scorer.score_bytes("fan", clips[rel]).score, rel=1e-5)
    lost = decoded.set_column(decoded.schema.get_field_index("vector"), "vector",
                              pa.array([None] + vectors[1:], type=pa.large_binary()))
    again = actor(lost).to_pylist()
    assert (again[0]["status"], again[0]["error_reason"]) == ("error", "score_failed")
    assert [r["anomaly_score"] for r in again[1:]] == pytest.approx([r["anomaly_score"] for r in rows[1:]], rel=1e-5)


@e2e
def test_progress_lines_in_a_log(archive, models_uri, bucket, s3_endpoint, caplog, monkeypatch):
    """Not a terminal: the run logs status lines with clips done, rate and the total."""
    from jobs.score import run_scoring

    monkeypatch.setenv("ASD_PROGRESS_INTERVAL", "0")
    with caplog.at_level("INFO", logger="jobs.score"):
        s = run_scoring(archive[0], models_uri, f"{bucket}/out-progress", n_masks=K, batch_size=4,
                        endpoint_url=s3_endpoint)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("scoring: ")]
    assert len(lines) >= 2, lines
    done = [int(re.match(r"scoring: (\d+)/(\d+) clips", x)[1]) for x in lines]
    assert done == sorted(done) and done[-1] == s["n_scored"]
    assert all(f"/{s['n_scored']} clips" in x and "clips/s" in x for x in lines)
