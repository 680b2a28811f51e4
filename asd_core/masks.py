"""Patch masks: ``n_masked`` of the ``(H/patch) * (W/patch)`` patches of a tile.

A mask is a bool tensor ``[H, W]``, True where the input is hidden and the model
must fill in. Masks come from a seeded ``torch.Generator`` so training (fresh masks
every epoch) and scoring (one fixed set of K masks shared by every tile, hence a
clip's score never depends on which clips share its batch) are reproducible.

Scoring takes its masks from a :class:`MaskSource`, so other schedules (balanced
sets where every patch is hidden equally often) plug in without touching scoring.
"""

from __future__ import annotations

from typing import Protocol

import torch

from .config import MaskConfig


def patch_grid(height: int, width: int, patch: int) -> tuple[int, int]:
    if height % patch or width % patch:
        raise ValueError(f"tile {height}x{width} is not a multiple of patch {patch}")
    return height // patch, width // patch


def random_masks(
    n: int, height: int, width: int, cfg: MaskConfig, generator: torch.Generator, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """``n`` masks ``[n, H, W]`` (bool), each hiding exactly ``cfg.n_masked`` patches."""
    gh, gw = patch_grid(height, width, cfg.patch)
    n_patches = gh * gw
    if not 0 < cfg.n_masked <= n_patches:
        raise ValueError(f"n_masked must be in 1..{n_patches}, got {cfg.n_masked}")
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
