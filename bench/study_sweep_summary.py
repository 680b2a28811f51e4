"""Tables of the README's width study and CPU-sized Section 6 from ``asd sweep``
results (``trials.parquet`` files or the jsonl rows under ``docs/``).

    python -m bench.study_sweep_summary OUT/sweeps/width8/trials.parquet ... [--rows docs/x.jsonl]

Per configuration: AUC(source), AUC(target), pAUC (mean over types, then mean ± std
over seeds), the official score (hmean of every type's three values per seed, mean ±
std over seeds), mean train and score seconds per trial; then per type the hmean of
AUC(source), AUC(target), pAUC, mean ± std over seeds. ``--rows`` writes every trial
as one JSON line (the sweep id in ``sweep``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd


def hmean(vals) -> float:
    v = [float(x) for x in vals if np.isfinite(x) and x > 0]
    return len(v) / sum(1 / x for x in v) if v else math.nan


def load(paths: list[str]) -> pd.DataFrame:
    frames = []
    for p in paths:
        if p.endswith(".jsonl"):
            frames.append(pd.DataFrame([json.loads(line) for line in Path(p).read_text().splitlines() if line]))
        else:
            df = pd.read_parquet(p)
            df["sweep"] = Path(p).parent.name
            frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    # the settings every trial shares (the base size) are said once, not in every label
    parts = [set(str(c).split(",")) for c in df["configuration"]]
    common = set.intersection(*parts) if parts else set()
    df["label"] = [
        f"{sw}: {','.join(p for p in str(c).split(',') if p not in common) or '(base)'}"
        for sw, c in zip(df["sweep"], df["configuration"], strict=True)
    ]
    df.attrs["common"] = ",".join(sorted(common))
    return df


def ms(vals) -> str:
    vals = [v for v in vals if np.isfinite(v)]
    if not vals:
        return "-"
    return f"{np.mean(vals):.3f} ± {np.std(vals):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}"


def epoch_s(g: pd.DataFrame) -> str:
    v = g["epoch_seconds"].dropna() if "epoch_seconds" in g else pd.Series([], dtype=float)
    return f"{v.mean():.0f}" if len(v) else "-"


def tables(df: pd.DataFrame) -> str:
    ok = df[df["error"].fillna("") == ""]
    types = sorted(ok["machine_type"].unique())
    lines = ["| configuration | trials (failed) | AUC(source) | AUC(target) | pAUC | official | "
             "train s / trial (epochs alone) | score s / trial |", "|---|---|---|---|---|---|---|---|"]
    per_type = [f"| configuration | {' | '.join(types)} |", "|---|" + "---|" * len(types)]
    for label, g in df.groupby("label", sort=False):
        good = ok[ok["label"] == label]
        seeds = sorted(good["seed"].unique())
        by_seed = [good[good["seed"] == s] for s in seeds]
        cols = [ms([s[c].mean() for s in by_seed]) for c in ("auc_source", "auc_target", "pauc")]
        off = ms([hmean(s[["auc_source", "auc_target", "pauc"]].to_numpy().ravel()) for s in by_seed])
        failed = int((g["error"].fillna("") != "").sum())
        lines.append(f"| {label} | {len(g)} ({failed}) | {' | '.join(cols)} | {off} | "
                     f"{good['train_seconds'].mean():.0f} ({epoch_s(good)}) | {good['score_seconds'].mean():.0f} |")
        cells = []
        for t in types:
            gt = good[good["machine_type"] == t]
            cells.append(ms([hmean(r[["auc_source", "auc_target", "pauc"]].to_numpy()) for _, r in gt.iterrows()]))
        per_type.append(f"| {label} | {' | '.join(cells)} |")
    detail = ["| configuration | type | AUC(source) | AUC(target) | pAUC |", "|---|---|---|---|---|"]
    for label, _ in df.groupby("label", sort=False):
        good = ok[ok["label"] == label]
        for t in types:
            gt = good[good["machine_type"] == t]
            detail.append(f"| {label} | {t} | " + " | ".join(ms(gt[c]) for c in ("auc_source", "auc_target", "pauc"))
                          + " |")
    return "\n".join(lines) + "\n\nhmean per type:\n\n" + "\n".join(per_type) + "\n\n" + "\n".join(detail)


def factor_table(df: pd.DataFrame, preset_name: str, base: str) -> str:
    """One factor at a time (a study such as ``report-section6-cpu``): per factor its
    values, the base's row repeated under every factor with its base value marked."""
    from asd_core.config import _resolve_key, parse_overrides, preset

    cfg = preset(preset_name, parse_overrides([x for x in base.split(",") if x]))
    ok = df[df["error"].fillna("") == ""]
    types = sorted(ok["machine_type"].unique())

    def row(label_rows: pd.DataFrame) -> str:
        seeds = sorted(label_rows["seed"].unique())
        by_seed = [label_rows[label_rows["seed"] == s] for s in seeds]
        cols = [ms([s[c].mean() for s in by_seed]) for c in ("auc_source", "auc_target", "pauc")]
        off = ms([hmean(s[["auc_source", "auc_target", "pauc"]].to_numpy().ravel()) for s in by_seed])
        per = [ms([hmean(r[["auc_source", "auc_target", "pauc"]].to_numpy())
                   for _, r in label_rows[label_rows["machine_type"] == t].iterrows()]) for t in types]
        return (f"{' | '.join(cols)} | {off} | {' | '.join(per)} | "
                f"{label_rows['train_seconds'].mean():.0f} |")

    base_kv = dict(x.split("=", 1) for x in base.split(",") if x)

    def varied(configuration: str) -> dict[str, str]:
        kv = dict(x.split("=", 1) for x in str(configuration).split(",") if "=" in x)
        return {k: v for k, v in kv.items() if base_kv.get(k) != v}

    ok = ok.assign(varied=[",".join(f"{k}={v}" for k, v in varied(c).items()) for c in ok["configuration"]])
    base_rows = ok[ok["varied"] == ""]
    factors: dict[str, list[tuple[str, pd.DataFrame]]] = {}
    for conf, g in ok.groupby("varied", sort=False):
        if conf == "":
            continue
        kv = dict(x.split("=", 1) for x in conf.split(","))
        key = "patch" if "patch" in kv else next(iter(kv))
        if key == "patch":
            from asd_core.sweep import _resolve

            hidden = _resolve({"patch": kv["patch"], "n_masked": kv.get("n_masked", "auto")})["n_masked"]
            n_patches = (cfg.features.n_mels // int(kv["patch"])) ** 2
            value = f"{kv['patch']} ({hidden} of {n_patches} hidden)"
        else:
            value = kv[key]
        factors.setdefault(key, []).append((value, g))
    lines = [f"| factor | value | AUC(source) | AUC(target) | pAUC | official | {' | '.join(types)} | train s / trial |",
             "|---|---|---|---|---|---|" + "---|" * len(types) + "---|"]
    for key, vals in factors.items():
        stage, fname = _resolve_key(key)
        bval = getattr(getattr(cfg, stage), fname)
        if key == "patch":
            bval = f"{bval} ({cfg.masks.n_masked} of {(cfg.features.n_mels // bval) ** 2} hidden)"
        entries = [(f"{bval} (base)", base_rows), *vals] if len(base_rows) else vals
        for i, (v, g) in enumerate(sorted(entries, key=lambda e: _num(e[0]))):
            lines.append(f"| {key if i == 0 else ''} | {v} | " + row(g))
    return "\n".join(lines)


def _num(v: str) -> tuple:
    head = v.split(" ")[0]
    try:
        return (0, float(head), v)
    except ValueError:
        return (1, 0.0, v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.study_sweep_summary")
    p.add_argument("inputs", nargs="+", help="trials.parquet files (sweep id = folder name) or jsonl rows")
    p.add_argument("--rows", default=None, help="write every trial as one JSON line here")
    p.add_argument("--factors", default=None, metavar="PRESET:BASE",
                   help="also the one-factor-at-a-time table, e.g. 'tiny:epochs=4,max_train_tiles=500,n_masks=4'")
    args = p.parse_args(argv)
    df = load(args.inputs)
    if args.rows:
        keep = [c for c in df.columns if c != "label"]
        with open(args.rows, "w") as f:
            for rec in df[keep].to_dict("records"):
                f.write(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                    for k, v in rec.items()}, default=str) + "\n")
    print(f"shared by every trial: {df.attrs['common']}\n")
    print(tables(df))
    if args.factors:
        name, _, base = args.factors.partition(":")
        print("\n" + factor_table(df, name, base))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
