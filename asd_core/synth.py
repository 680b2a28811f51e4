"""Synthetic machine-sound archives in the DCASE 2023 Task 2 layout.

Each machine type is a small physical model of how the real machine sounds
(rotating parts, gear mesh, bearing impacts, slide strokes, valve clicks, toy
motors), plus a background that differs between the two domains:

- ``source``: ventilation-like coloured noise (``noise_A``), higher SNR;
- ``target``: factory hum (mains harmonics) over brown noise with a slowly
  varying level (``noise_B``), lower SNR, and a shifted operating condition
  (speed, load, pattern...).

Normal clips vary within a type (operating point, gain, noise level, small
mechanical tolerances) so that "different" is not the same as "anomalous".
Anomalies follow failure mechanisms of the real machines; each type has two
kinds, at least one of them local in time. Every anomalous clip draws a
severity ``s`` in [0, 1]; each kind maps ``s`` linearly onto a physical range
(level in dB relative to the machine, modulation depth, delay in s) whose top
end (``s = 1``) a supervised probe on log-mel statistics separates easily and
whose bottom end is close to invisible.

Everything is pure numpy with an explicit ``np.random.Generator``; global
random state is never touched. A clip is fully determined by its seed, which
:func:`plan_archive` derives from (seed, machine type, split, domain, label,
index), so changing the number of test clips leaves the train clips as they
are.

Units: sample rate and frequencies in Hz, times in s, levels in dB (dBFS for
absolute RMS levels).
"""

from __future__ import annotations

import sys
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asd_core.audio import encode_wav
from asd_core.dcase import ClipName
from asd_core.storage import ensure_bucket, open_location, write_bytes

MACHINE_TYPES = ("fan", "gearbox", "bearing", "slider", "ToyCar", "ToyTrain", "valve")

# Archive sizes per machine type, one meaning for `asd synth --size` and `asd demo --size`:
# "full" is the DCASE 2023 development set's shape, "small" fits a CPU demo of the seven
# types on two cores in about a quarter of an hour. "test" is clips per domain and label.
ARCHIVE_SIZES: dict[str, dict[str, float]] = {
    "small": {"train_source": 60, "train_target": 6, "test": 10, "seconds": 10.0},
    "full": {"train_source": 990, "train_target": 10, "test": 50, "seconds": 10.0},
}


def describe_size(name: str) -> str:
    """``"60 + 6 train, 40 test clips of 10 s"`` for an :data:`ARCHIVE_SIZES` entry."""
    z = ARCHIVE_SIZES[name]
    return (f"{z['train_source']:g} source + {z['train_target']:g} target train, "
            f"{4 * z['test']:g} test clips of {z['seconds']:g} s")

# Two failure mechanisms per type; "local" kinds happen at moments or in bursts,
# "global" ones change the clip's spectrum throughout.
ANOMALY_KINDS: dict[str, tuple[str, ...]] = {
    "fan": ("imbalance", "blade_rub"),  # global 1x + sidebands / local rub episodes
    "gearbox": ("tooth", "wear"),  # impacts once per revolution / sidebands + harmonics
    "bearing": ("outer_race", "grit"),  # impacts at BPFO / local crackle bursts
    "slider": ("missing_stroke", "rough_rail"),  # local gap / crackle while moving
    "ToyCar": ("bent_shaft", "gear_chip"),  # global AM+FM / clicks once per wheel rev
    "ToyTrain": ("flat_wheel", "loose_joint"),  # impacts per wheel rev / local rattle
    "valve": ("stuck", "leak"),  # local delayed events / global hiss + whistle
}

# Overall RMS level of a normal clip (dBFS), from the real development samples
# (shared/real-samples/dcase2023): each type is recorded at its own gain.
LEVEL_DBFS = {
    "fan": -39.0,
    "gearbox": -33.5,
    "bearing": -42.0,
    "slider": -40.0,
    "ToyCar": -30.0,
    "ToyTrain": -45.5,
    "valve": -45.0,
}

# Severity ranges per anomaly kind: s = 0 maps to the first value, s = 1 to the
# second. Levels are dB relative to the normal machine sound's RMS (over the
# anomaly's active time for local kinds). Tuned so that s = 1 is clearly visible
# to a supervised log-mel probe and the unsupervised reference finds the mix
# over s ~ U(0, 1) hard but possible (see the module doc and tests).
SEVERITY: dict[str, dict[str, tuple[float, float]]] = {
    "fan": {"imbalance_db": (-26.0, -4.0), "imbalance_am": (0.02, 0.35), "rub_db": (-28.0, -6.0)},
    "gearbox": {"tooth_db": (-28.0, -6.0), "wear_am": (0.15, 0.8), "wear_harm_db": (2.0, 12.0)},
    "bearing": {"outer_db": (-22.0, -2.0), "grit_db": (-24.0, -4.0)},
    "slider": {"missing": (1.0, 4.0), "rough_db": (-20.0, -2.0)},
    "ToyCar": {
        "bent_am": (0.02, 0.35),
        "bent_fm": (0.002, 0.02),
        "bent_rub_db": (-34.0, -14.0),
        "chip_db": (-40.0, -18.0),
    },
    "ToyTrain": {"flat_db": (-28.0, -8.0), "rattle_db": (-4.0, 12.0)},
    "valve": {"stuck_delay": (0.05, 0.4), "stuck_fraction": (0.4, 0.9), "leak_db": (-20.0, 0.0)},
}


def _lerp(bounds: tuple[float, float], s: float) -> float:
    lo, hi = bounds
    return lo + (hi - lo) * float(s)


# --------------------------------------------------------------------------- #
# Signal building blocks (all return float64 [n] arrays)
# --------------------------------------------------------------------------- #


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


# --------------------------------------------------------------------------- #
# Machine models. Each returns the machine's sound with the normal part at RMS 1
# (anomaly components are added on top of it, so they add energy as real
# faults do). ``p`` holds the operating condition drawn by ``_draw_condition``.
# --------------------------------------------------------------------------- #


def _fan(p: dict, anomaly: str | None, s: float, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Axial fan: blade-pass tones over broadband aerodynamic noise.

    Rotation ``p["f_rot"]`` Hz (18-28 Hz), 7 blades: blade-pass frequency BPF =
    7 f_rot = 126-196 Hz with decaying harmonics. Turbulent flow noise is
    broadband (tilt about -3 dB/oct, hump near the duct's resonance) and is
    itself modulated at BPF because every blade sheds a vortex as it passes.

    - ``imbalance`` (global): a heavy spot makes the 1x rotation tone strong and
      amplitude-modulates everything at f_rot (sidebands at BPF +- f_rot).
    - ``blade_rub`` (local): a bent blade tip touches the housing during 1-3
      episodes of 0.4-1.5 s: a tick every revolution ringing the housing
      (2-4 kHz) plus scraping noise.
    """
    seconds = n / sr
    f_rot = p["f_rot"] * _wander(rng, n, sr, 0.003, rate_hz=0.5)
    phase = _phase(f_rot, sr, rng)
    bpf = 7.0 * phase
    broad = _shaped_noise(rng, n, sr, p["slope"], (40.0, 7500.0), [(p["hump_hz"], 600.0, 6.0)])
    broad *= 1.0 + 0.2 * np.sin(bpf)  # vortex shedding at blade pass
    tonal = _unit(_harmonics(bpf, [1.0, 0.55, 0.3, 0.2, 0.12, 0.07], rng))
    base = _unit(broad + p["tonal"] * tonal + 0.03 * np.sin(phase))  # tiny residual imbalance
    if anomaly == "imbalance":
        amp = _db(_lerp(SEVERITY["fan"]["imbalance_db"], s))
        am = _lerp(SEVERITY["fan"]["imbalance_am"], s)
        shaft = np.sin(phase + rng.uniform(0, 2 * np.pi))
        return base * (1.0 + am * shaft) + amp * np.sqrt(2.0) * shaft
    if anomaly == "blade_rub":
        spans = _episodes(rng, seconds, int(rng.integers(1, 4)), (0.4, 1.5))
        gate = _envelope(n, sr, spans, 0.02)
        ticks = _crossings(phase, sr, offset=rng.uniform(0, 2 * np.pi))
        kernel = _ringing(sr, [(rng.uniform(2000, 2600), 1.0), (rng.uniform(3300, 4000), 0.6)], 0.004, rng)
        rub = _impacts(n, sr, ticks, rng.uniform(0.7, 1.0, ticks.size), kernel)
        scrape = _shaped_noise(rng, n, sr, 0.0, (1500.0, 6000.0)) * (0.3 + np.maximum(np.sin(phase), 0) ** 8)
        rub = (_unit(rub) + 0.5 * scrape) * gate
        return base + _level_to(rub, _lerp(SEVERITY["fan"]["rub_db"], s), gate)
    return base


def _gearbox(p: dict, anomaly: str | None, s: float, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Single-stage spur gearbox driven by a motor.

    Input shaft f_in = rpm / 60 Hz (15-23 Hz), pinion 23 teeth, wheel 41 teeth:
    gear-mesh frequency GMF = 23 f_in (345-530 Hz) with harmonics. Small
    eccentricities modulate the mesh at f_in and f_out = f_in * 23 / 41, which
    gives weak sidebands even on a healthy gearbox. Load ``p["wt"]`` (0-250)
    strengthens the mesh tones and 2x GMF (teeth deflect under load). The casing
    rings at two modes (about 1.2 and 2.6 kHz) that shape the broadband noise.

    - ``tooth`` (local, periodic): a chipped pinion tooth strikes once per input
      revolution, exciting the casing modes.
    - ``wear`` (global): worn tooth profiles raise the sidebands (deep AM at
      f_in and f_out) and the GMF harmonics.
    """
    f_in = p["rpm"] / 60.0 * _wander(rng, n, sr, 0.002, rate_hz=0.5)
    ph_in = _phase(f_in, sr, rng)
    mesh_ph = 23.0 * ph_in
    ph_out = ph_in * 23.0 / 41.0
    load = p["wt"] / 100.0
    harm = [1.0, 0.35 + 0.15 * load, 0.15, 0.07]
    am_in, am_out = 0.06 * p["ecc"], 0.04 * p["ecc"]
    if anomaly == "wear":
        am = _lerp(SEVERITY["gearbox"]["wear_am"], s)
        am_in, am_out = am_in + am, am_out + 0.6 * am
        g = _db(_lerp(SEVERITY["gearbox"]["wear_harm_db"], s))
        harm = [harm[0], harm[1] * g, harm[2] * g, harm[3] * g]
    mesh = _harmonics(mesh_ph, harm, rng)
    mesh *= 1.0 + am_in * np.sin(ph_in) + am_out * np.sin(ph_out + 1.0)
    modes = [(p["mode1"], 300.0, 8.0), (p["mode2"], 500.0, 6.0)]
    broad = _shaped_noise(rng, n, sr, -4.5, (40.0, 7000.0), modes)
    hum = _harmonics(2.0 * np.pi * 50.0 * np.arange(n) / sr, [0.0, 0.1, 0.0, 0.04], rng)  # motor at 2x mains
    base = _unit(broad + (0.9 + 0.25 * load) * _unit(mesh) + hum)
    if anomaly == "tooth":
        hits = _crossings(ph_in, sr, offset=rng.uniform(0, 2 * np.pi))
        kernel = _ringing(sr, [(p["mode2"], 1.0), (p["mode1"], 0.7), (4300.0, 0.4)], 0.003, rng)
        clunk = _impacts(n, sr, hits, rng.uniform(0.8, 1.0, hits.size), kernel)
        return base + _level_to(clunk, _lerp(SEVERITY["gearbox"]["tooth_db"], s))
    return base


def _bearing(p: dict, anomaly: str | None, s: float, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Rolling-element bearing on a test rig.

    Shaft f_r = ``p["vel"]`` Hz. Healthy rolling makes broadband noise through
    the housing's structural resonance (``p["f_res"]``, 2.2-3.6 kHz, depends on
    the microphone location ``loc``), weakly modulated at the cage frequency
    (0.4 f_r), plus 1x/2x shaft tones and drive noise at low frequency.
    Geometry: 9 balls, d/D = 0.25, so BPFO = 4.5 (1 - 0.25) f_r = 3.375 f_r.

    - ``outer_race`` (global, periodic): a spall on the outer race: an impact
      every 1/BPFO s (with 1 % slip jitter) exciting the structural resonance.
    - ``grit`` (local): contamination particles crushed in the load zone:
      2-5 bursts of 0.1-0.4 s of dense random crackle.
    """
    seconds = n / sr
    f_r = p["vel"] * _wander(rng, n, sr, 0.002, rate_hz=0.5)
    ph = _phase(f_r, sr, rng)
    f_res = p["f_res"]
    rolling = _shaped_noise(rng, n, sr, -3.0, (500.0, 7000.0), [(f_res, 900.0, 8.0)])
    rolling *= 1.0 + 0.1 * np.sin(0.4 * ph)  # cage rotation
    drive = _shaped_noise(rng, n, sr, -6.0, (30.0, 3000.0))
    shaft = _unit(_harmonics(ph, [1.0, 0.5], rng))
    base = _unit(rolling + p["drive"] * drive + 0.3 * shaft)
    if anomaly == "outer_race":
        bpfo = 3.375 * p["vel"]
        period = 1.0 / bpfo
        t = np.arange(0.0, seconds, period) + rng.uniform(0, period)
        t += rng.normal(0.0, 0.01 * period, t.size)  # rolling elements slip
        kernel = _ringing(sr, [(f_res, 1.0), (1.7 * f_res, 0.4)], 0.0015, rng)
        hits = _impacts(n, sr, t, rng.uniform(0.7, 1.0, t.size), kernel)
        return base + _level_to(hits, _lerp(SEVERITY["bearing"]["outer_db"], s))
    if anomaly == "grit":
        spans = _episodes(rng, seconds, int(rng.integers(2, 6)), (0.1, 0.4))
        gate = _envelope(n, sr, spans, 0.005)
        t = np.sort(rng.uniform(0.0, seconds, int(600 * seconds)))  # ~600 particles/s
        kernel = _ringing(sr, [(f_res, 1.0), (5200.0, 0.8)], 0.0008, rng)
        crackle = _impacts(n, sr, t, rng.exponential(1.0, t.size), kernel) * gate
        return base + _level_to(crackle, _lerp(SEVERITY["bearing"]["grit_db"], s), gate)
    return base


def _stroke_profile(p: dict, rng: np.random.Generator, n: int, sr: int, missing: int = 0):
    """Velocity (m/s) of a slide rail doing back-and-forth strokes.

    Trapezoid per stroke: ramp ``p["ac"]`` s up to ``p["vel"]`` mm/s, cruise,
    ramp down; 0.15-0.25 s dwell between strokes. ``missing`` strokes (chosen at
    random, well inside the clip) are marked as not happening (a stalled drive).
    Returns ``(v [n], stop_times_s [k], spans_of_missing_strokes)`` where ``v``
    and the stop times describe the *full* pattern.
    """
    seconds = n / sr
    v_max = p["vel"] / 1000.0
    ramp = p["ac"]
    length = 0.35  # m per stroke
    cruise = max(length / v_max - ramp, 0.05)
    dur = 2 * ramp + cruise
    starts = []
    t = -rng.uniform(0.0, dur)  # the clip starts mid-cycle
    while t < seconds:
        starts.append(t)
        t += dur + rng.uniform(0.15, 0.25)
    starts = np.array(starts)
    gone: list[tuple[float, float]] = []
    if missing:
        inside = np.flatnonzero((starts > 0.3) & (starts + dur < seconds - 0.3))
        if inside.size:
            pick = rng.choice(inside, size=min(missing, inside.size), replace=False)
            gone = [(starts[i] - 0.01, starts[i] + dur + 0.02) for i in np.sort(pick)]
    tt = np.arange(n) / sr
    v = np.zeros(n)
    for a in starts:
        u = tt - a
        v = np.maximum(v, np.clip(np.minimum(u, dur - u) / ramp, 0.0, 1.0) * v_max)
    return v, starts + dur, gone


def _slider(p: dict, anomaly: str | None, s: float, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Linear slide rail driven by a servo motor and ball screw.

    Strokes of 0.35 m at ``vel`` mm/s (450-800) with ramps of ``ac`` s. While
    moving: the screw turns at v / 5 mm Hz and the motor whines at harmonics of
    4x that (pole passing), the carriage's rolling elements make friction noise
    proportional to speed; at each stop the carriage settles with a thud that
    rings the rail (about 0.6, 1.4 and 3.1 kHz). A holding servo hums faintly.

    - ``missing_stroke`` (local): the drive stalls and 1-3 strokes do not
      happen: a gap of 0.5-1 s with only the holding hum.
    - ``rough_rail`` (local to motion): a worn, dry rail crackles while the
      carriage moves (impacts at a rate proportional to speed).
    """
    missing = int(round(_lerp(SEVERITY["slider"]["missing"], s))) if anomaly == "missing_stroke" else 0
    v, ends, gone = _stroke_profile(p, rng, n, sr, missing)
    rel = v / (p["vel"] / 1000.0)  # 0..1
    ph = _phase(4.0 * v / 0.005, sr, rng)  # 4 poles x screw rotation (5 mm pitch)
    whine = _harmonics(ph, [1.0, 0.5, 0.35, 0.2, 0.1, 0.06], rng) * rel
    friction = _shaped_noise(rng, n, sr, -3.0, (150.0, 6000.0), [(900.0, 500.0, 6.0)]) * rel
    kernel = _ringing(sr, [(1400.0, 1.0), (3100.0, 0.6), (600.0, 0.5)], 0.012, rng)
    thuds = _impacts(n, sr, ends, rng.uniform(0.8, 1.0, ends.size), kernel)
    hold = 0.05 * np.sin(2 * np.pi * p["hold_hz"] * np.arange(n) / sr)
    moving = 0.35 * whine + friction + 1.2 * thuds
    # normalise by the full pattern's RMS, then remove stalled strokes: a missing
    # stroke lowers the level as it would on a fixed-gain recording
    ref = _rms(moving + hold)
    if gone:
        moving *= 1.0 - _envelope(n, sr, gone, 0.005)
    base = (moving + hold) / ref
    if anomaly == "rough_rail":
        rate = 400.0 * rel  # crackles per second at full speed
        t = np.flatnonzero(rng.random(n) < rate / sr) / sr
        kernel = _ringing(sr, [(2300.0, 1.0), (4700.0, 0.7)], 0.001, rng)
        crack = _impacts(n, sr, t, rng.exponential(1.0, t.size), kernel) * rel
        return base + _level_to(crack, _lerp(SEVERITY["slider"]["rough_db"], s), (rel > 0.05).astype(float))
    return base


def _toycar(p: dict, anomaly: str | None, s: float, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Toy car running on a belt (ToyADMOS2-like).

    DC motor at f_m = 9 x ``spd`` Hz (supply volts; 250-360 Hz) whose speed
    varies by several percent (toy supply, belt friction). Three-slot armature:
    commutation makes the 3rd and 6th motor harmonics strong. A pinion of 10
    teeth whines at 10 f_m; the wheels turn at f_w = f_m / ``ratio`` (6-9 Hz) and
    the tyres roll with low-frequency noise (-7 dB/oct), slightly modulated
    once per wheel revolution.

    - ``bent_shaft`` (global): wheel axle bent: deep AM and speed modulation at
      f_w, plus a rub once per wheel revolution.
    - ``gear_chip`` (local, periodic): a chipped gear tooth clicks once per
      wheel revolution, ringing the chassis near 4 kHz.
    """
    f_m = 9.0 * p["spd"] * _wander(rng, n, sr, 0.025, rate_hz=1.5)
    ph_w = _phase(f_m / p["ratio"], sr, rng)
    if anomaly == "bent_shaft":
        fm = _lerp(SEVERITY["ToyCar"]["bent_fm"], s)
        f_m = f_m * (1.0 + fm * np.sin(ph_w))
    ph_m = _phase(f_m, sr, rng)
    motor = _harmonics(ph_m, [1.0, 0.5, 0.9, 0.3, 0.2, 0.45, 0.12, 0.1, 0.08, 0.05], rng)
    pinion = 0.15 * np.sin(10.0 * ph_m)
    brush = _shaped_noise(rng, n, sr, -2.0, (1500.0, 7500.0))
    rolling = _shaped_noise(rng, n, sr, -7.0, (40.0, 6000.0), [(p["body_hz"], 400.0, 6.0)])
    rolling *= 1.0 + 0.1 * np.sin(ph_w)
    base = _unit(0.5 * _unit(motor) + rolling + pinion + 0.15 * brush)
    if anomaly == "bent_shaft":
        am = _lerp(SEVERITY["ToyCar"]["bent_am"], s)
        ticks = _crossings(ph_w, sr)
        rub = _impacts(n, sr, ticks, np.ones(ticks.size), _ringing(sr, [(1800.0, 1.0), (2900.0, 0.5)], 0.01, rng))
        return base * (1.0 + am * np.sin(ph_w + 0.5)) + _level_to(rub, _lerp(SEVERITY["ToyCar"]["bent_rub_db"], s))
    if anomaly == "gear_chip":
        ticks = _crossings(ph_w, sr, offset=rng.uniform(0, 2 * np.pi))
        kernel = _ringing(sr, [(4100.0, 1.0), (2600.0, 0.5), (6200.0, 0.4)], 0.002, rng)
        clicks = _impacts(n, sr, ticks, rng.uniform(0.8, 1.0, ticks.size), kernel)
        return base + _level_to(clicks, _lerp(SEVERITY["ToyCar"]["chip_db"], s))
    return base


def _toytrain(p: dict, anomaly: str | None, s: float, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Toy train on a track of 0.17 m rail pieces (ToyADMOS2-like).

    Speed v = 0.045 x ``spd`` m/s, varying along the track (grade, curves) by
    about 6 %. Each axle (4: two bogies) clicks at every rail joint, so clicks
    come in groups whose spacing follows the speed. The motor inside the
    locomotive hums at about 800 v Hz with harmonics; wheels rolling on the
    rail make band noise that rings the rails (1.1, 2.3 kHz).

    - ``flat_wheel`` (local, periodic): a wheel with a flat spot strikes the
      rail once per wheel revolution (wheel circumference 0.038 m).
    - ``loose_joint`` (local): 1-3 joints are loose: passing them, the train
      rattles for 0.15-0.4 s (bounces on top of the normal clicks).

    Clips shorter than about 1 s may have no joint to rattle at.
    """
    seconds = n / sr
    v = 0.045 * p["spd"] * _wander(rng, n, sr, 0.06, rate_hz=0.7)
    dist = np.cumsum(v) / sr + rng.uniform(0.0, 0.17)  # m travelled
    ph_m = _phase(800.0 * v, sr, rng)
    motor = _harmonics(ph_m, [1.0, 0.6, 0.4, 0.3, 0.2, 0.1, 0.08], rng)
    rolling = _shaped_noise(rng, n, sr, -4.0, (300.0, 7000.0), [(1100.0, 300.0, 8.0), (2300.0, 400.0, 6.0)])
    rolling *= v / v.mean()
    rail = _ringing(sr, [(1100.0, 1.0), (2300.0, 0.7), (4100.0, 0.4)], 0.008, rng)
    times, amps = [], []
    for offset in (0.0, 0.03, 0.09, 0.12):  # axle positions behind the front axle (m)
        t = _crossings(dist - offset, sr, period=0.17)
        times.append(t)
        amps.append(rng.uniform(0.7, 1.0, t.size))
    clicks = _impacts(n, sr, np.concatenate(times), np.concatenate(amps), rail)
    base = _unit(0.6 * _unit(clicks) + 0.7 * rolling + 0.35 * _unit(motor))
    if anomaly == "flat_wheel":
        hits = _crossings(2.0 * np.pi * dist / 0.038, sr)  # once per wheel revolution
        kernel = _ringing(sr, [(3500.0, 1.0), (2300.0, 0.5)], 0.002, rng)
        flat = _impacts(n, sr, hits, rng.uniform(0.8, 1.0, hits.size), kernel)
        return base + _level_to(flat, _lerp(SEVERITY["ToyTrain"]["flat_db"], s))
    if anomaly == "loose_joint":
        # the front axle reaching a loose joint starts a rattle of 8-15 decaying bounces
        joints = _crossings(dist, sr, period=0.17)
        joints = joints[(joints > 0.2) & (joints < seconds - 0.6)]
        count = min(int(rng.integers(1, 4)), joints.size)
        r_times, r_amps = [np.zeros(0)], [np.zeros(0)]
        for j in rng.choice(joints, size=count, replace=False) if count else []:
            d = rng.uniform(0.15, 0.4)
            bounces = np.sort(rng.uniform(j, j + d, int(rng.integers(8, 16))))
            r_times.append(bounces)
            r_amps.append(rng.uniform(0.5, 1.0, bounces.size) * np.exp(-(bounces - j) / d))
        rattle = _impacts(n, sr, np.concatenate(r_times), np.concatenate(r_amps), rail)
        gate = (np.abs(rattle) > 1e-3 * (np.max(np.abs(rattle)) + 1e-12)).astype(float)
        return base + _level_to(rattle, _lerp(SEVERITY["ToyTrain"]["rattle_db"], s), gate)
    return base


# Valve operation patterns: (cycle period s, [(open s, close s), ...] within a cycle)
VALVE_PATTERNS = {
    "00": (1.0, [(0.0, 0.35)]),
    "01": (1.6, [(0.0, 0.2), (0.5, 0.7)]),
    "02": (2.0, [(0.0, 0.9)]),
    "03": (1.25, [(0.0, 0.15), (0.3, 0.45), (0.6, 0.75)]),
}


def _valve(p: dict, anomaly: str | None, s: float, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Solenoid valve switching a compressed-air line in a fixed pattern.

    Pattern ``pat`` (see ``VALVE_PATTERNS``) repeats with 1 % period jitter and
    5 ms timing jitter. Opening: the plunger hits its stop (sharp click, modes
    3.2/5.5/1.1 kHz, 4 ms decay); while open, turbulent flow hisses (400-5000
    Hz); closing: the plunger hits the seat (softer click, 2.1/4.3 kHz). A pump
    upstream hums at a low level throughout.

    - ``stuck`` (local): a sticky plunger disturbs 40-90 % of the events: an
      opening or a closing comes 50-400 ms late (a late close keeps the flow on
      and lands weakly) or, more often at high severity, the valve does not
      open at all (no clicks, no flow).
    - ``leak`` (global): a damaged seat leaks: hiss with a whistle (2.5-4 kHz)
      while the valve should be silent.
    """
    seconds = n / sr
    period, opens = VALVE_PATTERNS[p["pat"]]
    period *= p["tempo"]
    events = []  # (open s, close s)
    t = -rng.uniform(0.0, period)
    while t < seconds:
        for a, b in opens:
            events.append([t + a * p["tempo"], t + b * p["tempo"]])
        t += period * (1.0 + rng.normal(0.0, 0.01))
    ev = np.array(events) + rng.normal(0.0, 0.005, (len(events), 2))
    close_amp = rng.uniform(0.6, 0.8, len(ev))
    keep = np.ones(len(ev), dtype=bool)
    if anomaly == "stuck":
        inside = np.flatnonzero((ev[:, 0] > 0.2) & (ev[:, 1] < seconds - 0.5))
        if inside.size:
            frac = _lerp(SEVERITY["valve"]["stuck_fraction"], s)
            chosen = rng.choice(inside, size=max(1, int(round(frac * inside.size))), replace=False)
            delay = _lerp(SEVERITY["valve"]["stuck_delay"], s)
            for i in chosen:
                u = rng.random()
                if u < 0.4 * s:
                    keep[i] = False  # does not open at all: no clicks, no flow
                elif u < 0.4 * s + 0.5 * (1.0 - 0.4 * s):
                    ev[i, 1] += delay  # sticks open; the late close lands weakly
                    close_amp[i] *= 0.4
                else:
                    ev[i, 0] = min(ev[i, 0] + delay, ev[i, 1] - 0.01)  # opens late
    ev, close_amp = ev[keep], close_amp[keep]
    open_k = _ringing(sr, [(3200.0, 1.0), (5500.0, 0.6), (1100.0, 0.5)], 0.004, rng)
    close_k = _ringing(sr, [(2100.0, 1.0), (4300.0, 0.5)], 0.006, rng)
    clicks = _impacts(n, sr, ev[:, 0], rng.uniform(0.9, 1.0, len(ev)), open_k)
    clicks += _impacts(n, sr, ev[:, 1], close_amp, close_k)
    flow = _shaped_noise(rng, n, sr, -4.0, (400.0, 5000.0)) * _envelope(n, sr, ev.tolist(), 0.01)
    pump = _shaped_noise(rng, n, sr, -5.0, (30.0, 2000.0))
    base = _unit(0.8 * _unit(clicks) + 0.5 * flow + p["pump"] * pump)
    if anomaly == "leak":
        closed = 1.0 - _envelope(n, sr, ev.tolist(), 0.01)
        f_w = rng.uniform(2500.0, 4000.0)
        whistle = np.sin(_phase(np.full(n, f_w) * _wander(rng, n, sr, 0.01), sr, rng))
        hiss = _shaped_noise(rng, n, sr, 0.0, (1500.0, 7000.0), [(f_w, 300.0, 10.0)])
        leak = (hiss + 0.7 * whistle) * closed
        return base + _level_to(leak, _lerp(SEVERITY["valve"]["leak_db"], s), closed)
    return base


_RENDER: dict[str, Callable[..., np.ndarray]] = {
    "fan": _fan,
    "gearbox": _gearbox,
    "bearing": _bearing,
    "slider": _slider,
    "ToyCar": _toycar,
    "ToyTrain": _toytrain,
    "valve": _valve,
}


# --------------------------------------------------------------------------- #
# Background noise per domain
# --------------------------------------------------------------------------- #


def _background(noise: str, p: dict, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Background at RMS 1.

    ``A`` (source): ventilation-like coloured noise, tilt ``p["bg_slope"]``
    (-2 to -4 dB/oct). ``B`` (target): factory floor: mains hum (50 Hz and
    harmonics, odd ones strongest, as from transformers and motors) over brown
    noise (-6 dB/oct) whose level drifts as distant machines come and go.
    """
    if noise == "A":
        return _shaped_noise(rng, n, sr, p["bg_slope"], (30.0, 7800.0))
    t = np.arange(n) / sr
    mains = p["mains_hz"]
    hum = _harmonics(2 * np.pi * mains * t, [0.6, 1.0, 0.7, 0.35, 0.4, 0.15, 0.2, 0.08], rng)
    floor = _shaped_noise(rng, n, sr, -6.0, (30.0, 7800.0), [(p["bg_peak_hz"], 800.0, 8.0)])
    floor *= np.clip(_wander(rng, n, sr, 0.15, rate_hz=0.6), 0.2, None)
    return _unit(floor + 0.8 * _unit(hum))


# --------------------------------------------------------------------------- #
# Operating conditions
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Condition:
    """Everything about a clip that is drawn before rendering.

    ``params``: machine operating point and tolerances; ``attributes``: the DCASE
    file-name suffix (``spd_21_noise_A``); ``anomaly``: kind or None;
    ``severity``: 0 (subtle) .. 1 (clear), 0 for normal clips; ``level_dbfs``:
    RMS of machine + background; ``snr_db``: machine over background.
    """

    machine_type: str
    domain: str
    attributes: str
    anomaly: str | None
    severity: float
    level_dbfs: float
    snr_db: float
    params: dict[str, Any] = field(default_factory=dict, compare=False)


def _draw_params(machine_type: str, domain: str, rng: np.random.Generator) -> tuple[dict[str, Any], str]:
    """Operating point and file-name attributes; ``target`` shifts the condition."""
    tgt = domain == "target"
    p: dict[str, Any]
    if machine_type == "fan":
        spd = int(rng.integers(26, 28) if tgt else rng.integers(18, 23))  # rotation Hz
        p = {
            "f_rot": spd + rng.uniform(-0.4, 0.4),
            "slope": rng.uniform(-3.5, -2.0),
            "hump_hz": rng.uniform(600, 1100),
            "tonal": rng.uniform(0.4, 0.8),
        }
        attrs = f"spd_{spd}"
    elif machine_type == "gearbox":
        rpm = int(rng.choice([1300, 1350]) if tgt else rng.choice(np.arange(900, 1201, 50)))
        wt = 200 if tgt else int(rng.choice([0, 50, 100, 150]))  # load
        p = {
            "rpm": rpm * (1.0 - 0.0002 * wt),
            "wt": wt,
            "ecc": rng.uniform(0.5, 1.5),
            "mode1": rng.uniform(1100, 1300),
            "mode2": rng.uniform(2450, 2750),
        }
        attrs = f"rpm_{rpm}_wt_{wt}"
    elif machine_type == "bearing":
        vel = int(rng.integers(21, 24) if tgt else rng.integers(8, 17))  # shaft Hz
        loc = "B" if tgt else str(rng.choice(["A", "C"]))  # microphone location
        p = {
            "vel": vel + rng.uniform(-0.3, 0.3),
            "f_res": {"A": 2800.0, "B": 2200.0, "C": 3200.0, "D": 3600.0}[loc] * rng.uniform(0.97, 1.03),
            "drive": rng.uniform(0.9, 1.4),
        }
        attrs = f"vel_{vel}_loc_{loc}"
    elif machine_type == "slider":
        vel = int(rng.choice([700, 750]) if tgt else rng.integers(45, 61) * 10)  # mm/s
        ac = 0.05 if tgt else float(rng.choice([0.05, 0.08, 0.11, 0.15, 0.20]))  # ramp time s
        p = {"vel": vel, "ac": ac, "hold_hz": rng.uniform(900.0, 1100.0)}
        attrs = f"vel_{vel}_ac_{ac:.2f}"
    elif machine_type == "ToyCar":
        car = str(rng.choice(["A", "B", "C"]))
        spd = int(rng.integers(36, 41) if tgt else rng.integers(28, 35))  # supply V
        p = {"spd": spd, "ratio": {"A": 40.0, "B": 44.0, "C": 48.0}[car], "body_hz": rng.uniform(450, 700)}
        attrs = f"car_{car}_spd_{spd}"
    elif machine_type == "ToyTrain":
        car = str(rng.choice(["A", "B"]))
        spd = int(rng.integers(3, 5) if tgt else rng.integers(6, 10))  # controller notch
        p = {"spd": spd, "car": car}
        attrs = f"car_{car}_spd_{spd}"
    elif machine_type == "valve":
        pat = "03" if tgt else str(rng.choice(["00", "01"]))
        p = {"pat": pat, "tempo": rng.uniform(0.95, 1.05), "pump": rng.uniform(0.5, 0.8)}
        attrs = f"pat_{pat}"
    else:
        raise ValueError(f"unknown machine type {machine_type!r}; known: {', '.join(MACHINE_TYPES)}")
    return p, attrs


def draw_condition(
    machine_type: str,
    domain: str,
    anomalous: bool,
    rng: np.random.Generator,
    anomaly_kind: str | None = None,
    severity: float | None = None,
) -> Condition:
    """Draw a clip's condition (cheap: no audio). Consumes ``rng`` in a fixed order.

    ``anomaly_kind`` / ``severity`` override the random choice (probes, tests);
    they are drawn anyway so the rest of the stream does not shift.
    """
    if domain not in ("source", "target"):
        raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
    p, attrs = _draw_params(machine_type, domain, rng)
    noise = "B" if domain == "target" else "A"
    p["bg_slope"] = rng.uniform(-4.0, -2.0)
    p["mains_hz"] = 50.0 * rng.uniform(0.998, 1.002)
    p["bg_peak_hz"] = rng.uniform(150.0, 400.0)
    # target: louder surroundings -> lower SNR
    snr = rng.uniform(4.0, 8.0) if domain == "target" else rng.uniform(8.0, 14.0)
    # mic gain / distance; the target is one new installation, so it varies less
    level = LEVEL_DBFS[machine_type] + rng.uniform(-1.0, 1.0) * (1.0 if domain == "target" else 2.0)
    kinds = ANOMALY_KINDS[machine_type]
    kind = kinds[int(rng.integers(len(kinds)))]
    sev = float(rng.uniform(0.0, 1.0))
    if anomaly_kind is not None:
        if anomaly_kind not in kinds:
            raise ValueError(f"{machine_type} anomaly kinds are {kinds}, got {anomaly_kind!r}")
        kind = anomaly_kind
    if severity is not None:
        sev = float(severity)
    return Condition(
        machine_type=machine_type,
        domain=domain,
        attributes=f"{attrs}_noise_{noise}",
        anomaly=kind if anomalous else None,
        severity=sev if anomalous else 0.0,
        level_dbfs=level,
        snr_db=snr,
        params=p,
    )


def render(cond: Condition, rng: np.random.Generator, seconds: float = 10.0, sample_rate: int = 16000) -> np.ndarray:
    """Render ``cond`` to float32 samples ``[T]`` in [-1, 1], ``T = seconds * sample_rate``."""
    n = int(round(seconds * sample_rate))
    machine = _RENDER[cond.machine_type](cond.params, cond.anomaly, cond.severity, rng, n, sample_rate)
    noise = "B" if cond.domain == "target" else "A"
    bg = _background(noise, cond.params, rng, n, sample_rate) * _db(-cond.snr_db)
    # scale so that a *normal* clip (machine RMS 1 + background) sits at level_dbfs;
    # anomaly energy comes on top, as it would on a fixed-gain recorder
    gain = _db(cond.level_dbfs) / np.sqrt(1.0 + _db(-cond.snr_db) ** 2)
    x = (machine + bg) * gain
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def synth_clip(
    machine_type: str,
    domain: str,
    anomalous: bool,
    rng: np.random.Generator,
    seconds: float = 10.0,
    sample_rate: int = 16000,
    *,
    anomaly_kind: str | None = None,
    severity: float | None = None,
) -> tuple[np.ndarray, str]:
    """One synthetic clip: float32 samples ``[T]`` in [-1, 1] and its attribute string.

    ``domain``: ``source`` or ``target``; the attribute string (``spd_21_noise_A``)
    goes into the DCASE file name. ``anomaly_kind`` / ``severity`` (0..1) fix the
    anomaly for probes; by default both are drawn from ``rng``.
    """
    cond = draw_condition(machine_type, domain, anomalous, rng, anomaly_kind, severity)
    return render(cond, rng, seconds, sample_rate), cond.attributes


# --------------------------------------------------------------------------- #
# Archives
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class ClipPlan:
    """One clip of an archive: its DCASE name, its own seed, and (for anomalies) kind and severity."""

    name: ClipName
    seed: int
    anomaly: str | None
    severity: float


_SPLIT_ID = {"train": 0, "test": 1}
_DOMAIN_ID = {"source": 0, "target": 1}
_LABEL_ID = {"normal": 0, "anomaly": 1}


def clip_seed(seed: int, machine_type: str, split: str, domain: str, label: str, index: int) -> int:
    """A 64-bit seed for one clip, independent of how many other clips there are.

    The machine type enters through CRC-32 of its name (stable across runs,
    unlike ``hash()``).
    """
    key = [
        int(seed),
        zlib.crc32(machine_type.encode()),
        _SPLIT_ID[split],
        _DOMAIN_ID[domain],
        _LABEL_ID[label],
        int(index),
    ]
    return int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0])


def plan_archive(
    machines: Iterable[str] | None = None,
    train_source: int = 990,
    train_target: int = 10,
    test: int = 50,
    seconds: float = 10.0,
    seed: int = 0,
) -> list[ClipPlan]:
    """Describe every clip of an archive (no audio is rendered).

    Per machine type: ``train_source`` source-normal and ``train_target``
    target-normal train clips; ``test`` clips per domain and label in test (so
    4 x ``test`` test clips). ``seconds`` does not change names or seeds; it is
    accepted so a plan and its archive are described by the same arguments.
    """
    del seconds
    machines = tuple(machines) if machines is not None else MACHINE_TYPES
    groups = [("train", "source", "normal", train_source), ("train", "target", "normal", train_target)]
    groups += [("test", d, lab, test) for d in ("source", "target") for lab in ("normal", "anomaly")]
    plans = []
    for mt in machines:
        if mt not in _RENDER:
            raise ValueError(f"unknown machine type {mt!r}; known: {', '.join(MACHINE_TYPES)}")
        for split, domain, label, count in groups:
            if not 0 <= count <= 10000:
                raise ValueError(f"clip count must be 0..10000, got {count}")
            for i in range(count):
                cs = clip_seed(seed, mt, split, domain, label, i)
                cond = draw_condition(mt, domain, label == "anomaly", np.random.default_rng(cs))
                name = ClipName(mt, "00", i, split, domain, label, cond.attributes)
                plans.append(ClipPlan(name, cs, cond.anomaly, cond.severity))
    return plans


def render_plan(plan: ClipPlan, seconds: float = 10.0, sample_rate: int = 16000) -> np.ndarray:
    """The audio of one planned clip, float32 ``[T]``."""
    rng = np.random.default_rng(plan.seed)
    x, attrs = synth_clip(
        plan.name.machine_type, plan.name.domain or "source", plan.name.label == "anomaly", rng, seconds, sample_rate
    )
    assert attrs == plan.name.attributes, "plan and render disagree"
    return x


def _stderr_progress(done: int, total: int, rate: float) -> None:
    end = "\n" if done == total else "\r"
    print(f"synth: {done}/{total} clips, {rate:.1f} clips/s", end=end, file=sys.stderr, flush=True)


def generate_archive(
    out_uri: str,
    machines: Iterable[str] | None = None,
    train_source: int = 990,
    train_target: int = 10,
    test: int = 50,
    seconds: float = 10.0,
    seed: int = 0,
    endpoint_url: str | None = None,
    progress: bool | Callable[[int, int, float], None] = True,
    sample_rate: int = 16000,
) -> dict[str, Any]:
    """Write a synthetic archive to ``<out_uri>/<machine_type>/{train,test}/<DCASE name>``.

    ``out_uri``: a local folder or ``s3://bucket/prefix`` (``endpoint_url`` for
    MinIO / moto). WAV, 16 kHz mono PCM_16, written clip by clip (memory does not
    grow with the number of clips). The same arguments give byte-identical files.
    ``progress``: True prints count and clips/s to stderr, a callable gets
    ``(done, total, clips_per_s)``, False is silent.

    Also writes ``<out_uri>/synth_manifest.csv`` (path, machine type, split,
    domain, label, anomaly kind, severity, seed): the ground truth per kind.

    Returns ``{"out_uri", "clips", "per_type", "bytes", "seconds", "clips_per_s"}``.
    """
    plans = plan_archive(machines, train_source, train_target, test, seconds, seed)
    loc = open_location(out_uri, endpoint_url)
    ensure_bucket(loc)
    report = _stderr_progress if progress is True else (progress or None)
    t0 = time.perf_counter()
    last = t0
    total_bytes = 0
    per_type: dict[str, int] = {}
    rows = ["path,machine_type,split,domain,label,anomaly,severity,seed"]
    for i, plan in enumerate(plans, start=1):
        data = encode_wav(render_plan(plan, seconds, sample_rate), sample_rate, "PCM_16")
        rel = plan.name.relpath()
        write_bytes(loc, f"{loc.path}/{rel}", data)
        total_bytes += len(data)
        per_type[plan.name.machine_type] = per_type.get(plan.name.machine_type, 0) + 1
        rows.append(
            f"{rel},{plan.name.machine_type},{plan.name.split},{plan.name.domain},{plan.name.label},"
            f"{plan.anomaly or ''},{plan.severity:.4f},{plan.seed}"
        )
        now = time.perf_counter()
        if report and (now - last >= 2.0 or i == len(plans)):
            report(i, len(plans), i / max(now - t0, 1e-9))
            last = now
    write_bytes(loc, f"{loc.path}/synth_manifest.csv", ("\n".join(rows) + "\n").encode())
    elapsed = time.perf_counter() - t0
    return {
        "out_uri": loc.uri,
        "clips": len(plans),
        "per_type": per_type,
        "bytes": total_bytes,
        "seconds": elapsed,
        "clips_per_s": len(plans) / max(elapsed, 1e-9),
    }
