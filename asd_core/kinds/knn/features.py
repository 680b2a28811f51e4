"""The knn kind's features: log-mel statistics of a clip, and of its 0.25-s segments."""

from __future__ import annotations

import numpy as np
import torch

from ...features import log_mel
from ...stages import FeatureConfig

SEGMENT_FRAMES = 16  # 0.25 s at hop 256 / 16 kHz
_DEFAULT_FEATURES = FeatureConfig()


def clip_statistics(wav: np.ndarray, fc: FeatureConfig = _DEFAULT_FEATURES) -> torch.Tensor:
    """``[T]`` -> ``[1, 2 * n_mels]``: per-band mean then std of the log-mel (dB)."""
    m = log_mel(wav, fc)
    return torch.cat([m.mean(1), m.std(1, correction=0)])[None].float()


def segments(wav: np.ndarray, fc: FeatureConfig = _DEFAULT_FEATURES) -> torch.Tensor:
    """``[T]`` -> ``[n_segments, n_mels]`` mean log-mel of each 0.25-s segment."""
    m = log_mel(wav, fc)
    n = m.shape[1] // SEGMENT_FRAMES
    return m[:, : n * SEGMENT_FRAMES].reshape(m.shape[0], n, SEGMENT_FRAMES).mean(-1).T.contiguous()
