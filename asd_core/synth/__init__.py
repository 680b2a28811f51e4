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

Layout: :mod:`.signals` (generic signal building blocks), :mod:`.machines`
(one sound model per machine type, severity ranges), :mod:`.conditions`
(operating conditions, background, rendering one clip), :mod:`.archive`
(planning and writing archives).
"""

from asd_core.synth.archive import (
    ARCHIVE_SIZES,
    ClipPlan,
    clip_seed,
    describe_size,
    generate_archive,
    plan_archive,
    render_plan,
)
from asd_core.synth.conditions import ANOMALY_KINDS, LEVEL_DBFS, Condition, draw_condition, render, synth_clip
from asd_core.synth.machines import MACHINE_TYPES, SEVERITY, VALVE_PATTERNS

__all__ = [
    # archive
    "ARCHIVE_SIZES",
    "ClipPlan",
    "clip_seed",
    "describe_size",
    "generate_archive",
    "plan_archive",
    "render_plan",
    # conditions
    "ANOMALY_KINDS",
    "LEVEL_DBFS",
    "Condition",
    "draw_condition",
    "render",
    "synth_clip",
    # machines
    "MACHINE_TYPES",
    "SEVERITY",
    "VALVE_PATTERNS",
]
