"""Scoring: reconstruction error on masked areas, averaged over K masks and tiles.

For one normalised tile ``x [H, W]`` and masks ``m_1..m_K``::

    e_k   = sum(m_k * (f(x with m_k hidden) - x)^2) / sum(m_k)
    tile  = mean_k e_k
    clip  = mean over the clip's tiles

Every (tile, mask) pair is one row of a forward batch, so one pass carries many
pairs. The K masks are the same for every tile and the model is in eval mode, so a
clip's score does not depend on which clips share its batch.

Besides the report's number, :func:`score_tiles` can return each tile's *error map*
``[H, W]``: per pixel, the squared error averaged over the masks that hid it. Scoring
rules that compare a clip's errors with the training clips' errors (per mel band)
start from it (:mod:`asd_core.kinds.unet`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ...runtime import autocast, prepare_input
from .masks import apply_mask


@torch.inference_mode()
def score_tiles(
    model: nn.Module,
    tiles: torch.Tensor,
    masks: torch.Tensor,
    *,
    forward_batch: int = 256,
    fill: float = 0.0,
    precision: str = "fp32",
    channels_last: bool = False,
    error_maps: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-tile scores ``[N]`` for normalised tiles ``[N, H, W]`` and masks ``[K, H, W]``.

    Runs on the device of ``model`` (``precision``: ``fp32`` or ``bf16`` autocast;
    the error itself is always computed in fp32); pairs are processed
    ``forward_batch`` at a time. With ``error_maps`` also returns ``[N, H, W]``
    float32 maps (pixels no mask hid are 0).
    """
    device = next(model.parameters()).device
    tiles = tiles.to(device, torch.float32)
    masks = masks.to(device)
    n, k = tiles.shape[0], masks.shape[0]
    sums = torch.zeros(n, dtype=torch.float64, device=device)
    maps = torch.zeros(tiles.shape, dtype=torch.float32, device=device) if error_maps else None
    if n == 0:
        return (sums.cpu(), maps.cpu()) if error_maps else sums.cpu()
    masked_px = masks.flatten(1).sum(1).to(torch.float32)  # [K]
    total = n * k
    for start in range(0, total, forward_batch):
        pair = torch.arange(start, min(start + forward_batch, total), device=device)
        ti, mi = pair // k, pair % k
        x, m = tiles[ti], masks[mi]
        inp = prepare_input(apply_mask(x, m, fill)[:, None], channels_last)
        with autocast(device, precision):
            recon = model(inp)
        sq = (recon[:, 0].float() - x) ** 2 * m  # [B, H, W]
        sums.index_add_(0, ti, (sq.flatten(1).sum(1) / masked_px[mi]).to(torch.float64))
        if maps is not None:
            maps.index_add_(0, ti, sq)
    scores = (sums / k).cpu()
    if maps is None:
        return scores
    hidden = masks.sum(0).to(torch.float32).clamp_min(1.0)  # [H, W]: masks hiding each pixel
    return scores, (maps / hidden).cpu()


def per_clip_mean(per_tile: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """Average rows of ``per_tile [sum(counts), ...]`` back per clip (NaN for empty clips)."""
    out = np.full((len(counts), *per_tile.shape[1:]), np.nan)
    offset = 0
    for i, c in enumerate(counts):
        if c:
            out[i] = per_tile[offset : offset + c].mean(axis=0)
        offset += c
    return out
