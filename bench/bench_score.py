"""Benchmark: end-to-end clips/s of the scoring job vs the model-only ceiling.

    python bench/bench_score.py [--clips 40] [--masks 16] [--width 64] [--local] [--io-compare]

Ceiling: the same :class:`asd_core.detector.Scorer` (same artifact, same K, same torch
threads) called in a plain loop on pre-computed tiles, in this process: no I/O, no
decoding, no Ray Data. It runs in a Ray task with the actor's resources and thread
count, so both see the same worker environment (Ray workers get OMP_NUM_THREADS=1;
on a busy 2-core machine a driver process with 2 default OpenMP threads measured half
the forwards/s, which would flatter the job). It is measured before and after the
job and the ratio is taken against the faster of the two (on a shared machine the
load drifts). Job: :func:`jobs.score.run_scoring` on the same clips, timed from
the call to the published run (listing, actor start, model loading, fetch, decode,
scoring, Parquet write, publish, metrics), on a local Ray cluster started beforehand.

The model is an untrained U-Net of the given width (scoring cost does not depend on
the weights) with a normaliser fitted on the archive, so the benchmark needs no
training. Storage: the embedded moto S3 server (default) or a local folder.

``--io-compare`` also times the two ways of reading the archive with Ray Data:
``read_binary_files`` through the pyarrow-wrapped s3fs vs listing on the driver and
``s3fs.cat`` of each batch inside ``map_batches`` (what the job does).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asd_core.artifact import save_artifact  # noqa: E402
from asd_core.audio import decode, encode_wav  # noqa: E402
from asd_core.config import preset  # noqa: E402
from asd_core.dcase import ClipName  # noqa: E402
from asd_core.detector import Scorer  # noqa: E402
from asd_core.features import Normalizer, clip_tiles  # noqa: E402
from asd_core.kinds import Fitted  # noqa: E402
from asd_core.kinds.unet.network import UNet  # noqa: E402
from asd_core.storage import ensure_bucket, open_location, write_bytes  # noqa: E402

MT = "bench"
SR = 16000


def tone(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A harmonic hum in noise, float32 ``[T]`` at 16 kHz."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(190, 210)
    x = sum((0.3 / k) * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.28)) for k in range(1, 6))
    return (x + rng.normal(0, 0.02, t.size)).astype(np.float32)


def build(root_uri: str, endpoint: str | None, n_clips: int, seconds: float, width: int, k: int) -> tuple[str, str, list]:
    """Write the archive and one untrained artifact; returns (data_uri, models_uri, wavs)."""
    rng = np.random.default_rng(0)
    cfg = preset("report").override({"width": width, "n_masks": k})
    data = open_location(f"{root_uri}/data", endpoint)
    wavs = []
    for i in range(n_clips):
        x = tone(rng, seconds)
        wavs.append(x)
        rel = ClipName(MT, "00", i, "test", "source", "normal" if i % 2 else "anomaly").relpath()
        write_bytes(data, f"{data.path}/{rel}", encode_wav(x, SR))
    torch.manual_seed(0)
    model = UNet(cfg.model).eval()
    norm = Normalizer.fit(torch.cat([clip_tiles(w, cfg.features) for w in wavs[:8]]))
    models = open_location(f"{root_uri}/models", endpoint)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    save_artifact(models, MT, Fitted(state, {"normalizer": norm.to_dict()}, 1.0, np.zeros(0)), cfg)
    return data.uri, models.uri, wavs


def ceiling(models_uri: str, endpoint: str | None, wavs: list, k: int, batch: int, threads: int) -> dict:
    """Model-only clips/s: Scorer.score_features in a loop over pre-computed tiles."""
    torch.set_num_threads(threads)
    scorer = Scorer.from_location(open_location(models_uri, endpoint), [MT], n_masks=k)
    tiles = [scorer.features(MT, decode(encode_wav(w, SR), SR)) for w in wavs]
    scorer.score_features(MT, tiles[:1])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(tiles), batch):
        scorer.score_features(MT, tiles[i : i + batch])
    s = time.perf_counter() - t0
    return {"seconds": s, "clips_per_s": len(tiles) / s, "tiles": int(sum(t.shape[0] for t in tiles))}


def io_compare(data_uri: str, endpoint: str | None) -> dict:
    """Seconds to read every clip's bytes with Ray Data, two ways."""
    import ray

    from asd_core.catalog import list_archive
    from asd_core.storage import pyarrow_filesystem

    data = open_location(data_uri, endpoint)
    listed = list_archive(data)
    paths = [c.path for c in listed]
    out = {}
    t0 = time.perf_counter()
    ds = ray.data.read_binary_files(paths, filesystem=pyarrow_filesystem(data), include_paths=True)
    n = ds.map_batches(lambda b: {"n": np.array([len(x) for x in b["bytes"]])}, batch_size=8).to_pandas()["n"].sum()
    out["read_binary_files_s"] = time.perf_counter() - t0
    out["bytes"] = int(n)

    def fetch(batch, uri=data_uri, ep=endpoint):
        fs = open_location(uri, ep).fs
        got = fs.cat(list(batch["path"]), on_error="return")
        return {"n": np.array([len(got[p]) for p in batch["path"]])}

    t0 = time.perf_counter()
    ray.data.from_items([{"path": p} for p in paths], override_num_blocks=max(1, len(paths) // 8)).map_batches(
        fetch, batch_size=8
    ).to_pandas()
    out["from_items_cat_s"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--seconds", type=float, default=3.0, help="clip length (s); 3 s = 2 tiles")
    p.add_argument("--masks", type=int, default=16, help="K masks per tile")
    p.add_argument("--width", type=int, default=64, help="U-Net width (64 = the report's)")
    p.add_argument("--batch-size", type=int, default=16, help="clips per scoring call (job and ceiling)")
    p.add_argument("--local", action="store_true", help="a local folder instead of the moto S3 server")
    p.add_argument("--io-compare", action="store_true")
    args = p.parse_args(argv)

    import logging

    import ray

    from jobs.score import run_scoring

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the moto server's request log

    threads = os.cpu_count() or 1
    server, endpoint = None, None
    tmp = tempfile.TemporaryDirectory()
    if args.local:
        root = tmp.name
    else:
        from jobs.common import start_local_s3

        server, endpoint = start_local_s3("bench")
        root = "s3://bench-score"
        ensure_bucket(open_location(root, endpoint))
    try:
        data_uri, models_uri, wavs = build(root, endpoint, args.clips, args.seconds, args.width, args.masks)
        ray.init(num_cpus=threads, include_dashboard=False, log_to_driver=False)
        try:
            run_ceiling = ray.remote(num_cpus=0.5)(ceiling)  # the scoring actor's default reservation
            args_c = (models_uri, endpoint, wavs, args.masks, args.batch_size, threads)
            ceil = ray.get(run_ceiling.remote(*args_c))
            print(f"ceiling (before): {ceil['clips_per_s']:.3f} clips/s ({ceil['tiles']} tiles, K={args.masks}, "
                  f"width {args.width}, {threads} threads, {ceil['seconds']:.1f} s)", flush=True)
            io = io_compare(data_uri, endpoint) if args.io_compare else None
            t0 = time.perf_counter()
            summary = run_scoring(data_uri, models_uri, f"{root}/out", n_masks=args.masks, batch_size=args.batch_size,
                                  endpoint_url=endpoint, torch_threads=threads)
            wall = time.perf_counter() - t0
            after = ray.get(run_ceiling.remote(*args_c))
            print(f"ceiling (after): {after['clips_per_s']:.3f} clips/s ({after['seconds']:.1f} s)", flush=True)
        finally:
            ray.shutdown()
        best = max(ceil["clips_per_s"], after["clips_per_s"])
        job = args.clips / wall
        result = {
            "clips": args.clips,
            "seconds_per_clip": args.seconds,
            "masks": args.masks,
            "width": args.width,
            "storage": "local" if args.local else "moto-s3",
            "ceiling_clips_per_s": best,
            "ceiling_before_clips_per_s": ceil["clips_per_s"],
            "ceiling_after_clips_per_s": after["clips_per_s"],
            "job_clips_per_s": job,
            "job_seconds": wall,
            "pipeline_clips_per_s": summary["clips_per_second"],
            "ratio": job / best,
            "ratio_pipeline": summary["clips_per_second"] / best,
            "n_error": summary["n_error"],
            "io_compare": io,
        }
        print(f"job: {job:.3f} clips/s end to end ({wall:.1f} s), {summary['clips_per_second']:.3f} clips/s "
              f"in the Ray Data pipeline; ratio to ceiling {result['ratio']:.3f} "
              f"(pipeline only {result['ratio_pipeline']:.3f})")
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v)
                          for k, v in result.items()}))
    finally:
        if server is not None:
            server.stop()
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
