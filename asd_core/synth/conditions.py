"""Operating conditions and rendering of one synthetic clip.

A clip's :class:`Condition` (operating point, file-name attributes, anomaly kind
and severity, level, SNR) is drawn first and cheaply; :func:`render` then mixes
the machine model with the domain's background noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asd_core.synth.machines import _RENDER, MACHINE_TYPES
from asd_core.synth.signals import _db, _harmonics, _shaped_noise, _unit, _wander

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

