"""Settings of the ``baseline-ae`` kind (config stage ``ae``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BaselineAEConfig:
    """The official DCASE 2023 Task 2 autoencoder baseline (model kind ``baseline-ae``)."""

    ae_sample_rate: int = 16000
    ae_n_mels: int = 128
    ae_n_fft: int = 1024
    ae_hop: int = 512
    ae_frames: int = 5  # consecutive frames per vector: 5 x 128 = 640 dims
    ae_hidden: int = 128
    ae_code: int = 8
    ae_lr: float = 1e-3
    ae_batch_size: int = 256
    ae_epochs: int = 100
    ae_score: str = "mahalanobis"  # "mahalanobis" or "mse"
