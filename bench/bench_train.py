"""Benchmark `asd train`: K machine types trained concurrently vs one after another.

Same Ray cluster, same synthetic data (K types, seeded harmonic hums), same config;
prints wall time of each mode, the speed-up, and per-worker training throughput
(tiles/s, epochs after the first). Run on demand, e.g.::

    python bench/bench_train.py --types 3 --epochs 3 --clips 24 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asd_core.artifact import read_meta  # noqa: E402
from asd_core.audio import encode_wav  # noqa: E402
from asd_core.config import parse_overrides, preset  # noqa: E402
from asd_core.dcase import ClipName  # noqa: E402
from jobs.common import setup_logging  # noqa: E402
from jobs.train import run_training  # noqa: E402

SR = 16000


def write_archive(root: Path, types: list[str], clips: int, seconds: float) -> None:
    """``clips`` hums of ``seconds`` s per type (f0 differs per type), DCASE names."""
    t = np.arange(int(seconds * SR)) / SR
    for k, mt in enumerate(types):
        rng = np.random.default_rng(k)
        for i in range(clips):
            f0 = 120.0 + 30.0 * k + rng.uniform(-3, 3)
            x = sum((0.3 / h) * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6.3)) for h in range(1, 6))
            x = (x + rng.normal(0, 0.02, t.size)).astype(np.float32)
            name = ClipName(mt, "00", i, "train", "source", "normal")
            path = root / name.relpath()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_wav(x))


def throughput(manifest: dict) -> float:
    """Mean tiles/s per worker over every type's epochs after the first (warm-up)."""
    rates = [r for e in manifest["types"].values() for r in e.get("samples_per_s_per_worker", [])[1:]]
    return float(np.mean(rates)) if rates else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--types", type=int, default=3)
    p.add_argument("--clips", type=int, default=24, help="training clips per type")
    p.add_argument("--seconds", type=float, default=5.0, help="clip length (s)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--workers-per-model", type=int, default=1)
    p.add_argument("--cpus-per-worker", type=float, default=None)
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray cluster size (default: all cores)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)
    setup_logging()
    logging.getLogger("asd").setLevel(logging.WARNING)

    import ray

    cfg = preset(args.preset, {"epochs": args.epochs, "threshold_max_clips": 8, **parse_overrides(args.set)})
    types = [f"type{k:02d}" for k in range(args.types)]
    out: dict = {"types": args.types, "clips": args.clips, "seconds": args.seconds, "epochs": args.epochs}
    with tempfile.TemporaryDirectory(prefix="asd-bench-") as tmp:
        root = Path(tmp)
        write_archive(root / "data", types, args.clips, args.seconds)
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        try:
            kw = dict(config=cfg, workers_per_model=args.workers_per_model, cpus_per_worker=args.cpus_per_worker)
            t0 = time.perf_counter()
            conc = run_training(str(root / "data"), str(root / "concurrent"), **kw)
            out["concurrent_s"] = time.perf_counter() - t0
            out["concurrent_tiles_per_s_per_worker"] = throughput(conc)
            out["cpus_per_worker_concurrent"] = conc["cpus_per_worker"]
            seq_rates, t0 = [], time.perf_counter()
            for mt in types:
                m = run_training(str(root / "data"), str(root / "sequential"), machines=[mt], **kw)
                assert m["status"] == "ok", m
                seq_rates.append(throughput(m))
            out["sequential_s"] = time.perf_counter() - t0
            out["sequential_tiles_per_s_per_worker"] = float(np.mean(seq_rates))
            out["cpus_per_worker_sequential"] = m["cpus_per_worker"]
            summary = read_meta(str(root / "concurrent"), types[0])["summary"]
            out["n_tiles_per_type"] = summary["n_tiles"]
            assert conc["status"] == "ok", conc
        finally:
            ray.shutdown()
    out["speedup"] = out["sequential_s"] / out["concurrent_s"]
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
