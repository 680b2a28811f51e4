"""Scoring: reconstruction error on masked areas, averaged over K masks and tiles.

For one normalised tile ``x [H, W]`` and masks ``m_1..m_K``::

    e_k   = sum(m_k * (f(x with m_k hidden) - x)^2) / sum(m_k)
    tile  = mean_k e_k
    clip  = mean over the clip's tiles

Every (tile, mask) pair is one row of a forward batch, so one pass carries many
pairs. The K masks are the same for every tile and the model is in eval mode, so a
clip's score does not depend on which clips share its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .masks import apply_mask


@torch.inference_mode()
def score_tiles(
    model: nn.Module, tiles: torch.Tensor, masks: torch.Tensor, *, forward_batch: int = 256, fill: float = 0.0
) -> torch.Tensor:
    """Per-tile scores ``[N]`` for normalised tiles ``[N, H, W]`` and masks ``[K, H, W]``.

    Runs on the device of ``model``; pairs are processed ``forward_batch`` at a time.
    """
    device = next(model.parameters()).device
    tiles = tiles.to(device)
    masks = masks.to(device)
    n, k = tiles.shape[0], masks.shape[0]
    sums = torch.zeros(n, dtype=torch.float64, device=device)
    if n == 0:
        return sums.cpu()
    masked_px = masks.flatten(1).sum(1).to(torch.float32)  # [K]
    total = n * k
    for start in range(0, total, forward_batch):
        pair = torch.arange(start, min(start + forward_batch, total), device=device)
        ti, mi = pair // k, pair % k
        x, m = tiles[ti], masks[mi]
        recon = model(apply_mask(x, m, fill)[:, None])[:, 0]
        err = ((recon - x) ** 2 * m).flatten(1).sum(1) / masked_px[mi]
        sums.index_add_(0, ti, err.to(torch.float64))
    return (sums / k).cpu()


def score_clips(
    model: nn.Module,
    clip_tiles: Sequence[torch.Tensor],
    masks: torch.Tensor,
    *,
    forward_batch: int = 256,
    fill: float = 0.0,
) -> np.ndarray:
    """Clip scores ``[C]`` for a list of per-clip normalised tiles ``[N_c, H, W]``.

    Tiles of all clips are scored together (fuller forward batches) and averaged back
    per clip. A clip with no tiles gets NaN.
    """
    counts = [int(t.shape[0]) for t in clip_tiles]
    if not counts:
        return np.zeros(0)
    per_tile = score_tiles(model, torch.cat(list(clip_tiles)), masks, forward_batch=forward_batch, fill=fill)
    out = np.full(len(counts), np.nan)
    offset = 0
    for i, c in enumerate(counts):
        if c:
            out[i] = float(per_tile[offset : offset + c].mean())
        offset += c
    return out
