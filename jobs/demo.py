"""Run the whole system on this machine, on the same code paths a cluster uses.

An embedded S3-compatible server (moto) on 127.0.0.1 and a local Ray cluster are
started; a synthetic archive is generated into a bucket; for each model kind (the
U-Net, the official autoencoder baseline, the nearest-neighbour reference) one model
per machine type is trained concurrently on Ray Train (models and checkpoints in the
bucket, one models URI per kind) and the test clips are scored on Ray Data into one
output; the report puts the kinds side by side. Scores, metrics, submission CSVs and
plots are written under ``--workdir`` so they outlive the demo. Ctrl-C stops
everything.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from asd_core.config import parse_overrides, preset
from asd_core.synth import ARCHIVE_SIZES, describe_size
from jobs.common import (
    HelpFormatter,
    add_set_arg,
    config_error,
    describe,
    init_ray,
    parse_machines,
    setup_logging,
    start_local_s3,
)

log = logging.getLogger("asd.demo")

# Archive sizes (clips per type), the same as `asd synth --size`: "small" fits a 2-core
# machine in about ten minutes.
SIZES = ARCHIVE_SIZES
# CPU settings of the tiny preset for the demo: enough epochs to learn the machines,
# few enough tiles per type that seven types train in minutes on two cores.
CPU_OVERRIDES = {"epochs": 10, "max_train_tiles": 480, "n_masks": 16, "ae_epochs": 30}
KINDS = ("unet", "baseline-ae", "knn")  # the order they train in; they score in the reverse order, the
# U-Net last, so that its run is the latest and the report's first table is the U-Net's


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asd demo", description=describe(__doc__), formatter_class=HelpFormatter)
    p.add_argument("--workdir", default="asd-demo", help="where scores, metrics and plots are written")
    p.add_argument("--machines", default=None, help="comma-separated machine types (default: all seven)")
    p.add_argument("--size", choices=sorted(SIZES), default="small",
                   help="archive size per machine type, as 'asd synth --size': "
                        + "; ".join(f"{k}: {describe_size(k)}" for k in SIZES))
    p.add_argument("--seed", type=int, default=0, help="archive seed")
    p.add_argument("--models", default=",".join(KINDS), help="model kinds to train and compare")
    add_set_arg(p, "override a configuration field (on top of the demo's CPU or GPU settings)")
    return p


def run_demo(
    workdir: str,
    machines: list[str] | None,
    size: str,
    seed: int = 0,
    overrides: dict | None = None,
    kinds: list[str] | None = None,
) -> int:
    import torch

    from asd_core.synth import MACHINE_TYPES, generate_archive
    from jobs.report import report
    from jobs.score import run_scoring
    from jobs.train import run_training

    gpus = torch.cuda.device_count()
    cfg = preset("wide") if gpus else preset("tiny", CPU_OVERRIDES)
    kinds = sorted(kinds or KINDS, key=lambda k: k != "unet")  # the U-Net trains first, scores last
    if overrides:
        cfg = cfg.override(overrides)
    machines = machines or list(MACHINE_TYPES)
    out_dir = Path(workdir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    server, endpoint = start_local_s3("demo")
    data_uri, models_root = "s3://asd-demo-data/dcase2023", "s3://asd-demo-models"
    out_uri = str(out_dir / "out")
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        print(f"[demo] S3-compatible server on {endpoint}; {f'{gpus} GPU(s)' if gpus else 'CPU only'}", flush=True)
        ray = init_ray(None, endpoint)
        print(f"[demo] Ray: {ray.cluster_resources()}", flush=True)

        t0 = time.perf_counter()
        sz = SIZES[size]
        generate_archive(data_uri, machines=machines, seed=seed, endpoint_url=endpoint, **sz)
        timings["synth"] = time.perf_counter() - t0
        print(f"[demo] archive written to {data_uri} in {timings['synth']:.0f} s", flush=True)

        status = "ok"
        timings["train"] = timings["score"] = 0.0
        for kind in kinds:
            kcfg = cfg.override({"model.kind": kind})
            models_uri = f"{models_root}/{kind}"
            t0 = time.perf_counter()
            manifest = run_training(
                data_uri, models_uri, config=kcfg, machines=machines, gpus_per_worker=1.0 if gpus else 0.0,
                endpoint_url=endpoint,
            )
            dt = time.perf_counter() - t0
            timings["train"] += dt
            timings[f"train {kind}"] = dt
            ok = sorted(m for m, e in manifest["types"].items() if e["status"] == "ok")
            status = status if manifest["status"] == "ok" else "failed"
            print(f"[demo] {kind}: trained {len(ok)}/{len(machines)} types in {dt:.0f} s", flush=True)

        for kind in reversed(kinds):
            models_uri = f"{models_root}/{kind}"
            t0 = time.perf_counter()
            summary = run_scoring(
                data_uri, models_uri, out_uri, machines=machines, actors=max(1, gpus) if gpus else 1,
                gpus_per_actor=1.0 if gpus else 0.0, endpoint_url=endpoint,
            )
            dt = time.perf_counter() - t0
            timings["score"] += dt
            timings[f"score {kind}"] = dt
            print(f"[demo] {kind}: scored {summary['n_scored']} clips in {dt:.0f} s", flush=True)

        rep = report(out_uri)
        timings["total"] = time.perf_counter() - t_all
        print()
        print(rep["table"])
        print(f"Wall time: {timings['total']:.0f} s (synth {timings['synth']:.0f}, "
              + ", ".join(f"{k} {v:.0f}" for k, v in timings.items() if " " in k) + ")")
        print(f"\nDelta tables: the latest row per clip and model {out_uri}/latest   history: {out_uri}/scores/"
              f"\nmetrics: {out_uri}/metrics/   alerts: {out_uri}/alerts/   submission CSVs: {out_uri}/submission/")
        print(f"Plots: {out_uri}/report/{rep['run_id']}/")
        print("Query them, e.g.:")
        print(f"  python -c \"from deltalake import DeltaTable; d = DeltaTable('{out_uri}/latest').to_pandas(); "
              f"print(d[d.status == 'ok'].groupby(['model_kind', 'machine_type', 'label']).anomaly_score.mean())\"")
        print(f"  asd scores {out_uri} --latest --format csv > latest.csv")
        return 0 if status == "ok" else 1
    except KeyboardInterrupt:
        print("\n[demo] interrupted: stopping Ray and the S3 server", file=sys.stderr)
        return 130
    finally:
        try:
            import ray as _ray

            _ray.shutdown()
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:  # a bad --set fails here, before the S3 server and Ray start
        overrides = parse_overrides(args.set)
        preset("tiny", overrides)
    except (KeyError, ValueError) as e:
        return config_error(parser.prog, e)
    setup_logging()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the S3 server's per-request lines
    return run_demo(
        args.workdir, parse_machines(args.machines), args.size, args.seed, overrides, parse_machines(args.models),
    )


if __name__ == "__main__":
    raise SystemExit(main())
