"""How a model runs on its device: numeric precision and memory layout.

Measured: on an H200 the report U-Net runs 7x faster with bf16 autocast and
channels_last than in fp32 NCHW (the issue's table); on this 2-core CPU channels_last
alone is 1.4-1.8x faster and bf16 autocast slower than fp32 (bench/bench_model.py, one
thread), so ``precision="auto"`` (the default) is bf16 on CUDA and fp32 on CPU.
bf16 autocast keeps the weights and the loss in fp32; only convolutions and matrix
products run in bf16, and a test checks that clip scores rank as in fp32.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16")


def _device_type(device: str | torch.device) -> str:
    return torch.device(device).type


def resolve_precision(device: str | torch.device, precision: str) -> str:
    """``auto`` -> ``bf16`` on CUDA, ``fp32`` elsewhere (measured fastest on this CPU:
    width 8, one thread, channels_last: 496 forwards/s fp32 vs 344 bf16)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if _device_type(device) == "cuda" else "fp32"
    return precision


def autocast(device: str | torch.device, precision: str):
    """Autocast context for ``precision`` (``auto``, ``fp32`` = none, ``bf16``) on ``device``."""
    if resolve_precision(device, precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(_device_type(device), dtype=torch.bfloat16)


def prepare_model(model: nn.Module, channels_last: bool) -> nn.Module:
    """Move a convolutional model's weights to channels_last (in place) when asked."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def prepare_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``[B, C, H, W]`` in the layout the model runs in."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
