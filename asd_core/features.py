"""Features: log-mel spectrograms cut into fixed-size tiles, and their normalisation.

Shapes: a clip ``[T]`` samples -> log-mel ``[n_mels, frames]`` (dB) -> tiles
``[N, n_mels, tile_frames]``. Normalisation is per mel band (mean and std over the
training clips of one machine type): bands differ by tens of dB, and without it the
reconstruction error is dominated by whichever bands are loudest rather than by what
changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .stages import FeatureConfig

_EPS_POWER = 1e-10  # floor of the mel power before log: -100 dB


class LogMel(torch.nn.Module):
    """``[B, T]`` samples -> ``[B, n_mels, frames]`` log-mel power in dB.

    No ``top_db`` clamp: torchaudio's ``AmplitudeToDB`` clamps relative to the
    loudest item *of the batch*, which would make a clip's features depend on its
    batch-mates.
    """

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        import torchaudio

        if cfg.freq_scale == "linear":  # the report's "log" spectrogram: linear bands
            self.mel = torch.nn.Sequential(
                torchaudio.transforms.Spectrogram(
                    n_fft=cfg.n_fft, win_length=cfg.win_length, hop_length=cfg.hop_length, power=2.0
                ),
                _Bands(torchaudio.functional.linear_fbanks(
                    cfg.n_fft // 2 + 1, cfg.f_min, cfg.f_max, cfg.n_mels, cfg.sample_rate
                )),
            )
            return
        if cfg.freq_scale != "mel":
            raise ValueError(f"freq_scale must be 'mel' or 'linear', got {cfg.freq_scale!r}")
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate,
            n_fft=cfg.n_fft,
            win_length=cfg.win_length,
            hop_length=cfg.hop_length,
            f_min=cfg.f_min,
            f_max=cfg.f_max,
            n_mels=cfg.n_mels,
            power=2.0,
        )

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(self.mel(wav).clamp_min(_EPS_POWER))


class _Bands(torch.nn.Module):
    """``[..., n_freqs, frames]`` power -> ``[..., n_bands, frames]`` through a filter bank."""

    def __init__(self, fb: torch.Tensor):  # [n_freqs, n_bands]
        super().__init__()
        self.register_buffer("fb", fb)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return torch.matmul(spec.transpose(-1, -2), self.fb).transpose(-1, -2)


_LOGMEL_CACHE: dict[tuple, LogMel] = {}


def _logmel_module(cfg: FeatureConfig, device: torch.device) -> LogMel:
    key = (cfg, str(device))
    mod = _LOGMEL_CACHE.get(key)
    if mod is None:
        mod = _LOGMEL_CACHE[key] = LogMel(cfg).to(device)
    return mod


def log_mel(wav: np.ndarray | torch.Tensor, cfg: FeatureConfig, device: str | torch.device = "cpu") -> torch.Tensor:
    """Log-mel of one clip ``[T]`` or a batch ``[B, T]`` on ``device`` (dB)."""
    device = torch.device(device)
    x = torch.as_tensor(wav, dtype=torch.float32, device=device)
    with torch.no_grad():
        return _logmel_module(cfg, device)(x)


def tile(spec: torch.Tensor, tile_frames: int, hop: int) -> torch.Tensor:
    """Cut ``[n_mels, frames]`` into ``[N, n_mels, tile_frames]`` tiles.

    Tiles start every ``hop`` frames; a remainder shorter than a tile is dropped.
    Returns ``[0, n_mels, tile_frames]`` when the clip is shorter than one tile.
    """
    n_mels, frames = spec.shape
    if frames < tile_frames:
        return spec.new_zeros((0, n_mels, tile_frames))
    return spec.unfold(1, tile_frames, hop).permute(1, 0, 2).contiguous()


def clip_tiles(
    wav: np.ndarray | torch.Tensor, cfg: FeatureConfig, *, train: bool = False, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Clip ``[T]`` -> un-normalised tiles ``[N, n_mels, tile_frames]`` (dB)."""
    hop = cfg.train_tile_hop if train else cfg.score_tile_hop
    return tile(log_mel(wav, cfg, device), cfg.tile_frames, hop)


@dataclass(frozen=True)
class Normalizer:
    """Per-band standardisation: ``(x - mean[band]) / std[band]``; both ``[n_mels]`` dB."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, tiles: torch.Tensor | np.ndarray, min_std: float = 1e-3) -> Normalizer:
        """Fit on training tiles ``[N, n_mels, frames]``."""
        t = torch.as_tensor(tiles, dtype=torch.float64)
        if t.ndim != 3 or t.shape[0] == 0:
            raise ValueError(f"need tiles [N, n_mels, frames] with N > 0, got {tuple(t.shape)}")
        per_band = t.permute(1, 0, 2).reshape(t.shape[1], -1)
        mean = per_band.mean(dim=1)
        std = per_band.std(dim=1).clamp_min(min_std)
        return cls(mean.numpy().astype(np.float32), std.numpy().astype(np.float32))

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean, device=tiles.device)[:, None]
        std = torch.as_tensor(self.std, device=tiles.device)[:, None]
        return (tiles - mean) / std

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, list[float]]) -> Normalizer:
        return cls(np.asarray(d["mean"], dtype=np.float32), np.asarray(d["std"], dtype=np.float32))


def fit_normalizer(tiles: Sequence[torch.Tensor], min_std: float = 1e-3) -> Normalizer:
    """:meth:`Normalizer.fit` over a list of ``[N_i, n_mels, frames]`` tiles without
    concatenating them (two passes in float64; same mean and unbiased std)."""
    tiles = [t for t in tiles if t.shape[0] > 0]
    if not tiles:
        raise ValueError("need at least one tile to fit the normaliser")
    n_mels = tiles[0].shape[1]
    count = sum(t.shape[0] * t.shape[2] for t in tiles)
    total = torch.zeros(n_mels, dtype=torch.float64)
    for t in tiles:
        total += t.to(torch.float64).sum(dim=(0, 2))
    mean = total / count
    sq = torch.zeros(n_mels, dtype=torch.float64)
    for t in tiles:
        sq += ((t.to(torch.float64) - mean[None, :, None]) ** 2).sum(dim=(0, 2))
    std = (sq / max(count - 1, 1)).sqrt().clamp_min(min_std)
    return Normalizer(mean.numpy().astype(np.float32), std.numpy().astype(np.float32))


# The envelope spectrum's carrier bands (Hz) and its modulation frequencies: 32 bins
# spaced evenly in log frequency from 2 to 400 Hz.
ENVELOPE_BANDS = ((50.0, 500.0), (500.0, 2000.0), (2000.0, 8000.0), (50.0, 8000.0))
ENVELOPE_EDGES_HZ = np.geomspace(2.0, 400.0, 33)
ENVELOPE_SIZE = len(ENVELOPE_BANDS) * (len(ENVELOPE_EDGES_HZ) - 1)  # numbers per clip
_ENVELOPE_RATE = 1000  # Hz: the envelopes' rate after decimation
_ENVELOPE_SEGMENT = 2000  # envelope samples per Welch segment (0.5 Hz)


def envelope_spectrum(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """A clip ``[T]`` -> ``[ENVELOPE_SIZE]`` float64 (4 x 32): per carrier band, the
    log power spectrum of the band's amplitude envelope relative to its mean (the
    envelope analysis of vibration diagnostics: shaft-rate modulation, impacts once
    per revolution), averaged in 32 log-spaced bins from 2 to 400 Hz.

    The envelope is the magnitude of the band's analytic signal (the positive
    frequencies of the band, doubled), decimated to 1 kHz; its spectrum is Welch's
    (2-s Hann segments, fewer on a shorter clip; a bin without a frequency of its own
    then takes the value interpolated between its neighbours). Relative to the mean,
    so the clip's level does not enter."""
    from scipy import signal

    x = np.asarray(wav, dtype=np.float64)
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(x.size, 1.0 / sample_rate)
    centres = np.sqrt(ENVELOPE_EDGES_HZ[:-1] * ENVELOPE_EDGES_HZ[1:])
    out = []
    for lo, hi in ENVELOPE_BANDS:
        analytic = np.fft.ifft(np.where((freqs >= lo) & (freqs < hi), 2.0 * spec, 0.0), n=x.size)
        env = signal.resample_poly(np.abs(analytic), _ENVELOPE_RATE, sample_rate)
        env = env / max(float(env.mean()), 1e-12) - 1.0
        f, p = signal.welch(env, fs=_ENVELOPE_RATE, nperseg=min(_ENVELOPE_SEGMENT, env.size))
        idx = np.digitize(f, ENVELOPE_EDGES_HZ) - 1
        vals = np.log(np.array([p[idx == i].mean() if np.any(idx == i) else np.nan for i in range(centres.size)])
                      + 1e-10)
        have = np.isfinite(vals)
        vals[~have] = np.interp(np.log(centres[~have]), np.log(centres[have]), vals[have])
        out.append(vals)
    return np.concatenate(out)
