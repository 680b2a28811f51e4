"""Sweeps: grid expansion, the report's Section 6 study, the summary over seeds, and
a real Ray Tune sweep over a small generated archive with one failing configuration."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow.parquet as pq
import pytest

from asd_core.audio import encode_wav
from asd_core.config import preset
from asd_core.dcase import ClipName
from asd_core.storage import open_location, write_bytes
from asd_core.sweep import _resolve, data_uri_for, expand, parse_grid, study_configs, summarise, trial_specs

from .signals import ANOMALIES, SR, harmonic_tone


def test_grid_expands_to_every_combination():
    grid = parse_grid(["lr=1e-3,1e-4", "epochs=2,3,4"])
    assert grid == {"lr": ["1e-3", "1e-4"], "epochs": ["2", "3", "4"]}
    combos = expand(grid)
    assert len(combos) == 6 and {"lr": "1e-4", "epochs": "3"} in combos
    assert len(trial_specs(combos, ["fan", "valve"], [0, 1, 2])) == 36
    with pytest.raises(ValueError, match="key=v1"):
        parse_grid(["lr"])


def test_report_section6_varies_one_factor_at_a_time():
    configs = study_configs("report-section6")
    keys = {k for c in configs for k in c}
    assert {"lr", "batch_size", "epochs", "n_masked", "patch", "freq_scale", "loss_mode"} <= keys
    assert {"loss_mode": "full"} in configs and {"loss_mode": "masked"} in configs
    assert {"lr": "1e-4"} in configs  # the report's own value is measured too
    assert len(configs) == len({tuple(sorted(c.items())) for c in configs})


def test_cpu_section6_study_trains_each_configuration_once_and_every_one_resolves():
    configs = study_configs("report-section6-cpu")
    assert configs[0] == {}  # the base, once
    keys = {k for c in configs for k in c}
    assert {"lr", "batch_size", "epochs", "n_masked", "patch", "freq_scale", "loss_mode"} <= keys
    assert all(len(c) == 1 or set(c) == {"patch", "n_masked"} for c in configs[1:])  # one factor at a time
    base = {"epochs": "4", "max_train_tiles": "500", "n_masks": "4"}
    resolved = {preset("tiny", {**base, **_resolve(c)}).to_json() for c in configs}
    assert len(resolved) == len(configs)  # no two entries are the same configuration
    assert preset("tiny", _resolve({"patch": "16", "n_masked": "auto"})).masks.n_masked == 12


def test_data_uri_names_one_archive_per_seed():
    assert data_uri_for("/data/synth-s{seed}", 3) == "/data/synth-s3"
    assert data_uri_for("s3://b/dev", 3) == "s3://b/dev"


def test_summary_means_over_seeds_and_counts_failures():
    rows = [
        {"config_id": 0, "configuration": "a", "seed": s, "machine_type": "fan", "auc_source": v, "auc_target": v,
         "pauc": v, "error": ""}
        for s, v in ((0, 0.6), (1, 0.8))
    ] + [{"config_id": 1, "configuration": "b", "seed": 0, "machine_type": "fan", "auc_source": math.nan,
          "auc_target": math.nan, "pauc": math.nan, "error": "ValueError: boom"}]
    s = summarise(rows).set_index("configuration")
    assert s.loc["a", "official_score"] == pytest.approx(0.7) and s.loc["a", "official_std"] == pytest.approx(0.1)
    assert s.loc["b", "failed"] == 1 and math.isnan(s.loc["b", "official_score"])


def _archive(root) -> str:
    loc = open_location(str(root))
    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(8):
        dom = "target" if i >= 6 else "source"
        name = ClipName("fan", "00", i, "train", dom, "normal").relpath()
        write_bytes(loc, f"{loc.path}/{name}", encode_wav(harmonic_tone(rng, 2.0), SR))
    idx = 0
    for dom in ("source", "target"):
        for label in ("normal", "anomaly"):
            for _ in range(3):
                x = harmonic_tone(rng, 2.0)
                if label == "anomaly":
                    x = ANOMALIES[idx % len(ANOMALIES)](rng, x)
                name = ClipName("fan", "00", idx, "test", dom, label).relpath()
                write_bytes(loc, f"{loc.path}/{name}", encode_wav(x, SR))
                idx += 1
    return loc.uri


@pytest.mark.ray
@pytest.mark.slow
def test_sweep_on_ray_tune_writes_trials_and_keeps_failed_trials(ray_cluster, tmp_path, capsys):
    from jobs import sweep

    data = _archive(tmp_path / "data")
    out = tmp_path / "out"
    rc = sweep.main([data, str(out), "--machines", "fan", "--preset", "tiny", "--seeds", "1",
                     "--set", "epochs=1", "--set", "n_masks=2",
                     "--grid", "n_masked=48,999", "--sweep-id", "s1"])
    assert rc == 0  # one configuration failed, not all
    trials = pq.read_table(out / "sweeps" / "s1" / "trials.parquet").to_pandas()
    assert len(trials) == 2
    ok = trials[trials["configuration"].str.contains("n_masked=48")].iloc[0]
    bad = trials[trials["configuration"].str.contains("n_masked=999")].iloc[0]
    assert ok["error"] == "" and 0 <= ok["auc_source"] <= 1 and ok["n_test"] == 12 and ok["train_seconds"] > 0
    assert "n_masked" in bad["error"] and pd.isna(bad["auc_source"])
    text = capsys.readouterr().out
    assert "n_masked=48" in text and "2 trials, 1 failed" in text
    summary = pq.read_table(out / "sweeps" / "s1" / "summary.parquet").to_pandas()
    assert set(summary["failed"]) == {0, 1}
