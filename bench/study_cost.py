"""What ``asd train`` costs on this CPU for a preset, measured at a small size and
scaled to N clips: training tile-steps per second (one epoch over a few tiles, at the
preset's width and batch) and scoring forwards per second (the preset's mask count),
then ``tiles(N) x epochs / steps_per_s + N x 9 tiles x n_masks / forwards_per_s``
(the epochs, ``tiles(N)`` = N x 18 with the target clips' tiles repeated to
``target_share`` of all, :func:`asd_core.config.train_tiles`; then the ``knn_*``
rules' bank of the N training clips).

    OMP_NUM_THREADS=1 python -m bench.study_cost ARCHIVE --machine fan --preset default --clips 1000
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from asd_core.audio import decode
from asd_core.catalog import list_archive
from asd_core.config import SCORE_TILES_PER_CLIP, parse_overrides, preset, train_tiles
from asd_core.detector import Scorer, train_type
from asd_core.storage import open_location, read_many


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.study_cost")
    p.add_argument("archive")
    p.add_argument("--machine", default="fan")
    p.add_argument("--preset", default="default")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    # a few hundred tiles: a shorter epoch is mostly start-up (72 tiles read a third of the rate at width 8)
    p.add_argument("--probe-clips", type=int, default=40, help="clips the probe trains on")
    p.add_argument("--probe-tiles", type=int, default=640, help="tiles of the probe's one epoch")
    p.add_argument("--probe-masks", type=int, default=16, help="masks the probe scores with")
    p.add_argument("--clips", type=int, default=1000, help="the N the estimate is for")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = preset(args.preset, parse_overrides(args.set))
    # one epoch over a few tiles; the probe's own bank with few masks (forwards per
    # second hardly depend on K once a batch is full)
    probe = cfg.override({"epochs": 1, "max_train_tiles": args.probe_tiles, "n_masks": args.probe_masks})
    loc = open_location(args.archive)
    clips = [c for c in list_archive(loc, "train", [args.machine]) if c.clip is not None][: args.probe_clips]
    fc = cfg.features
    wavs = [decode(b, fc.sample_rate, fc.min_seconds) for _, b in read_many(loc, [c.path for c in clips])]
    tt = train_type(wavs, probe, domains=[c.clip.domain for c in clips])
    steps_per_s = tt.summary["n_train_rows"] / tt.summary["train_seconds"]
    scorer = Scorer({args.machine: tt.artifact(args.machine)})
    t0 = time.perf_counter()
    for w in wavs[:2]:
        scorer.score_wav(args.machine, w)
    fwd_per_s = 2 * SCORE_TILES_PER_CLIP * args.probe_masks / (time.perf_counter() - t0)
    n = args.clips
    epochs_s = train_tiles(cfg, n) * cfg.train.epochs / steps_per_s
    bank_s = n * SCORE_TILES_PER_CLIP * cfg.score.n_masks / fwd_per_s if cfg.score.rule.startswith("knn") else 0.0
    print(json.dumps({
        "preset": args.preset, "overrides": args.set, "width": cfg.model.width, "epochs": cfg.train.epochs,
        "n_masks": cfg.score.n_masks, "threads": args.threads, "train_tile_steps_per_s": round(steps_per_s, 2),
        "score_forwards_per_s": round(fwd_per_s, 2), "clips": n, "estimated_epochs_hours": round(epochs_s / 3600, 2),
        "estimated_bank_hours": round(bank_s / 3600, 2), "estimated_train_hours": round((epochs_s + bank_s) / 3600, 2),
        "estimated_score_s_per_clip": round(SCORE_TILES_PER_CLIP * cfg.score.n_masks / fwd_per_s, 2),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
