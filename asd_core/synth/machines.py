"""Per-machine-type sound models of the synthetic archives.

One function per machine type renders the machine's sound (normal part at
RMS 1, anomaly components added on top) from the operating point drawn by
:func:`asd_core.synth.conditions.draw_condition`; :data:`SEVERITY` maps an
anomaly's severity in [0, 1] onto its physical range.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from asd_core.synth.signals import (
    _crossings,
    _db,
    _envelope,
    _episodes,
    _harmonics,
    _impacts,
    _lerp,
    _level_to,
    _phase,
    _ringing,
    _rms,
    _shaped_noise,
    _unit,
    _wander,
)

MACHINE_TYPES = ("fan", "gearbox", "bearing", "slider", "ToyCar", "ToyTrain", "valve")

# Severity ranges per anomaly kind: s = 0 maps to the first value, s = 1 to the
# second. Levels are dB relative to the normal machine sound's RMS (over the
# anomaly's active time for local kinds). Tuned so that s = 1 is clearly visible
# to a supervised log-mel probe and the unsupervised reference finds the mix
# over s ~ U(0, 1) hard but possible (see the package doc and tests).
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


# --------------------------------------------------------------------------- #
# Machine models. Each returns the machine's sound with the normal part at RMS 1
# (anomaly components are added on top of it, so they add energy as real
# faults do). ``p`` holds the operating condition drawn by ``draw_condition``.
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
