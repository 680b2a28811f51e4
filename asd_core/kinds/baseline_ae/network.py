"""The official DCASE 2023 Task 2 autoencoder baseline, as published.

Features: power log-mel (``10 log10(mel + eps)``), 128 bands, n_fft 1024, hop 512,
power 2.0; 5 consecutive frames stacked into 640-d vectors, no input normalisation.

Model: dense encoder 640-128-128-128-128-8 and a mirrored decoder; every hidden layer
is Linear + BatchNorm1d(momentum 0.01, eps 1e-3) + ReLU (the bottleneck too); the
output layer is linear. Trained with Adam (lr 1e-3), batch 256, 100 epochs on shuffled
frame vectors, MSE (the epochs and the covariances: :mod:`.kind`).

Scores of a clip:

- ``mse``: mean squared error over all its frame vectors and dimensions;
- ``mahalanobis``: each 640-d residual read as five 128-d rows; 128x128 covariances of
  the training residuals, one per domain (source, target; target falls back to source
  when it has no clips); ``d`` = the clip's mean 128-d residual; score =
  ``min over domains of d^T S^-1 d``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .config import BaselineAEConfig

_EPS = sys.float_info.epsilon  # the baseline's floor before the log


class BaselineAE(nn.Module):
    """``[B, 640]`` -> ``[B, 640]`` (with the default 128 mels x 5 frames)."""

    def __init__(self, cfg: BaselineAEConfig | None = None):
        super().__init__()
        cfg = cfg or BaselineAEConfig()
        dim = cfg.ae_n_mels * cfg.ae_frames
        hid, code = cfg.ae_hidden, cfg.ae_code

        def block(i: int, o: int) -> list[nn.Module]:
            return [nn.Linear(i, o), nn.BatchNorm1d(o, momentum=0.01, eps=1e-3), nn.ReLU()]

        self.encoder = nn.Sequential(*block(dim, hid), *block(hid, hid), *block(hid, hid), *block(hid, hid),
                                     *block(hid, code))
        self.decoder = nn.Sequential(*block(code, hid), *block(hid, hid), *block(hid, hid), *block(hid, hid),
                                     nn.Linear(hid, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


_MEL: dict[tuple, nn.Module] = {}


def frame_vectors(wav: np.ndarray | torch.Tensor, cfg: BaselineAEConfig) -> torch.Tensor:
    """Clip ``[T]`` at ``cfg.ae_sample_rate`` -> ``[n_vectors, n_mels * frames]`` float32."""
    import torchaudio

    key = (cfg.ae_sample_rate, cfg.ae_n_fft, cfg.ae_hop, cfg.ae_n_mels)
    if key not in _MEL:
        _MEL[key] = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.ae_sample_rate, n_fft=cfg.ae_n_fft, hop_length=cfg.ae_hop, n_mels=cfg.ae_n_mels, power=2.0
        )
    with torch.no_grad():
        mel = _MEL[key](torch.as_tensor(wav, dtype=torch.float32))
        logmel = 10.0 * torch.log10(mel + _EPS)  # [n_mels, frames]
    n = logmel.shape[1] - cfg.ae_frames + 1
    if n < 1:
        return torch.zeros(0, cfg.ae_n_mels * cfg.ae_frames)
    # vector i = frames i .. i+frames-1, each n_mels long, concatenated
    return logmel.unfold(1, cfg.ae_frames, 1)[:, :n].permute(1, 2, 0).reshape(n, -1).contiguous()


@torch.inference_mode()
def residuals(model: BaselineAE, vectors: torch.Tensor) -> torch.Tensor:
    """``[n, 640]`` -> residuals ``[n, 640]`` (input minus reconstruction)."""
    dev = next(model.parameters()).device
    v = vectors.to(dev)
    return (v - model(v)).cpu()


def residual_cov_inv(model: BaselineAE, clips: Sequence[torch.Tensor], cfg: BaselineAEConfig) -> torch.Tensor:
    rows = torch.cat([residuals(model, c) for c in clips]).reshape(-1, cfg.ae_n_mels).double()  # [n*5, 128]
    cov = torch.cov(rows.T)
    return torch.linalg.pinv(cov).float()


def ae_scores(model: BaselineAE, cov_inv: torch.Tensor, clip: torch.Tensor, cfg: BaselineAEConfig) -> tuple[float, float]:
    """(mse, mahalanobis) of one clip's frame vectors ``[n, 640]``."""
    if clip.shape[0] == 0:
        return float("nan"), float("nan")
    r = residuals(model, clip)
    mse = float((r**2).mean())
    d = r.reshape(-1, cfg.ae_n_mels).double().mean(0)  # the clip's mean 128-d residual
    maha = min(float(d @ cov_inv[i].double() @ d) for i in range(cov_inv.shape[0]))
    return mse, maha
