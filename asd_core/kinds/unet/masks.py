"""Patch masks: ``n_masked`` of the ``(H/patch) * (W/patch)`` patches of a tile.

A mask is a bool tensor ``[H, W]``, True where the input is hidden and the model
must fill in. Masks come from a seeded ``torch.Generator`` so training (fresh masks
every epoch) and scoring (one fixed set of K masks shared by every tile, hence a
clip's score never depends on which clips share its batch) are reproducible.

Scoring takes its masks from a :class:`MaskSource`, so other schedules (balanced
sets where every patch is hidden equally often) plug in without touching scoring.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from ...stages import MaskConfig


def patch_grid(height: int, width: int, patch: int) -> tuple[int, int]:
    if height % patch or width % patch:
        raise ValueError(f"tile {height}x{width} is not a multiple of patch {patch}")
    return height // patch, width // patch


def random_masks(
    n: int, height: int, width: int, cfg: MaskConfig, generator: torch.Generator, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """``n`` masks ``[n, H, W]`` (bool), each hiding exactly ``cfg.n_masked`` patches
    (``mode="patch"``) or the same share of the tile in whole stripes (``"freq"``,
    ``"time"``)."""
    gh, gw = patch_grid(height, width, cfg.patch)
    n_patches = gh * gw
    if not 0 < cfg.n_masked <= n_patches:
        raise ValueError(f"n_masked must be in 1..{n_patches}, got {cfg.n_masked}")
    if cfg.mode in ("freq", "time"):
        stripes = gh if cfg.mode == "freq" else gw
        k = min(stripes, max(1, round(cfg.n_masked * stripes / n_patches)))
        order = torch.rand(n, stripes, generator=generator).argsort(dim=1)
        hidden = torch.zeros(n, stripes, dtype=torch.bool)
        hidden.scatter_(1, order[:, :k], True)
        hidden = hidden.repeat_interleave(cfg.patch, dim=1)  # [n, H] or [n, W]
        if cfg.mode == "freq":
            masks = hidden[:, :, None].expand(n, height, width)
        else:
            masks = hidden[:, None, :].expand(n, height, width)
        return masks.contiguous().to(device)
    if cfg.mode != "patch":
        raise ValueError(f"masks.mode must be 'patch', 'freq' or 'time', got {cfg.mode!r}")
    # Rank random keys per row: the n_masked smallest are masked -> exact count per mask.
    keys = torch.rand(n, n_patches, generator=generator)
    order = keys.argsort(dim=1)
    patches = torch.zeros(n, n_patches, dtype=torch.bool)
    patches.scatter_(1, order[:, : cfg.n_masked], True)
    grid = patches.view(n, gh, gw)
    masks = grid.repeat_interleave(cfg.patch, dim=1).repeat_interleave(cfg.patch, dim=2)
    return masks.to(device)


def apply_mask(x: torch.Tensor, mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Hide masked pixels of ``x [B, H, W]`` (mask broadcastable) with ``fill``."""
    return x.masked_fill(mask, fill)


class MaskSource(Protocol):
    """Gives the K scoring masks ``[K, H, W]`` (bool) for a tile size."""

    def masks(self, height: int, width: int, device: str | torch.device = "cpu") -> torch.Tensor: ...


class RandomMaskSource:
    """K random masks from a fixed seed: the report's 256-random-mask scoring."""

    def __init__(self, n_masks: int, cfg: MaskConfig, seed: int):
        self.n_masks, self.cfg, self.seed = n_masks, cfg, seed

    def masks(self, height: int, width: int, device: str | torch.device = "cpu") -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return random_masks(self.n_masks, height, width, self.cfg, g, device)


class BalancedMaskSource:
    """K masks in which every patch is hidden equally often (K a multiple of the cycle
    ``n_patches / gcd(n_patches, n_masked)``, e.g. 4 for 48 of 64): within a cycle,
    mask k hides the ``n_masked`` patches that follow position ``k * n_masked`` in a
    seeded random order of the patches, cyclically; each cycle draws its own order
    (seeds ``seed``, ``seed + 1``, ...), so 8 masks are two different balanced sets. Random masks reach that balance only on
    average, so few balanced masks estimate a tile's error with less variance."""

    def __init__(self, n_masks: int, cfg: MaskConfig, seed: int):
        self.n_masks, self.cfg, self.seed = n_masks, cfg, seed

    def masks(self, height: int, width: int, device: str | torch.device = "cpu") -> torch.Tensor:
        if self.cfg.mode != "patch":
            return RandomMaskSource(self.n_masks, self.cfg, self.seed).masks(height, width, device)
        gh, gw = patch_grid(height, width, self.cfg.patch)
        n_patches = gh * gw
        cycle = n_patches // math.gcd(n_patches, self.cfg.n_masked)  # masks after which every patch is even
        k = torch.arange(self.n_masks)
        # each cycle its own seeded patch order (seed, seed + 1, ...): more masks are new masks
        orders = torch.stack([torch.randperm(n_patches, generator=torch.Generator().manual_seed(self.seed + i))
                              for i in range(-(-self.n_masks // cycle))])
        idx = ((k % cycle)[:, None] * self.cfg.n_masked + torch.arange(self.cfg.n_masked)) % n_patches
        patches = torch.zeros(self.n_masks, n_patches, dtype=torch.bool)
        patches.scatter_(1, torch.gather(orders[k // cycle], 1, idx), True)
        grid = patches.view(self.n_masks, gh, gw)
        return grid.repeat_interleave(self.cfg.patch, 1).repeat_interleave(self.cfg.patch, 2).to(device)


def mask_source(schedule: str, n_masks: int, cfg: MaskConfig, seed: int) -> MaskSource:
    """The scoring masks of a schedule: ``random`` (the report) or ``balanced``."""
    if schedule == "random":
        return RandomMaskSource(n_masks, cfg, seed)
    if schedule == "balanced":
        return BalancedMaskSource(n_masks, cfg, seed)
    raise ValueError(f"score.mask_schedule must be 'random' or 'balanced', got {schedule!r}")
