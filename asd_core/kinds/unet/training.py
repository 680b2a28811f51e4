"""Training loop body: masked-patch inpainting with MSE, one epoch at a time.

Written so Ray Train can call it per worker: the epoch's sample order and every
sample's mask come from ``(seed, epoch)`` alone, and each rank takes its slice of
every *global* batch. With gradients averaged across ranks (DDP) a step then sees
the same samples and masks as single-worker training on the same data.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...runtime import autocast, prepare_input
from ...stages import MaskConfig, TrainConfig
from ..base import epoch_generator
from .masks import apply_mask, random_masks


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """MSE of ``recon`` vs ``target`` (both ``[B, H, W]``).

    ``mode="masked"`` (report mode b): mean over hidden pixels only, so the model is
    graded on what it had to infer. ``mode="full"`` (mode a): mean over the tile.
    """
    sq = (recon - target) ** 2
    if mode == "masked":
        m = mask.to(sq.dtype)
        return (sq * m).sum() / m.sum().clamp_min(1.0)
    if mode == "full":
        return sq.mean()
    raise ValueError(f"loss_mode must be 'masked' or 'full', got {mode!r}")


def train_epoch(
    model: nn.Module,
    tiles: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    train_cfg: TrainConfig,
    mask_cfg: MaskConfig,
    *,
    device: str | torch.device = "cpu",
    rank: int = 0,
    world_size: int = 1,
    precision: str = "fp32",
    channels_last: bool = False,
) -> float:
    """One pass over normalised tiles ``[N, H, W]``; returns this rank's mean loss.

    ``batch_size`` is the global batch: each rank trains on its
    ``batch_size / world_size`` share of every global batch.
    """
    model.train()
    n, h, w = tiles.shape
    if n == 0:
        raise ValueError("no training tiles")
    g = epoch_generator(train_cfg.seed, epoch)
    order = torch.randperm(n, generator=g)
    total, steps = 0.0, 0
    for start in range(0, n, train_cfg.batch_size):
        idx = order[start : start + train_cfg.batch_size]
        masks = random_masks(len(idx), h, w, mask_cfg, g)  # drawn for the whole global batch
        share = math.ceil(len(idx) / world_size)
        lo, hi = rank * share, min((rank + 1) * share, len(idx))
        if lo >= hi:
            # A rank with nothing in a short last batch still steps so DDP's
            # collectives stay in lockstep; its zero loss adds no gradient.
            lo, hi = 0, 1
            weight = 0.0
        else:
            weight = 1.0
        x = tiles[idx[lo:hi]].to(device)
        m = masks[lo:hi].to(device)
        with autocast(device, precision):
            recon = model(prepare_input(apply_mask(x, m, mask_cfg.fill)[:, None], channels_last))[:, 0]
        loss = reconstruction_loss(recon.float(), x, m, train_cfg.loss_mode) * weight
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
        steps += 1
    return total / max(steps, 1)
