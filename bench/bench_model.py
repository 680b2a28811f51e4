"""Model and scoring-kernel speed: forwards/s and FLOPs of the U-Net presets, and the
tiny preset's end-to-end train / score times on generated clips.

    python -m bench.bench_model [--device cuda] [--seconds 5]

Runs with asd_core alone (no Ray), so it also runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from asd_core.config import preset
from asd_core.masks import RandomMaskSource
from asd_core.scoring import score_tiles
from asd_core.unet import build_model, count_parameters


def forwards_per_second(model: torch.nn.Module, batch: int, device: str, seconds: float) -> float:
    x = torch.randn(batch, 1, 64, 64, device=device)
    with torch.inference_mode():
        model(x)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(x)
            n += batch
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def flops_per_forward(model: torch.nn.Module) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 1, 64, 64, device=next(model.parameters()).device))
    return float(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seconds", type=float, default=5.0, help="measuring time per case (s)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--tiny-e2e", action="store_true", help="also time the tiny preset's train and score on CPU")
    args = p.parse_args(argv)
    out: dict[str, dict] = {}
    for name in ("report", "tiny"):
        cfg = preset(name)
        model = build_model(cfg.model).to(args.device).eval()
        row = {
            "params": count_parameters(model),
            "gflop_per_forward": flops_per_forward(model) / 1e9,
            "forwards_per_s": forwards_per_second(model, args.batch, args.device, args.seconds),
        }
        # scoring kernel: 9 tiles (a 10-s clip) x K masks through score_tiles
        masks = RandomMaskSource(cfg.score.n_masks, cfg.masks, 0).masks(64, 64)
        tiles = torch.randn(9, 64, 64)
        t0 = time.perf_counter()
        score_tiles(model, tiles, masks, forward_batch=cfg.score.forward_batch)
        row["clip_score_s"] = time.perf_counter() - t0
        row["n_masks"] = cfg.score.n_masks
        out[name] = row
        print(name, json.dumps(row), flush=True)
    if args.tiny_e2e:
        from asd_core.detector import train_type
        from tests.signals import harmonic_tone

        rng = np.random.default_rng(0)
        wavs = [harmonic_tone(rng, 10.0) for _ in range(30)]
        t0 = time.perf_counter()
        tt = train_type(wavs, preset("tiny"))
        out["tiny_train"] = {"clips": 30, "seconds_audio": 10, **{k: tt.summary[k] for k in ("n_tiles", "train_seconds", "total_seconds")}}
        print("tiny_train", json.dumps(out["tiny_train"]), flush=True)
        del t0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
