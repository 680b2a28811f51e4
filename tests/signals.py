"""Seeded test signals: normal machine-like tones and anomalies a correct system must catch.

Every function takes its own ``np.random.Generator``; global random state is untouched.
"""

from __future__ import annotations

import numpy as np

SR = 16000


def harmonic_tone(rng: np.random.Generator, seconds: float = 3.0, sr: int = SR, f0: float | None = None) -> np.ndarray:
    """A stable harmonic machine hum (f0 ~ 200 Hz, 5 harmonics) in white noise, float32 ``[T]``."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = f0 if f0 is not None else rng.uniform(190.0, 210.0)
    x = sum((0.3 / k) * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) for k in range(1, 6))
    x = x + rng.normal(0.0, 0.02, t.size)
    return (x * rng.uniform(0.8, 1.2)).astype(np.float32)


def add_clicks(rng: np.random.Generator, x: np.ndarray, rate_hz: float = 6.0, sr: int = SR) -> np.ndarray:
    """Short broadband impacts at ~``rate_hz``: a rattle or a damaged part."""
    y = x.copy()
    n = max(1, int(rate_hz * x.size / sr))
    for pos in rng.integers(0, x.size - 200, n):
        y[pos : pos + 160] += rng.normal(0.0, 0.5, 160).astype(np.float32) * np.hanning(160).astype(np.float32)
    return y


def add_tone(rng: np.random.Generator, x: np.ndarray, sr: int = SR) -> np.ndarray:
    """A new, non-harmonic whine (e.g. a bearing starting to sing)."""
    t = np.arange(x.size) / sr
    return (x + 0.15 * np.sin(2 * np.pi * rng.uniform(2500.0, 3500.0) * t)).astype(np.float32)


def add_gap(rng: np.random.Generator, x: np.ndarray, sr: int = SR) -> np.ndarray:
    """The machine stops for ~0.25 s (dropout), leaving only the noise."""
    y = x.copy()
    n = int(0.25 * sr)
    for start in rng.integers(0, x.size - n, 2):
        y[start : start + n] = rng.normal(0.0, 0.02, n).astype(np.float32)
    return y


ANOMALIES = (add_clicks, add_tone, add_gap)
