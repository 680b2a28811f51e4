"""Generic signal building blocks of the synthetic machine sounds.

Noise with a spectral shape, slow fluctuations, rotation phases and their
harmonics, struck-structure ringing, impact trains, gates and level scaling.
All return float64 ``[n]`` arrays (or scalars) and draw randomness only from the
``np.random.Generator`` they are given. Units: Hz, s, dB.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def _lerp(bounds: tuple[float, float], s: float) -> float:
    lo, hi = bounds
    return lo + (hi - lo) * float(s)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) + 1e-12


def _unit(x: np.ndarray) -> np.ndarray:
    """``x`` scaled to RMS 1."""
    return x / _rms(x)


def _db(db: float) -> float:
    """Amplitude ratio of ``db`` decibels."""
    return float(10.0 ** (db / 20.0))


def _freqs(n: int, sr: int) -> np.ndarray:
    return np.fft.rfftfreq(n, 1.0 / sr)


def _shaped_noise(
    rng: np.random.Generator,
    n: int,
    sr: int,
    slope_db_oct: float = 0.0,
    band: tuple[float, float] = (20.0, 8000.0),
    peaks: Iterable[tuple[float, float, float]] = (),
) -> np.ndarray:
    """Gaussian noise with a spectral tilt, a pass band and resonance peaks; RMS 1.

    ``slope_db_oct``: tilt in dB per octave (-3 = pink, -6 = brown); ``band``:
    soft band edges in Hz (2nd-order-like roll-off outside); ``peaks``:
    ``(centre Hz, bandwidth Hz, gain dB)`` resonances of the machine's body.
    """
    f = _freqs(n, sr)
    spec = rng.standard_normal(f.size) + 1j * rng.standard_normal(f.size)
    fc = np.maximum(f, 1.0)
    gain = (fc / 1000.0) ** (slope_db_oct / 6.0206)
    lo, hi = band
    gain *= 1.0 / (1.0 + (lo / fc) ** 4) / (1.0 + (fc / hi) ** 4)
    for centre, width, g_db in peaks:
        gain *= 1.0 + (_db(g_db) - 1.0) / (1.0 + ((f - centre) / (0.5 * width)) ** 2)
    gain[0] = 0.0
    return _unit(np.fft.irfft(spec * gain, n))


def _wander(rng: np.random.Generator, n: int, sr: int, depth: float, rate_hz: float = 1.0) -> np.ndarray:
    """Slow random fluctuation ``1 + depth * z(t)``, z smooth with unit scale.

    Real motors never hold an exact speed: supply ripple, load and temperature
    move it by fractions of a percent (industrial) to several percent (toys).
    ``rate_hz`` is the number of independent control points per second.
    """
    m = int(n / sr * rate_hz) + 3
    pts = rng.standard_normal(m)
    z = np.interp(np.linspace(0.0, m - 2.0, n), np.arange(m), pts)
    return 1.0 + depth * z


def _phase(freq: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Instantaneous phase (rad) of a rotation with frequency ``freq[t]`` Hz."""
    return 2.0 * np.pi * np.cumsum(freq) / sr + rng.uniform(0.0, 2.0 * np.pi)


def _harmonics(phase: np.ndarray, amps: Iterable[float], rng: np.random.Generator) -> np.ndarray:
    """Sum of ``amps[k-1] * sin(k * phase + random phase)`` over harmonics k = 1, 2, ..."""
    out = np.zeros_like(phase)
    for k, a in enumerate(amps, start=1):
        if a:
            out += a * np.sin(k * phase + rng.uniform(0.0, 2.0 * np.pi))
    return out


def _ringing(sr: int, modes: Iterable[tuple[float, float]], decay_s: float, rng: np.random.Generator) -> np.ndarray:
    """Impulse response of a struck structure: damped sines, peak 1.

    ``modes``: ``(frequency Hz, relative amplitude)``; ``decay_s``: 1/e time.
    """
    t = np.arange(int(sr * decay_s * 6) + 1) / sr
    k = np.zeros_like(t)
    for f0, a in modes:
        k += a * np.sin(2.0 * np.pi * f0 * t + rng.uniform(0.0, 2.0 * np.pi))
    k *= np.exp(-t / decay_s)
    return k / (np.max(np.abs(k)) + 1e-12)


def _impacts(n: int, sr: int, times_s: np.ndarray, amps: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Impacts at ``times_s`` with ``amps``, each exciting ``kernel`` (FFT convolution)."""
    train = np.zeros(n)
    idx = np.round(np.asarray(times_s) * sr).astype(np.int64)
    keep = (idx >= 0) & (idx < n)
    np.add.at(train, idx[keep], np.asarray(amps, dtype=np.float64)[keep])
    size = 1 << int(np.ceil(np.log2(n + kernel.size)))
    return np.fft.irfft(np.fft.rfft(train, size) * np.fft.rfft(kernel, size), size)[:n]


def _crossings(phase: np.ndarray, sr: int, period: float = 2.0 * np.pi, offset: float = 0.0) -> np.ndarray:
    """Times (s) at which ``phase`` passes ``offset + k * period`` (once per revolution)."""
    k = np.floor((phase - offset) / period)
    return np.flatnonzero(np.diff(k) > 0) / sr


def _envelope(n: int, sr: int, spans: Iterable[tuple[float, float]], ramp_s: float = 0.01) -> np.ndarray:
    """0/1 gate that is 1 inside each ``(start s, end s)`` span, with linear ramps."""
    t = np.arange(n) / sr
    env = np.zeros(n)
    for a, b in spans:
        if b <= a:
            continue
        env = np.maximum(env, np.clip(np.minimum(t - a, b - t) / ramp_s + 0.5, 0.0, 1.0))
    return env


def _episodes(
    rng: np.random.Generator, seconds: float, count: int, dur: tuple[float, float]
) -> list[tuple[float, float]]:
    """``count`` non-overlapping-ish (start, end) spans of random duration, inside the clip."""
    spans = []
    for _ in range(count):
        d = min(rng.uniform(*dur), 0.8 * seconds)
        a = rng.uniform(0.05 * seconds, max(0.05 * seconds, 0.95 * seconds - d))
        spans.append((a, a + d))
    return spans


def _level_to(x: np.ndarray, db: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Scale ``x`` so that its RMS (over ``mask > 0`` only, if given) is ``db`` re 1."""
    ref = _rms(x[mask > 0]) if mask is not None and np.any(mask > 0) else _rms(x)
    return x * (_db(db) / ref)
