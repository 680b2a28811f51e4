"""The configuration stages every model kind shares: features, masks, model, training
and scoring. One frozen dataclass per stage; defaults are the technical report's tables.

A kind's own settings live beside it (``asd_core/kinds/<kind>/config.py``);
:class:`asd_core.config.ASDConfig` puts the shared stages and the registered kinds'
stages together. The report's Table 2 lists hop 256, window 124, FFT 400 and 80 mel
bins *and* a 64x64 spectrogram; those do not add up. We keep what the method needs
(64 mel bands x 64 frames per tile, hop 256 so a tile covers ~1 s at 16 kHz and a
10-s clip gives 9 tiles) and use a 1024-point FFT / window, which resolves the low
harmonics of rotating machines that a 400-point FFT (40 Hz bins) smears. Every number
stays a field, so the report's literal values remain reachable (``--set n_fft=400``).
"""

from __future__ import annotations

from dataclasses import dataclass

# The one place that decides the default model kind (``model.kind``).
DEFAULT_KIND = "unet"


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16000  # Hz; every clip is resampled to this
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 256  # 16 ms
    n_mels: int = 64  # tile height
    f_min: float = 0.0  # Hz
    f_max: float = 8000.0  # Hz
    freq_scale: str = "mel"  # "mel" (log-mel) or "linear" (log spectrogram in n_mels linear bands)
    tile_frames: int = 64  # tile width in frames (~1.0 s)
    train_tile_hop: int = 32  # frames between training tiles (overlap = more tiles)
    score_tile_hop: int = 64  # frames between scoring tiles (no overlap)
    min_seconds: float = 1.1  # shorter clips cannot give one tile: rejected
    # Longer clips are rejected before they are decoded (reason too_long): a small FLAC
    # can hold 10 min x 8 channels x 48 kHz (1.1 GB decoded). DCASE clips are 6-18 s.
    max_seconds: float = 120.0


@dataclass(frozen=True)
class MaskConfig:
    patch: int = 8  # patch side in bins/frames
    n_masked: int = 48  # of (64/8)^2 = 64 patches
    fill: float = 0.0  # value of masked pixels (normalised space: the band mean)
    # "patch": random patch x patch squares (the report); "freq": whole frequency
    # stripes (patch bins tall, the tile's width), so a band is predicted from the
    # other bands; "time": whole time stripes (patch frames wide), so frames are
    # interpolated from their neighbours. Stripe modes hide the same share of the
    # tile: round(n_masked / stripes) of the 64 / patch stripes.
    mode: str = "patch"


@dataclass(frozen=True)
class ModelConfig:
    kind: str = DEFAULT_KIND  # a registered kind (asd_core.kinds): "unet", "baseline-ae", "knn"
    width: int = 64  # channels after ConvIn; the encoder doubles to 8*width (512 at 64)
    leaky_slope: float = 0.01
    # How the model runs (asd_core.runtime): bf16 autocast + channels_last measured
    # 7x faster on an H200 than fp32 NCHW, same clip ranking; on the CPU bf16 is
    # slower, so "auto" = bf16 on CUDA, fp32 on CPU; channels_last pays on both.
    precision: str = "auto"  # "auto", "bf16" (autocast) or "fp32"
    channels_last: bool = True


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-4
    epochs: int = 100
    batch_size: int = 64
    loss_mode: str = "masked"  # "masked" (report mode b) or "full" (mode a)
    seed: int = 0
    checkpoint_every: int = 5  # epochs between checkpoints (Ray Train)
    max_train_tiles: int = 0  # 0 = all; >0 caps tiles per type (demos)
    # Share of training tiles drawn from the target domain (its few clips repeated).
    # With 990 source + 10 target clips the model otherwise learns only the source
    # condition and target normals look anomalous. Measured on synthetic sets of
    # 60 + 6 training clips, hmean(AUC(s), AUC(t), pAUC) at share 0 / 0.25 / 0.5:
    # valve 0.58 / 0.76 / 0.81; at 0.25 / 0.5: slider 0.61 / 0.78, fan 0.64 / 0.72,
    # bearing 0.60 / 0.60. 0 = train on the clips as listed.
    target_share: float = 0.5
    # Share of the normal clips held out for evaluation when the archive says no split
    # (asd_core.holdout); the artifact records the rule, scoring evaluates only those.
    holdout_share: float = 0.2


@dataclass(frozen=True)
class ScoreConfig:
    n_masks: int = 256  # masks per tile
    mask_seed: int = 1234
    mask_schedule: str = "random"  # "random" (the report) or "balanced" (every patch hidden equally often)
    forward_batch: int = 256  # (tile, mask) pairs per forward pass
    threshold_quantile: float = 0.9  # of the gamma fitted to training scores
    threshold_max_clips: int = 200  # training clips scored to fit the threshold (0 = all)
    # U-Net clip score (asd_core.kinds.unet): "mse" = the report's mean masked MSE;
    # "knn_err" / "knn_enc" = k nearest training clips in error-profile / encoder space.
    rule: str = "mse"
    rule_k: int = 5  # neighbours for the knn_* rules
