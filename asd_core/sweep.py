"""Sweeps: one trial = train and score one machine type with one configuration.

The pieces a sweep job needs, without Ray: expanding a grid (``key=v1,v2``) or a
ready study into trial specs, running one trial on an archive (:func:`run_trial`:
read the type's clips, train with :func:`asd_core.detector.train_type`, score the
labelled test clips, the official metrics), and the Table-5-style summary over
seeds. ``jobs/sweep.py`` runs the trials concurrently on Ray Tune.

A trial never raises: a failure is a result row with ``error`` set.
"""

from __future__ import annotations

import itertools
import math
import time
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .audio import decode
from .catalog import list_archive
from .config import preset
from .detector import Scorer, train_type
from .metrics import section_metrics
from .results import official_score_values
from .storage import Location, read_many

# The technical report's Section 6, one factor at a time from its own setting
# (report preset): each entry varies one field; the report's value is in every list.
STUDIES: dict[str, list[dict[str, list[str]]]] = {
    "report-section6": [
        {"lr": ["1e-2", "1e-3", "1e-4", "1e-5"]},
        {"batch_size": ["32", "64", "128", "256"]},
        {"epochs": ["10", "30", "100", "300"]},
        {"n_masked": ["8", "24", "48", "60"]},
        {"patch": ["2", "4", "8", "16"], "n_masked": ["auto"]},
        {"freq_scale": ["mel", "linear"]},
        {"loss_mode": ["full", "masked"]},
    ],
    # The same factors at a size a CPU trains (README, "Section 6 at CPU size"): run
    # with --preset tiny plus the base's size (--set epochs=4 --set max_train_tiles=500
    # --set n_masks=4); each factor's other values around that base, the base itself
    # once (the empty configuration), so no configuration is trained twice.
    "report-section6-cpu": [
        {},
        {"lr": ["5e-4", "8e-3"]},
        {"batch_size": ["32", "128"]},
        {"epochs": ["2", "8"]},
        {"n_masked": ["24", "60"]},
        {"patch": ["4", "16"], "n_masked": ["auto"]},
        {"freq_scale": ["linear"]},
        {"loss_mode": ["full"]},
    ],
}


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["lr=1e-3,1e-4", "epochs=10"]`` -> ``{"lr": ["1e-3", "1e-4"], "epochs": ["10"]}``."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not vals:
            raise ValueError(f"--grid expects key=v1,v2,..., got {item!r}")
        grid[key.strip()] = vals
    return grid


def expand(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of a grid's values (one dict per configuration)."""
    if not grid:
        return [{}]
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def study_configs(name: str) -> list[dict[str, str]]:
    """A ready study's configurations: each factor's values, the rest as the preset."""
    try:
        parts = STUDIES[name]
    except KeyError:
        raise ValueError(f"unknown study {name!r}; choose one of {', '.join(STUDIES)}") from None
    out: list[dict[str, str]] = []
    for part in parts:
        for cfg in expand(part):
            if cfg not in out:
                out.append(cfg)
    return out


def data_uri_for(data_uri: str, seed: int) -> str:
    """A ``DATA_URI`` with ``{seed}`` in it names one archive per seed (``asd synth
    --seed N`` archives), so a trial of seed N reads archive N and the spread over
    seeds covers the clips as well as the training; without it every seed reads the
    same archive."""
    return data_uri.replace("{seed}", str(seed))


def _resolve(overrides: dict[str, str]) -> dict[str, str]:
    """``n_masked=auto`` keeps the report's 75 % of patches hidden at any patch size."""
    out = dict(overrides)
    if out.get("n_masked") == "auto":
        patch = int(out.get("patch", "8"))
        out["n_masked"] = str(max(1, round(0.75 * (64 // patch) ** 2)))
    return out


def trial_specs(
    configs: Sequence[dict[str, str]], machines: Sequence[str], seeds: Sequence[int], base: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """One spec per (configuration, machine type, seed)."""
    specs = []
    for i, cfg in enumerate(configs):
        for mt in machines:
            for seed in seeds:
                specs.append({"config_id": i, "overrides": {**(base or {}), **cfg}, "machine_type": mt, "seed": seed})
    return specs


def run_trial(
    data: Location,
    spec: dict[str, Any],
    *,
    preset_name: str = "default",
    max_train_clips: int = 0,
) -> dict[str, Any]:
    """Train and score one machine type with one configuration; never raises.

    Trains on the type's ``train`` clips (at most ``max_train_clips``, 0 = all, a
    seeded draw that keeps every target clip), scores its labelled ``test`` clips.
    Returns the spec's fields, AUC(source), AUC(target), pAUC, the official score
    (their harmonic mean), train seconds (all of training: features, epochs, the
    scoring bank), epoch seconds (the epochs alone), the training tiles, score
    seconds, and ``error`` ("" when it ran).
    """
    row: dict[str, Any] = {
        "config_id": spec["config_id"],
        "configuration": ",".join(f"{k}={v}" for k, v in sorted(spec["overrides"].items())) or "(preset)",
        "machine_type": spec["machine_type"],
        "seed": spec["seed"],
        "auc_source": math.nan, "auc_target": math.nan, "pauc": math.nan, "official_score": math.nan,
        "train_seconds": math.nan, "epoch_seconds": math.nan, "score_seconds": math.nan, "n_train": 0,
        "n_tiles": 0, "n_test": 0, "error": "",
    }
    try:
        overrides = {**_resolve(spec["overrides"]), "seed": str(spec["seed"])}
        cfg = preset(preset_name, overrides)
        mt = spec["machine_type"]
        train = [c for c in list_archive(data, "train", [mt]) if c.clip is not None and c.clip.label != "anomaly"]
        test = [c for c in list_archive(data, "test", [mt]) if c.clip is not None and c.clip.is_labelled]
        if max_train_clips and len(train) > max_train_clips:
            tgt = [c for c in train if c.clip.domain == "target"]
            src = [c for c in train if c.clip.domain != "target"]
            keep = np.random.default_rng(spec["seed"]).choice(len(src), max(0, max_train_clips - len(tgt)), replace=False)
            train = tgt + [src[i] for i in sorted(keep)]
        if not train or not test:
            raise ValueError(f"{mt}: needs labelled train and test clips under {data.uri}")
        fc = cfg.features
        wavs = [decode(b, fc.sample_rate, fc.min_seconds) for _, b in _read_all(data, [c.path for c in train])]
        t0 = time.perf_counter()
        tt = train_type(wavs, cfg, domains=[c.clip.domain for c in train])
        row["train_seconds"] = time.perf_counter() - t0
        row["epoch_seconds"] = float(tt.summary["train_seconds"])  # the epochs alone (no features, bank)
        row["n_tiles"] = int(tt.summary["n_train_rows"])
        t0 = time.perf_counter()
        scorer = Scorer({mt: tt.artifact(mt)})
        scores = [scorer.score_wav(mt, decode(b, fc.sample_rate, fc.min_seconds)).score
                  for _, b in _read_all(data, [c.path for c in test])]
        row["score_seconds"] = time.perf_counter() - t0
        y = [int(c.clip.label == "anomaly") for c in test]
        m = section_metrics(mt, "00", y, scores, [c.clip.domain or "" for c in test], [0] * len(y))
        row.update(auc_source=m.auc_source, auc_target=m.auc_target, pauc=m.pauc,
                   official_score=official_score_values([m.auc_source, m.auc_target, m.pauc]),
                   n_train=len(train), n_test=len(test))
    except Exception as e:  # noqa: BLE001 - a failed trial is a row
        row["error"] = f"{type(e).__name__}: {e}"
        row["traceback"] = traceback.format_exc(limit=5)
    return row


def _read_all(data: Location, paths: Sequence[str]):
    for path, blob in read_many(data, paths):
        if isinstance(blob, BaseException):
            raise OSError(f"cannot read {data.uri_of(path)}: {blob}")
        yield path, blob


def summarise(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Table 5 of the report, over seeds: one row per configuration with the mean and
    spread (std over seeds of the per-seed harmonic mean) of each metric, and how many
    trials failed."""
    df = pd.DataFrame(list(rows))
    if df.empty:
        return df
    ok = df[df["error"] == ""]
    out = []
    for (cid, configuration), g in df.groupby(["config_id", "configuration"], sort=True):
        good = ok[ok["config_id"] == cid]
        per_seed = [
            official_score_values(s[["auc_source", "auc_target", "pauc"]].to_numpy().ravel().tolist())
            for _, s in good.groupby("seed")
        ]
        rec = {"configuration": configuration, "trials": len(g), "failed": int((g["error"] != "").sum())}
        for c in ("auc_source", "auc_target", "pauc"):
            rec[c] = float(good[c].mean()) if len(good) else math.nan
        rec["official_score"] = float(np.mean(per_seed)) if per_seed else math.nan
        rec["official_std"] = float(np.std(per_seed)) if len(per_seed) > 1 else 0.0
        out.append(rec)
    return pd.DataFrame(out)


def format_summary(summary: pd.DataFrame) -> str:
    if summary.empty:
        return "no trials"
    lines = [f"{'configuration':<40} {'trials':>6} {'failed':>6} {'AUC(s)':>7} {'AUC(t)':>7} {'pAUC':>7} "
             f"{'official':>9} {'+/-':>6}"]
    for r in summary.sort_values("official_score", ascending=False, na_position="last").itertuples():
        lines.append(f"{r.configuration[:40]:<40} {r.trials:>6} {r.failed:>6} {100 * r.auc_source:>7.2f} "
                     f"{100 * r.auc_target:>7.2f} {100 * r.pauc:>7.2f} {100 * r.official_score:>9.2f} "
                     f"{100 * r.official_std:>6.2f}")
    return "\n".join(lines)
