"""Model and scoring-kernel speed: forwards/s, TFLOP/s and the fraction of a peak for
each precision x memory layout x batch, the scoring kernel's clips/s, and the tiny
preset's end-to-end train time on generated clips.

    python -m bench.bench_model [--device cuda] [--preset report] [--batches 64,256,1024]
                                [--peak-tflops 790] [--seconds 5] [--masks 256] [--tiny-e2e]

``--peak-tflops`` is the device's dense peak for the percentages (default: the bf16
figure measured on an H200, ~790 TFLOP/s; pass your card's). Runs with asd_core alone
(no Ray), so it also runs on a bare GPU machine. One JSON line per case on stdout.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from asd_core.config import preset
from asd_core.kinds.unet.network import UNet, count_parameters
from asd_core.kinds.unet.scoring import score_tiles
from asd_core.runtime import autocast, prepare_input, prepare_model

H200_BF16_PEAK_TFLOPS = 790.0


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def forwards_per_second(
    model: torch.nn.Module, batch: int, device: str, seconds: float, precision: str = "fp32", channels_last: bool = False
) -> float:
    x = prepare_input(torch.randn(batch, 1, 64, 64, device=device), channels_last)
    with torch.inference_mode(), autocast(device, precision):
        model(x)  # warm-up (and cuDNN's algorithm choice)
        model(x)
        _sync(device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(x)
            n += batch
        _sync(device)
    return n / (time.perf_counter() - t0)


def flops_per_forward(model: torch.nn.Module) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 1, 64, 64, device=next(model.parameters()).device))
    return float(counter.get_total_flops())


def scoring_clips_per_second(model, device, n_masks, forward_batch, precision, channels_last, seconds) -> float:
    """The scoring kernel on 10-s clips (9 tiles) with ``n_masks`` masks each."""
    from asd_core.kinds.unet.kind import scoring_masks

    cfg = preset("report", {"n_masks": n_masks})
    masks = scoring_masks(cfg, device=device)
    tiles = torch.randn(9, 64, 64, device=device)
    kw = dict(forward_batch=forward_batch, precision=precision, channels_last=channels_last)
    score_tiles(model, tiles, masks, **kw)
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        score_tiles(model, tiles, masks, **kw)
        n += 1
    _sync(device)
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="report", help="preset whose U-Net is measured (report, default, tiny)")
    p.add_argument("--batches", default="64,256,1024" if torch.cuda.is_available() else "64")
    p.add_argument("--peak-tflops", type=float, default=H200_BF16_PEAK_TFLOPS)
    p.add_argument("--seconds", type=float, default=5.0, help="measuring time per case (s)")
    p.add_argument("--masks", type=int, default=256, help="masks per tile for the scoring kernel")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--tiny-e2e", action="store_true", help="also time the tiny preset's training on CPU")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = preset(args.preset)
    model = UNet(cfg.model).to(args.device).eval()
    gflop = flops_per_forward(model) / 1e9
    print(json.dumps({"preset": args.preset, "device": args.device, "params": count_parameters(model),
                      "gflop_per_forward": round(gflop, 3)}), flush=True)
    for precision in ("fp32", "bf16"):
        for cl in (False, True):
            prepare_model(model, cl) if cl else model.to(memory_format=torch.contiguous_format)
            for b in [int(x) for x in args.batches.split(",")]:
                fps = forwards_per_second(model, b, args.device, args.seconds, precision, cl)
                tflops = fps * gflop / 1e3
                row = {"precision": precision, "channels_last": cl, "batch": b, "forwards_per_s": round(fps, 1),
                       "tflops": round(tflops, 2), "pct_of_peak": round(100 * tflops / args.peak_tflops, 2)}
                row["scoring_clips_per_s"] = round(
                    scoring_clips_per_second(model, args.device, args.masks, b, precision, cl, args.seconds), 3
                )
                print(json.dumps(row), flush=True)
    if args.tiny_e2e:
        from asd_core.detector import train_type
        from tests.signals import harmonic_tone

        rng = np.random.default_rng(0)
        wavs = [harmonic_tone(rng, 10.0) for _ in range(30)]
        t0 = time.perf_counter()
        tt = train_type(wavs, preset("tiny"))
        print(json.dumps({"tiny_train": {"clips": 30, "seconds_audio": 10, "n_train_rows": tt.summary["n_train_rows"],
                                         "train_seconds": round(tt.summary["train_seconds"], 2),
                                         "total_seconds": round(time.perf_counter() - t0, 2)}}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
