"""Model versions: every training keeps its own folder, ``current.json`` names the one
scoring uses, ``asd models`` lists and moves it; artifacts of the first layout still load.

The knn kind trains in about a second, so every version here is a real trained model.
"""

from __future__ import annotations

import json
import shutil
import uuid

import numpy as np
import pytest

from asd_core.artifact import (
    ArtifactError,
    artifact_dir,
    list_artifacts,
    list_versions,
    load_artifact,
    read_meta,
    save_artifact,
    set_current,
)
from asd_core.audio import encode_wav
from asd_core.config import preset
from asd_core.dcase import ClipName
from asd_core.detector import Scorer, train_type
from asd_core.runstore import RunStore
from asd_core.storage import ensure_bucket, open_location, write_bytes
from asd_core.trainrun import read_record
from jobs.cli import main as asd
from tests.signals import SR, harmonic_tone

CFG = preset("tiny").override({"model.kind": "knn"})


def _wavs(seed: int, f0: float = 200.0, n: int = 6) -> list[np.ndarray]:
    return [harmonic_tone(np.random.default_rng(seed + i), seconds=2.5, f0=f0) for i in range(n)]


@pytest.fixture(scope="module")
def two_models():
    """Two knn models of one type trained on different clips: two different versions."""
    return train_type(_wavs(0), CFG), train_type(_wavs(100, f0=230.0), CFG)


def _train_twice(root: str, two_models, summary: dict | None = None) -> tuple[str, str]:
    first = save_artifact(root, "fan", two_models[0].fitted, CFG, {"run_id": "r1", **(summary or {})})
    second = save_artifact(root, "fan", two_models[1].fitted, CFG, {"run_id": "r2"})
    assert first != second
    return first, second


def test_retraining_keeps_every_version_and_the_newest_is_current(tmp_path, two_models, capsys):
    root = str(tmp_path / "models")
    first, second = _train_twice(root, two_models, {"n_clips": 6, "epochs": 0})
    # both versions on disk, the pointer written last names the newest
    assert (tmp_path / "models" / "fan" / first / "weights.pt").is_file()
    assert (tmp_path / "models" / "fan" / second / "artifact.json").is_file()
    assert json.loads((tmp_path / "models" / "fan" / "current.json").read_text())["model_id"] == second
    assert list_artifacts(root) == ["fan"]
    assert read_meta(root, "fan")["model_id"] == second == load_artifact(root, "fan").model_id
    assert load_artifact(root, "fan", model_id=first).model_id == first  # any version by id
    assert read_meta(root, "fan", model_id=first)["model_id"] == first

    versions = list_versions(root, "fan")
    assert [v["model_id"] for v in versions] == [first, second]  # oldest first
    assert [v["current"] for v in versions] == [False, True]
    assert versions[0]["run_id"] == "r1" and versions[0]["n_clips"] == 6 and versions[0]["kind"] == "knn"
    assert versions[0]["threshold"] == pytest.approx(two_models[0].threshold)

    assert asd(["models", root]) == 0
    out = capsys.readouterr().out
    lines = {line.split("|")[2].strip(): line for line in out.splitlines() if line.startswith("fan")}
    assert set(lines) == {first, second}
    assert lines[second].split("|")[1].strip() == "*" and lines[first].split("|")[1].strip() == ""
    assert asd(["models", root, "--type", "fan", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["model_id"], r["current"]) for r in rows] == [(first, False), (second, True)]


def test_set_current_rolls_back_and_forward(tmp_path, two_models, capsys):
    root = str(tmp_path / "models")
    first, second = _train_twice(root, two_models)
    assert asd(["models", root, "--set-current", "fan", first]) == 0
    assert f"was {second}" in capsys.readouterr().out
    assert read_meta(root, "fan")["model_id"] == first
    art = load_artifact(root, "fan")
    assert art.model_id == first
    # the loaded model is the first one, not just its label: it scores as the first model does
    clip = _wavs(500, f0=215.0, n=1)[0]
    rolled = Scorer({"fan": art}).score_wav("fan", clip).score
    assert rolled == pytest.approx(Scorer({"fan": two_models[0].artifact("fan")}).score_wav("fan", clip).score)
    assert rolled != pytest.approx(Scorer({"fan": two_models[1].artifact("fan")}).score_wav("fan", clip).score)
    assert set_current(root, "fan", second) == first  # forward again
    assert load_artifact(root, "fan").model_id == second
    # an unknown version is refused with the folder it looked in; the pointer stays
    assert asd(["models", root, "--set-current", "fan", "knn-000000000000"]) == 2
    err = capsys.readouterr().err
    assert "knn-000000000000" in err and f"{root}/fan" in err
    assert read_meta(root, "fan")["model_id"] == second


def test_a_save_that_stops_before_the_pointer_leaves_the_old_version_current(tmp_path, two_models):
    """What a crash between the version's files and current.json leaves: a complete
    version folder nobody points at. Scoring keeps using the previous version."""
    root, other = tmp_path / "models", tmp_path / "elsewhere"
    first = save_artifact(str(root), "fan", two_models[0].fitted, CFG)
    second = save_artifact(str(other), "fan", two_models[1].fitted, CFG)
    shutil.copytree(other / "fan" / second, root / "fan" / second)  # files written, pointer not
    assert read_meta(str(root), "fan")["model_id"] == first
    assert [(v["model_id"], v["current"]) for v in list_versions(str(root), "fan")] == [(first, True), (second, False)]


def test_first_layout_artifact_still_loads_and_becomes_a_version(tmp_path, two_models, capsys):
    """An artifact written before versions existed (files directly under <type>/) is the
    type's model until a new version is saved beside it; then it can be rolled back to."""
    root = tmp_path / "models"
    old = save_artifact(str(root), "fan", two_models[0].fitted, CFG)
    for f in ("weights.pt", "artifact.json"):  # the first layout: no version folder, no pointer
        shutil.move(root / "fan" / old / f, root / "fan" / f)
    (root / "fan" / old).rmdir()
    (root / "fan" / "current.json").unlink()

    assert list_artifacts(str(root)) == ["fan"]
    assert read_meta(str(root), "fan")["model_id"] == old == load_artifact(str(root), "fan").model_id
    assert artifact_dir(open_location(str(root)), "fan").path == str(root / "fan")
    [v] = list_versions(str(root), "fan")
    assert v["model_id"] == old and v["current"] and v["layout"] == "first"

    new = save_artifact(str(root), "fan", two_models[1].fitted, CFG)
    assert load_artifact(str(root), "fan").model_id == new
    assert [(v["model_id"], v["current"], v["layout"]) for v in list_versions(str(root), "fan")] == [
        (old, False, "first"), (new, True, "versioned")
    ]
    assert asd(["models", str(root), "--set-current", "fan", old]) == 0
    assert load_artifact(str(root), "fan").model_id == old == read_meta(str(root), "fan")["model_id"]


def test_a_pointer_to_a_missing_version_names_the_pointer(tmp_path, two_models):
    root = str(tmp_path / "models")
    first = save_artifact(root, "fan", two_models[0].fitted, CFG)
    shutil.rmtree(tmp_path / "models" / "fan" / first)
    with pytest.raises(ArtifactError, match=f"{root}/fan/current.json names '{first}'"):
        load_artifact(root, "fan")


def test_models_on_an_empty_root_exits_2(tmp_path, capsys):
    assert asd(["models", str(tmp_path)]) == 2
    assert "no model under" in capsys.readouterr().err


# ---------------------------------------------------------------- scoring on Ray + S3
def e2e(fn):
    return pytest.mark.ray(pytest.mark.s3(pytest.mark.slow(fn)))


@pytest.fixture(scope="module")
def rolled_back_run(ray_cluster, s3_endpoint, two_models, tmp_path_factory):
    """An archive on the S3 server (fan: normal and anomalous test clips; valve: normal
    clips only), fan trained twice and rolled back to the first version, then scored by
    ``asd score``."""
    bucket = f"s3://versions-{uuid.uuid4().hex[:10]}"
    ensure_bucket(open_location(bucket, s3_endpoint))
    data = open_location(f"{bucket}/data", s3_endpoint)
    for i in range(4):
        label = "anomaly" if i % 2 else "normal"
        for mt, f0 in (("fan", 200.0), ("valve", 330.0)):
            lab = label if mt == "fan" else "normal"
            f = f0 * (1.3 if lab == "anomaly" else 1.0)
            rel = ClipName(mt, "00", i, "test", "source" if i < 2 else "target", lab).relpath()
            wav = harmonic_tone(np.random.default_rng(900 + i), seconds=2.5, f0=f)
            write_bytes(data, f"{data.path}/{rel}", encode_wav(wav, SR))
    models = open_location(f"{bucket}/models", s3_endpoint)
    first, second = _train_twice(models.uri, two_models)
    save_artifact(models, "valve", train_type(_wavs(50, f0=330.0), CFG).fitted, CFG)
    assert asd(["models", models.uri, "--set-current", "fan", first, "--endpoint-url", s3_endpoint]) == 0
    out = f"{bucket}/out"
    rc = asd(["score", data.uri, models.uri, out, "--run-id", "rolled-back", "--endpoint-url", s3_endpoint])
    assert rc == 0
    store = RunStore(open_location(out, s3_endpoint))
    rows = store.read_run(store.record("rolled-back")).to_pandas()
    return {"out": out, "rows": rows, "first": first, "second": second, "endpoint": s3_endpoint}


@pytest.mark.ray
@pytest.mark.slow
def test_asd_train_twice_keeps_both_versions(ray_cluster, tmp_path, capsys):
    """The training job itself: a second `asd train` (more clips, so another model) adds
    a version and moves the pointer; the manifest's model id is the current one."""
    from tests.test_train_job import write_type

    data, models = str(tmp_path / "data"), str(tmp_path / "models")
    write_type(data, "fan", seed=0, n=8)
    args = [data, models, "--model", "knn", "--preset", "tiny"]
    assert asd(["train", *args]) == 0
    first = read_record(models)["types"]["fan"]["model_id"]
    write_type(data, "fan", seed=0, n=10)  # two more clips
    assert asd(["train", *args]) == 0
    second = read_record(models)["types"]["fan"]["model_id"]
    assert first != second and read_meta(models, "fan")["model_id"] == second
    assert [(v["model_id"], v["current"], v["n_clips"]) for v in list_versions(models, "fan")] == [
        (first, False, 8), (second, True, 10)
    ]
    capsys.readouterr()
    assert asd(["models", models]) == 0
    assert "_runs" not in capsys.readouterr().out  # checkpoints are not a machine type


@e2e
def test_scoring_uses_the_rolled_back_version(rolled_back_run):
    rows = rolled_back_run["rows"]
    fan = rows[rows["machine_type"] == "fan"]
    assert len(fan) == 4 and (fan["status"] == "ok").all()
    assert set(fan["model_id"]) == {rolled_back_run["first"]}


@e2e
def test_report_local_writes_index_html_and_the_plots(rolled_back_run, tmp_path, capsys):
    """`asd report OUT --local DIR` on the same run: the table and every plot in a local
    folder, one page linking them; valve (normal clips only) still gets its panels."""
    local = tmp_path / "report"
    rc = asd(["report", rolled_back_run["out"], "--local", str(local), "--endpoint-url", rolled_back_run["endpoint"]])
    assert rc == 0 and str(local / "index.html") in capsys.readouterr().out
    names = {p.name for p in local.iterdir()}
    assert names == {"index.html", "table.txt", "roc_fan.png", "hist_fan.png", "roc_valve.png", "hist_valve.png",
                     "alerts.csv", "trend.csv", "trend.png", "night_fan.png", "night_valve.png"}
    for png in local.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (local / "index.html").read_text()
    table = (local / "table.txt").read_text()
    assert "rolled-back" in page and "AUC(source)" in table
    assert all(f'<img src="{n}"' in page for n in names if n.endswith(".png"))
    assert next(x for x in table.splitlines() if x.startswith("Machine")) in page  # the metrics table itself
