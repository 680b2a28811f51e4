"""A night's report you can act on: unlabelled plant nights scored by the real jobs
(``asd train --model knn``, ``asd score`` on a local Ray cluster, real audio files),
then ``asd report OUT --local DIR``; what it writes is checked against the store."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from asd_core.audio import encode_wav
from asd_core.runstore import RunStore
from asd_core.storage import open_location, write_bytes
from tests.signals import SR, add_clicks, add_tone, harmonic_tone

TYPES = {"press": 200.0, "pump": 330.0}  # machine type -> hum f0 (Hz)
NIGHT_PATTERN = "{date}/{machine_type}/{unit}/{name}.wav"
N1, N2 = "2026-11-24", "2026-11-25"


def _hum(rng, f0: float) -> np.ndarray:
    return 0.3 * harmonic_tone(rng, seconds=2.0, f0=f0 * rng.uniform(0.99, 1.01))


def _night(data, date: str, seed: int, anomalies: dict[str, int], dead: set[str]) -> dict[str, str]:
    """3 normal clips per type (unit u1), ``anomalies[type]`` anomalous ones (unit u2),
    one dead microphone (low level noise) per type in ``dead``; returns path -> what."""
    rng = np.random.default_rng(seed)
    made = {}
    for mt, f0 in TYPES.items():
        clips = [("u1", f"rec_{i}", _hum(rng, f0), "normal") for i in range(3)]
        for i in range(anomalies.get(mt, 0)):
            broken = add_clicks(rng, _hum(rng, f0)) if i % 2 == 0 else add_tone(rng, _hum(rng, f0))
            clips.append(("u2", f"rec_a{i}", broken, "anomaly"))
        if mt in dead:
            clips.append(("u3", "rec_dead", (1e-4 * rng.standard_normal(2 * SR)).astype(np.float32), "dead"))
        for unit, name, x, what in clips:
            rel = f"{date}/{mt}/{unit}/{name}.wav"
            write_bytes(data, f"{data.path}/{rel}", encode_wav(x, SR))
            made[f"{data.path}/{rel}"] = what
    return made


@pytest.fixture(scope="module")
def plant(ray_cluster, tmp_path_factory):
    """Real knn models from ``asd train`` on 10 normal clips per type; night 1 and
    night 2 scored by ``asd score --incremental``, then night 2 again (nothing new)."""
    from jobs import cli

    root = tmp_path_factory.mktemp("plant")
    train = open_location(str(root / "train"))
    rng = np.random.default_rng(0)
    for mt, f0 in TYPES.items():
        for i in range(10):
            write_bytes(train, f"{train.path}/{mt}/rec_{i}.wav", encode_wav(_hum(rng, f0), SR))
    models, out, data = str(root / "models"), str(root / "out"), open_location(str(root / "audio"))
    assert cli.main(["train", train.uri, models, "--model", "knn", "--preset", "tiny",
                     "--pattern", "{machine_type}/{name}.wav"]) == 0
    clips = _night(data, N1, 1, {"press": 1, "pump": 1}, dead={"pump"})
    clips.update(_night(data, N2, 2, {"press": 2}, dead=set()))
    for rid, date in (("n1", N1), ("n2", N2), ("n3", N2)):
        assert cli.main(["score", data.uri, models, out, "--pattern", NIGHT_PATTERN, "--only", f"date={date}",
                         "--incremental", "--run-id", rid]) == 0
    return {"root": root, "out": out, "models": models, "clips": clips, "store": RunStore(open_location(out))}


@pytest.fixture(scope="module")
def reported(plant):
    """``asd report OUT --local DIR`` after night 2 (``--run-id n2``) and by default
    (the latest run, n3, scored nothing new)."""
    from jobs import cli

    made = {}
    for name, args in (("n2", ["--run-id", "n2"]), ("default", [])):
        local = plant["root"] / f"report-{name}"
        assert cli.main(["report", plant["out"], "--local", str(local), *args]) == 0
        made[name] = local
    return made


def _store_alerts(plant, rid: str) -> pd.DataFrame:
    store = plant["store"]
    return store.read_output("alerts", store.record(rid)).to_pandas()


@pytest.mark.ray
@pytest.mark.slow
def test_alerts_csv_is_the_nights_alerts_most_severe_first(plant, reported):
    got = pd.read_csv(reported["n2"] / "alerts.csv")
    want = _store_alerts(plant, "n2")
    assert len(got) == len(want) > 0
    assert sorted(got["path"]) == sorted(want["path"])
    by_path = want.set_index("path")
    for col in ("anomaly_score", "threshold"):
        assert np.allclose(got[col].to_numpy(float), by_path.loc[got["path"], col].to_numpy(float), equal_nan=True)
    anom = got[got["alert_kind"] == "anomaly"]
    assert np.allclose(anom["ratio"], anom["anomaly_score"] / anom["threshold"])
    assert np.allclose(anom["margin"], anom["anomaly_score"] - anom["threshold"])
    assert (anom["margin"] > 0).all() and (np.diff(anom["ratio"].to_numpy()) <= 0).all()  # most severe first
    assert got["rank"].tolist() == list(range(1, len(got) + 1))
    assert set(got["unit"]) <= {"u1", "u2", "u3"} and set(got["date"]) == {N2}  # the template's fields
    # every anomalous clip of the night is an alert
    broken = {p for p, what in plant["clips"].items() if what == "anomaly" and f"/{N2}/" in p}
    assert broken <= set(anom["path"])


@pytest.mark.ray
@pytest.mark.slow
def test_a_dead_microphone_is_a_sensor_alert_after_the_machine_alerts(plant):
    from jobs.report import report

    rep = report(plant["out"], "n1", plots=False)
    alerts = rep["alerts"]
    sensor = alerts[alerts["alert_kind"] == "sensor"]
    assert sensor["error_reason"].tolist() == ["low_level"] and sensor["path"].str.endswith("rec_dead.wav").all()
    assert alerts["alert_kind"].tolist() == sorted(alerts["alert_kind"], key=lambda k: k == "sensor")
    assert "sensor: low_level" in rep["table"]


@pytest.mark.ray
@pytest.mark.slow
def test_trend_counts_alerts_per_type_per_night(plant, reported):
    trend = pd.read_csv(reported["n2"] / "trend.csv")
    assert trend["run_id"].drop_duplicates().tolist() == ["n1", "n2"]  # oldest first; n3 is not reported yet
    assert trend["night"].drop_duplicates().tolist() == [N1, N2]  # the plant's nights: the clips' date field
    for rid in ("n1", "n2"):
        a = _store_alerts(plant, rid)
        for mt in TYPES:
            row = trend[(trend["run_id"] == rid) & (trend["machine_type"] == mt)].iloc[0]
            mine = a[a["machine_type"] == mt]
            assert row["anomaly_alerts"] == (mine["alert_kind"] == "anomaly").sum()
            assert row["sensor_alerts"] == (mine["alert_kind"] == "sensor").sum()
            assert row["n_scored"] == sum(1 for p in plant["clips"] if f"/{_date(rid)}/{mt}/" in p)
    assert trend[(trend["run_id"] == "n1") & (trend["machine_type"] == "pump")]["sensor_alerts"].item() == 1
    table = (reported["n2"] / "table.txt").read_text()
    assert "Alerts per night" in table and "n1" in table and "n2" in table


def _date(rid: str) -> str:
    return {"n1": N1, "n2": N2}[rid]


@pytest.mark.ray
@pytest.mark.slow
def test_the_pngs_are_images_and_the_page_shows_alerts_not_empty_roc_panels(plant, reported):
    from PIL import Image

    local = reported["n2"]
    names = {p.name for p in local.iterdir()}
    assert names == {"index.html", "table.txt", "alerts.csv", "trend.csv", "trend.png", "night_press.png",
                     "night_pump.png"}  # unlabelled: no ROC nor histogram panels
    for name in names - {"index.html", "table.txt", "alerts.csv", "trend.csv"}:
        with Image.open(io.BytesIO((local / name).read_bytes())) as im:
            im.verify()
            assert im.size[0] > 300 and im.size[1] > 200
    page = (local / "index.html").read_text()
    assert 'id="alerts"' in page and "no labelled clips" not in page and "roc_" not in page
    for path in pd.read_csv(local / "alerts.csv")["path"]:
        assert path in page
    assert '<img src="trend.png"' in page and '<img src="night_press.png"' in page


@pytest.mark.ray
@pytest.mark.slow
def test_an_incremental_night_with_nothing_new_reports_the_last_night_that_scored(plant, reported):
    assert plant["store"].record("n3")["n_rows"] == 0 and plant["store"].record("n3")["n_skipped"] > 0
    local = reported["default"]
    head = (local / "table.txt").read_text().splitlines()[0]
    assert "n3 scored nothing new" in head and "run n2" in head
    assert f"clips of {N2}" in (local / "table.txt").read_text().splitlines()[1]
    assert (local / "alerts.csv").read_bytes() == (reported["n2"] / "alerts.csv").read_bytes()
    assert (plant["root"] / "out" / "report" / "n2" / "alerts.csv").exists()  # under OUT, in the run's folder


@pytest.mark.ray
@pytest.mark.slow
def test_the_night_panel_draws_the_training_scores_the_artifact_keeps(plant):
    from asd_core.artifact import read_meta
    from jobs.report import report

    rep = report(plant["out"], "n2", plots=False)
    for mt in TYPES:
        ref = rep["training"][mt]
        meta = read_meta(plant["models"], mt)
        assert ref.source == "quantiles" and len(ref.quantiles) == 101
        assert ref.model_id == meta["model_id"] and ref.threshold == meta["threshold"]
        assert ref.quantiles[50] == pytest.approx(np.median(ref.quantiles))


def test_help_lists_every_file_the_report_writes(capsys):
    from asd_core.reporting import FILES
    from jobs import report

    with pytest.raises(SystemExit):
        report.main(["--help"])
    text = capsys.readouterr().out
    for name in FILES:
        assert name in text, name
    assert text.index("index.html") > text.index("table.txt")


def test_older_artifacts_fall_back_to_the_training_mean_and_std(tmp_path):
    """An artifact saved before the training scores' quantiles were kept: the panel
    draws the mean +- 1 std band and says why; an unreadable one, only the threshold."""
    from asd_core import results
    from asd_core.artifact import read_meta, save_artifact
    from asd_core.config import preset
    from asd_core.detector import train_type
    from asd_core.plots import night_figure
    from asd_core.reporting import training_scores

    cfg = preset("tiny").override({"model.kind": "knn"})
    rng = np.random.default_rng(3)
    trained = train_type([_hum(rng, 200.0) for _ in range(6)], cfg)
    old = {k: v for k, v in trained.summary.items() if k != "train_score_quantiles"}
    models = open_location(str(tmp_path / "models"))
    model_id = save_artifact(models, "press", trained.fitted, cfg, old)
    assert "train_score_quantiles" not in read_meta(models, "press")["summary"]
    rows = results.to_table([{"path": f"/x/{i}.wav", "machine_type": "press", "status": "ok", "anomaly_score": s,
                              "threshold": trained.threshold, "decision": int(s > trained.threshold),
                              "model_id": model_id, "model_kind": "knn", "run_id": "r"}
                             for i, s in enumerate([0.5 * trained.threshold, 2.0 * trained.threshold])]).to_pandas()
    ref = training_scores(rows, {"models_uri": models.uri})["press"]
    assert ref.source == "mean_std" and ref.std == pytest.approx(trained.summary["train_score_std"])
    text = "\n".join(t.get_text() for t in night_figure(rows, "press", ref, "r").texts)
    assert "keeps no training-score quantiles" in text
    gone = training_scores(rows, {"models_uri": str(tmp_path / "elsewhere")})["press"]
    assert gone.source == "threshold" and gone.threshold == pytest.approx(trained.threshold) and gone.problem


def test_the_trend_is_the_reports_model_kind_only(tmp_path):
    """Two model kinds scoring the same nights into one OUT_URI (the demo does): the
    trend of a U-Net run lists the U-Net's nights once each, not every kind's runs."""
    from asd_core.reporting import alert_trend, format_trend
    from tests.test_archives import _publish, _rows

    store = RunStore(open_location(str(tmp_path)))
    for rid, kind, date, n in (("u1", "unet", N1, 2), ("k1", "knn", N1, 2), ("u2", "unet", N2, 3),
                               ("k2", "knn", N2, 3), ("old", None, N2, 1)):
        kinds = {"model_kinds": [kind]} if kind else {}
        _publish(store, rid, _rows(rid, [f"/d/{date}/m/{rid}_{i}.wav" for i in range(n)]), date, split="test",
                 models={"m": f"{kind}-1"}, **kinds)
    runs = store.runs()
    by_id = {m["run_id"]: m for m in runs}
    unet = alert_trend(store, runs, by_id["u2"])
    assert unet["run_id"].tolist() == ["u1", "u2"] and unet["n_scored"].tolist() == [2, 3]
    assert unet["night"].tolist() == [N1, N2]  # one run per night: the night is its date
    assert alert_trend(store, runs, by_id["k2"])["run_id"].tolist() == ["k1", "k2"]
    # a record from before model kinds were kept: every run counts, nights with several runs named by run
    old = alert_trend(store, runs, by_id["old"])
    assert old["run_id"].tolist() == ["u1", "k1", "u2", "k2", "old"]
    assert len(format_trend(unet).splitlines()) == 2 + 2
