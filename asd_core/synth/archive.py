"""Synthetic archives: planning every clip (names, seeds) and writing the WAV files.

Each clip's seed is derived from (seed, machine type, split, domain, label,
index), so an archive is reproducible clip by clip.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from asd_core.audio import encode_wav
from asd_core.dcase import ClipName
from asd_core.progress import Progress
from asd_core.storage import ensure_bucket, open_location, write_bytes
from asd_core.synth.conditions import draw_condition, synth_clip
from asd_core.synth.machines import _RENDER, MACHINE_TYPES

log = logging.getLogger("asd.synth")

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
    ``progress``: True shows a bar in a terminal and a log line every 30 s
    otherwise (:class:`asd_core.progress.Progress`), a callable gets
    ``(done, total, clips_per_s)``, False is silent.

    Also writes ``<out_uri>/synth_manifest.csv`` (path, machine type, split,
    domain, label, anomaly kind, severity, seed): the ground truth per kind.

    Returns ``{"out_uri", "clips", "per_type", "bytes", "seconds", "clips_per_s"}``.
    """
    plans = plan_archive(machines, train_source, train_target, test, seconds, seed)
    loc = open_location(out_uri, endpoint_url)
    ensure_bucket(loc)
    report = progress if callable(progress) else None
    bar = Progress("synth", len(plans), "clips", log=log) if progress is True else None
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
        if bar is not None:
            bar.update(1)
        now = time.perf_counter()
        if report and (now - last >= 2.0 or i == len(plans)):
            report(i, len(plans), i / max(now - t0, 1e-9))
            last = now
    write_bytes(loc, f"{loc.path}/synth_manifest.csv", ("\n".join(rows) + "\n").encode())
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t0
    return {
        "out_uri": loc.uri,
        "clips": len(plans),
        "per_type": per_type,
        "bytes": total_bytes,
        "seconds": elapsed,
        "clips_per_s": len(plans) / max(elapsed, 1e-9),
    }
