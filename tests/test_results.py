"""asd_core.results: schema, ground truth, metrics, submission files, table and plots."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from asd_core import plots, results
from asd_core.metrics import official_score


def _rows(seed: int = 0) -> list[dict]:
    """Labelled rows of two machine types (two sections for one), plus rows that
    must not count: an error, an unlabelled clip and a train clip."""
    rng = np.random.default_rng(seed)
    rows = []
    for mt, sections in (("fan", ("00", "01")), ("ToyDrone", ("00",))):
        for sec in sections:
            for dom in ("source", "target"):
                for lab in ("normal", "anomaly"):
                    for _ in range(5):
                        s = rng.normal(2.0 if lab == "anomaly" else 1.0, 0.6)
                        rows.append(
                            {
                                "path": f"s3://b/{mt}/test/section_{sec}_{dom}_test_{lab}_{len(rows):04d}.wav",
                                "file_name": f"section_{sec}_{dom}_test_{lab}_{len(rows):04d}.wav",
                                "machine_type": mt,
                                "section": sec,
                                "domain": dom,
                                "label": lab,
                                "split": "test",
                                "anomaly_score": float(s),
                                "decision": int(s > 1.5),
                                "threshold": 1.5,
                                "model_id": f"unet-{mt}",
                                "n_tiles": 9,
                                "status": "ok",
                                "run_id": "r1",
                                "scored_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
                            }
                        )
    rows.append({**rows[0], "path": "s3://b/fan/test/bad.wav", "file_name": "bad.wav", "status": "error",
                 "anomaly_score": None, "decision": None, "error_reason": "unreadable", "error": "x"})
    rows.append({**rows[1], "path": "s3://b/fan/test/section_00_0000.wav", "file_name": "section_00_0000.wav",
                 "label": None, "domain": None})
    rows.append({**rows[2], "path": "s3://b/fan/train/t.wav", "file_name": "t.wav", "split": "train"})
    return rows


def test_schema_round_trip():
    t = results.to_table(_rows())
    assert t.schema == results.SCORE_SCHEMA
    assert results.conform(t.select(["path", "status"])).schema == results.SCORE_SCHEMA
    assert results.conform(t.cast(t.schema)).equals(t)


def test_metrics_by_hand_and_against_sklearn():
    df = results.to_table(_rows()).to_pandas()
    sections, off = results.compute_metrics(df)
    assert [(m.machine_type, m.section) for m in sections] == [("ToyDrone", "00"), ("fan", "00"), ("fan", "01")]
    ev = df[(df["status"] == "ok") & df["label"].notna()]
    for m in sections:
        g = ev[(ev["machine_type"] == m.machine_type) & (ev["section"] == m.section)]
        y = (g["label"] == "anomaly").astype(int).to_numpy()
        s = g["anomaly_score"].to_numpy()
        for dom in ("source", "target"):
            sel = ((g["domain"] == dom) | (y == 1)).to_numpy()
            assert getattr(m, f"auc_{dom}") == pytest.approx(roc_auc_score(y[sel], s[sel]))
        assert m.pauc == pytest.approx(roc_auc_score(y, s, max_fpr=0.1))
    assert off == pytest.approx(official_score(sections))
    # the train clip counts too when it is labelled and ok (section 00 of fan: 20 + 1 + 0)
    assert sections[1].n_clips == 21 and sections[0].n_clips == 20


def test_metrics_one_case_by_hand():
    rows = []
    for i, (dom, lab, s, d) in enumerate(
        [("source", "normal", 0.1, 0), ("source", "normal", 0.4, 1), ("target", "normal", 0.35, 0),
         ("source", "anomaly", 0.8, 1), ("target", "anomaly", 0.3, 0)]
    ):
        rows.append({"path": f"p{i}", "file_name": f"f{i}", "machine_type": "m", "section": "00", "domain": dom,
                     "label": lab, "split": "test", "anomaly_score": s, "decision": d, "status": "ok", "run_id": "r"})
    (m,), _ = results.compute_metrics(results.to_table(rows).to_pandas())
    # source: normals 0.1, 0.4 vs anomalies 0.8, 0.3 -> pairs won: (0.8>0.1, 0.8>0.4, 0.3>0.1) = 3/4
    assert m.auc_source == pytest.approx(0.75)
    # target: normal 0.35 vs anomalies 0.8, 0.3 -> 1/2
    assert m.auc_target == pytest.approx(0.5)
    # source decisions: tp = 1 (0.8), fp = 1 (0.4), fn = 0 -> precision 0.5, recall 1
    assert (m.precision_source, m.recall_source) == (pytest.approx(0.5), pytest.approx(1.0))
    assert m.f1_source == pytest.approx(2 / 3)


def test_ground_truth_official_format(tmp_path):
    gt_dir = tmp_path / "gt"
    (gt_dir / "ground_truth_data").mkdir(parents=True)
    (gt_dir / "ground_truth_domain").mkdir()
    (gt_dir / "ground_truth_data" / "ground_truth_Toy_Nscale_section_00_test.csv").write_text(
        "section_00_0000.wav,0\nsection_00_0001.wav,1\n"
    )
    (gt_dir / "ground_truth_domain" / "ground_truth_Toy_Nscale_section_00_test.csv").write_text(
        "section_00_0000.wav,1\nsection_00_0001.wav,0\n"
    )
    gt = results.read_ground_truth([str(gt_dir)])
    assert gt.labels == {("Toy_Nscale", "00", "section_00_0000.wav"): "normal",
                         ("Toy_Nscale", "00", "section_00_0001.wav"): "anomaly"}
    assert gt.domains[("Toy_Nscale", "00", "section_00_0000.wav")] == "target"
    df = pd.DataFrame({"machine_type": ["Toy_Nscale"] * 3, "section": ["00"] * 3,
                       "file_name": ["section_00_0000.wav", "section_00_0001.wav", "section_00_0002.wav"],
                       "label": [None, None, None], "domain": [None, None, None]})
    out = results.apply_ground_truth(df, gt)
    assert out["label"][:2].tolist() == ["normal", "anomaly"] and pd.isna(out["label"][2])
    assert out["domain"][:2].tolist() == ["target", "source"] and pd.isna(out["domain"][2])
    with pytest.raises(ValueError, match="ground_truth_<machine>"):
        results.parse_ground_truth_name("labels.csv")
    with pytest.raises(ValueError, match="file_name,0"):
        results.parse_ground_truth("a.wav,normal\n", "ground_truth_x_section_00_test.csv")


def test_submission_files_format():
    df = results.to_table(_rows()).to_pandas()
    files = results.submission_files(df)
    assert sorted(files) == sorted(
        f"{k}_{mt}_section_{s}_test.csv"
        for k in ("anomaly_score", "decision_result")
        for mt, s in (("fan", "00"), ("fan", "01"), ("ToyDrone", "00"))
    )
    lines = files["anomaly_score_fan_section_00_test.csv"].strip().split("\n")
    names = [line.split(",")[0] for line in lines]
    # every test file of the section (labelled or not, error rows too), sorted, no header, no train rows
    assert len(lines) == 22 and names == sorted(names) and "section_00_0000.wav" in names
    assert "bad.wav" in names and "t.wav" not in names
    assert all(len(line.split(",")) == 2 for line in lines)
    dec = files["decision_result_fan_section_00_test.csv"].strip().split("\n")
    assert {line.split(",")[1] for line in dec} <= {"0", "1"}


def test_submission_files_write_error_clips_as_anomalous(caplog):
    """The official evaluator refuses a section with a missing test file: an error clip
    gets the section's highest score and decision 1, with a warning."""
    df = results.to_table(_rows()).to_pandas()
    ok = df[(df["machine_type"] == "fan") & (df["section"] == "00") & (df["status"] == "ok") & (df["split"] == "test")]
    with caplog.at_level("WARNING", logger="asd_core.results"):
        files = results.submission_files(df)
    scores = dict(line.split(",") for line in files["anomaly_score_fan_section_00_test.csv"].strip().split("\n"))
    decisions = dict(line.split(",") for line in files["decision_result_fan_section_00_test.csv"].strip().split("\n"))
    assert float(scores["bad.wav"]) == pytest.approx(ok["anomaly_score"].max()) and decisions["bad.wav"] == "1"
    assert "1 error clip(s)" in caplog.text
    # a section whose clips all failed is still written (score 0.0, decision 1)
    bad = df[df["machine_type"] == "ToyDrone"].assign(status="error", anomaly_score=np.nan, decision=pd.NA)
    one = results.submission_files(bad)
    assert set(one["anomaly_score_ToyDrone_section_00_test.csv"].strip().split("\n")) == {
        f"{n},0.0" for n in bad["file_name"]
    }


def test_table_and_plots():
    df = results.to_table(_rows()).to_pandas()
    sections, off = results.compute_metrics(df)
    text = results.format_table(sections, off)
    label, head = text.split("\n")[:2]
    assert label == "Model kind: unet"  # every table says whose it is
    assert head.split("|")[0].strip() == "Machine" and "AUC(source)" in head and "pAUC" in head
    assert f"Official score of unet (harmonic mean of AUC(source), AUC(target), pAUC): {100 * off:.2f}" in text
    assert "ToyDrone" in text
    for fn in (plots.plot_roc, plots.plot_histogram):
        png = fn(df, "fan")
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_incremental_helpers():
    assert results.is_final("ok", None)
    assert results.is_final("error", "unreadable") and results.is_final("error", "no_model")
    assert not results.is_final("error", "read_failed")


def test_sensor_reasons_are_error_reasons_of_a_dead_microphone():
    assert results.SENSOR_REASONS == {"silent", "unreadable", "low_level"}
    # every sensor reason but the one another branch adds is a documented error reason
    assert results.SENSOR_REASONS - {"low_level"} <= set(results.ERROR_REASONS)
    assert not results.SENSOR_REASONS & results.TRANSIENT_REASONS  # final: never retried by --incremental
