"""``asd sweep``: train and score machine types under many configurations at once, on
Ray Tune.

    asd sweep DATA_URI OUT_URI --machines fan,valve --grid lr=1e-3,1e-4 --grid epochs=10,30 [--seeds 3]
    asd sweep DATA_URI OUT_URI --study report-section6 [--preset report] [--seeds 3]
    asd sweep 'data-s{seed}' OUT_URI --machines fan,valve --grid width=8,16 --seeds 2

A ``{seed}`` in DATA_URI names one archive per seed (``asd synth --seed N``): the trials
of seed N read that archive, so the spread over seeds covers the clips too.

Each trial trains one machine type with one configuration (any ``--set`` field; a
seed) on the archive's ``train`` clips and scores its labelled ``test`` clips
(:func:`asd_core.sweep.run_trial`). Trials run concurrently as Ray Tune trials with
the resources ``asd train`` gives a worker (``--cpus-per-trial``/``--gpus-per-trial``).
Results land in ``OUT_URI/sweeps/<sweep_id>/trials.parquet`` (one row per trial:
configuration, machine type, seed, AUC(source), AUC(target), pAUC, official score,
train and score seconds, error) and ``summary.parquet``; the Table-5-style summary
(one row per configuration, mean and spread over seeds) is printed. A failed trial is
a row with its error, not a dead sweep.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
import uuid

log = logging.getLogger("asd.sweep")


def _trial(config: dict) -> dict:
    """Ray Tune trainable: one trial, reported once."""
    import ray.tune

    from asd_core.storage import open_location
    from asd_core.sweep import data_uri_for, run_trial

    data = open_location(data_uri_for(config["data_uri"], config["spec"]["seed"]), config.get("endpoint_url"))
    row = run_trial(data, config["spec"], preset_name=config["preset"], max_train_clips=config["max_train_clips"])
    row.pop("traceback", None)
    ray.tune.report(row)
    return row


def run_sweep(
    data_uri: str,
    out_uri: str,
    *,
    configs: list[dict[str, str]],
    machines: list[str],
    seeds: list[int],
    preset_name: str = "default",
    base: dict[str, str] | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    max_train_clips: int = 0,
    endpoint_url: str | None = None,
    sweep_id: str | None = None,
) -> dict:
    """Run every (configuration, machine type, seed) trial on Ray Tune; returns
    ``{"sweep_id", "trials" (DataFrame), "summary" (DataFrame), "uri"}``."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray.tune

    from asd_core.storage import open_location, write_bytes
    from asd_core.sweep import summarise, trial_specs

    sweep_id = sweep_id or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    specs = trial_specs(configs, machines, seeds, base)
    param_space = {
        "data_uri": data_uri, "endpoint_url": endpoint_url, "preset": preset_name,
        "max_train_clips": max_train_clips, "spec": ray.tune.grid_search(specs),
    }
    resources = {"cpu": cpus_per_trial, **({"gpu": gpus_per_trial} if gpus_per_trial else {})}
    tuner = ray.tune.Tuner(
        ray.tune.with_resources(_trial, resources),
        param_space=param_space,
        tune_config=ray.tune.TuneConfig(num_samples=1),
        run_config=ray.tune.RunConfig(name=f"asd-sweep-{sweep_id}", verbose=0),
    )
    log.info("sweep %s: %d trials (%d configurations x %d machine types x %d seeds)",
             sweep_id, len(specs), len(configs), len(machines), len(seeds))
    grid = tuner.fit()
    rows = []
    for res in grid:
        spec = (res.config or {}).get("spec")
        if spec is None:  # a trial that never started (an interrupted sweep): nothing to record
            continue
        if res.error is not None or not res.metrics or "auc_source" not in res.metrics:
            rows.append({"config_id": spec["config_id"],
                         "configuration": ",".join(f"{k}={v}" for k, v in sorted(spec["overrides"].items())) or "(preset)",
                         "machine_type": spec["machine_type"], "seed": spec["seed"],
                         "error": f"{type(res.error).__name__}: {res.error}" if res.error else "trial reported nothing"})
            continue
        keep = ("config_id", "configuration", "machine_type", "seed", "auc_source", "auc_target", "pauc",
                "official_score", "train_seconds", "epoch_seconds", "score_seconds", "n_train", "n_tiles", "n_test",
                "error")
        rows.append({k: res.metrics.get(k) for k in keep})
    trials = pd.DataFrame(rows).sort_values(["config_id", "machine_type", "seed"]).reset_index(drop=True)
    for c in ("auc_source", "auc_target", "pauc", "official_score", "train_seconds", "epoch_seconds", "score_seconds"):
        trials[c] = pd.to_numeric(trials.get(c), errors="coerce")
    summary = summarise(trials.to_dict("records"))
    out = open_location(out_uri, endpoint_url)
    d = f"{out.path}/sweeps/{sweep_id}"
    for name, df in (("trials.parquet", trials), ("summary.parquet", summary)):
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
        if out.protocol == "file":
            out.fs.makedirs(d, exist_ok=True)
        write_bytes(out, f"{d}/{name}", buf.getvalue())
    return {"sweep_id": sweep_id, "trials": trials, "summary": summary, "uri": out.uri_of(d)}


def build_parser() -> argparse.ArgumentParser:
    from asd_core.config import DEFAULT_PRESET, PRESETS
    from asd_core.sweep import STUDIES
    from jobs.common import HelpFormatter, add_ray_args, add_set_arg, add_storage_args, describe

    p = argparse.ArgumentParser(prog="asd sweep", description=describe(__doc__), formatter_class=HelpFormatter)
    p.add_argument("data_uri", help="labelled archive in the DCASE layout (path or s3://); "
                   "'{seed}' in it is replaced by each trial's seed (one archive per seed)")
    p.add_argument("out_uri", help="output root; results go to OUT_URI/sweeps/<id>/")
    p.add_argument("--machines", required=True, help="comma-separated machine types")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="values of a config field (any --set key); several --grid make a product")
    p.add_argument("--study", default=None, choices=sorted(STUDIES), help="a ready sweep (one factor at a time)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per configuration and machine type")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS), help="base configuration")
    add_set_arg(p, "fixed override for every trial")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs reserved per trial")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per trial (0 = CPU)")
    p.add_argument("--max-train-clips", type=int, default=0, help="train on at most this many clips (0 = all)")
    p.add_argument("--sweep-id", default=None, help="results folder name (default: UTC time + random suffix)")
    add_storage_args(p)
    add_ray_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from asd_core.config import parse_overrides, preset
    from asd_core.sweep import expand, format_summary, parse_grid, study_configs
    from jobs.common import config_error, parse_machines, ray_session, setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    try:
        base = parse_overrides(args.set)
        configs = study_configs(args.study) if args.study else expand(parse_grid(args.grid))
        for c in configs:  # every key must be a config field: fail before any trial starts
            preset(args.preset, {k: v for k, v in {**base, **c}.items() if v != "auto"})
    except (KeyError, ValueError) as e:
        return config_error(parser.prog, e)
    machines = parse_machines(args.machines) or []
    with ray_session(args.address, args.endpoint_url):
        res = run_sweep(
            args.data_uri, args.out_uri, configs=configs, machines=machines, seeds=list(range(args.seeds)),
            preset_name=args.preset, base=base, cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial, max_train_clips=args.max_train_clips,
            endpoint_url=args.endpoint_url, sweep_id=args.sweep_id,
        )
    print(format_summary(res["summary"]))
    failed = int((res["trials"]["error"].fillna("") != "").sum())
    print(f"\nsweep {res['sweep_id']}: {len(res['trials'])} trials, {failed} failed; results at {res['uri']}")
    return 1 if failed == len(res["trials"]) else 0


if __name__ == "__main__":
    sys.exit(main())
