"""Detection quality of the U-Net on generated data, next to the kNN reference.

    python -m bench.bench_detection valve [--train-source 60] [--set target_share=0.5 ...]

Renders one machine type's synthetic clips in memory (no files), trains the tiny
preset (or ``--preset``) with ``asd_core.detector.train_type``, scores the test clips
and prints AUC(source), AUC(target), pAUC, the mean score per domain and label, the
AUC per anomaly kind, for the mean-over-tiles score, the max-over-tiles score and the
reference detector on the same clips. Runs without Ray.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from asd_core.config import parse_overrides, preset
from asd_core.detector import Scorer, train_type
from asd_core.kinds.knn.reference import clip_features
from asd_core.kinds.unet.scoring import score_tiles
from asd_core.metrics import section_metrics
from asd_core.neighbours import NeighbourBank
from asd_core.synth import plan_archive, render_plan

DEFAULTS = {"epochs": 12, "max_train_tiles": 600}  # the in-process settings of the README's table


def report(name: str, plans, y: np.ndarray, d: np.ndarray, s: np.ndarray) -> None:
    m = section_metrics("x", "00", y, s, d, (s > np.median(s)).astype(int))
    means = {
        f"{dom}/{'anomaly' if lab else 'normal'}": round(float(s[(d == dom) & (y == lab)].mean()), 3)
        for dom in ("source", "target")
        for lab in (0, 1)
    }
    kinds = {}
    for kind in sorted({p.anomaly for p in plans if p.anomaly}):
        sel = np.array([p.anomaly in (kind, None) for p in plans])
        kinds[kind] = round(float(roc_auc_score(y[sel], s[sel])), 3)
    print(f"{name:9s} AUC(s) {m.auc_source:.3f}  AUC(t) {m.auc_target:.3f}  pAUC {m.pauc:.3f}  {means}  {kinds}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("machine_type")
    p.add_argument("--train-source", type=int, default=60)
    p.add_argument("--train-target", type=int, default=6)
    p.add_argument("--test", type=int, default=10, help="test clips per domain and label")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    cfg = preset(args.preset, {**DEFAULTS, **parse_overrides(args.set)})
    plans = plan_archive([args.machine_type], args.train_source, args.train_target, args.test, 10.0, args.seed)
    train = [q for q in plans if q.name.split == "train"]
    test = [q for q in plans if q.name.split == "test"]
    t0 = time.perf_counter()
    w_train, w_test = [render_plan(q) for q in train], [render_plan(q) for q in test]
    print(f"rendered {len(plans)} clips in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    tt = train_type(w_train, cfg, domains=[q.name.domain for q in train])
    print(f"trained in {time.perf_counter() - t0:.0f} s; losses {[round(x, 3) for x in tt.summary['losses']]}")
    mt = args.machine_type
    scorer = Scorer({mt: tt.artifact(mt, "bench")})
    det = scorer.detectors[mt]
    per_tile = [score_tiles(det.model, scorer.features(mt, w), det.masks).numpy() for w in w_test]
    y = np.array([q.name.label == "anomaly" for q in test], dtype=int)
    d = np.array([q.name.domain for q in test])
    report("mean", test, y, d, np.array([t.mean() for t in per_tile]))
    report("max", test, y, d, np.array([t.max() for t in per_tile]))
    ref = NeighbourBank.fit(np.stack([clip_features(w) for w in w_train]), k=5).score(
        np.stack([clip_features(w) for w in w_test]))
    report("knn-ref", test, y, d, ref)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
