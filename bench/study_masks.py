"""How many scoring masks a nightly run needs: K in {1, 2, 4, ..., 256}, random masks
(prefixes of one seeded set of 256) and the balanced schedule (every patch hidden
equally often), for the report's score (mean masked MSE) and the error-profile
neighbour rule (``knn_err``).

    python -m bench.study_masks --machines valve,fan [--train-source 40] [--test 15] [--preset tiny]

Per machine type: trains one U-Net on rendered synthetic clips, scores train and test
clips once with 256 random masks while keeping the running sums at every K (so each K
is the first K masks of the 256), then the balanced schedule at small K. Prints per K
and schedule: Spearman correlation of the clip scores with K = 256, AUC(source),
AUC(target), pAUC. One JSON line per row to ``--out``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from scipy.stats import spearmanr

from asd_core.config import preset
from asd_core.detector import Scorer, train_type
from asd_core.masks import apply_mask, mask_source
from asd_core.metrics import section_metrics
from asd_core.neighbours import NeighbourBank
from asd_core.runtime import autocast, prepare_input
from asd_core.synth import plan_archive, render_plan

KS = (1, 2, 4, 8, 16, 32, 64, 256)


@torch.inference_mode()
def profiles(model, cfg, clips: list[torch.Tensor], masks: torch.Tensor, ks) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per K: (report score [C], log error profile [C, 2H]) using the first K masks."""
    out = {k: ([], []) for k in ks}
    for t in clips:  # one clip at a time: [N, H, W]
        s_err = torch.zeros_like(t)
        s_hid = torch.zeros_like(t)
        per_mask = []
        done = 0
        for k in sorted(ks):
            m = masks[done:k]  # the masks between the last checkpoint and this one
            x = t.repeat(len(m), 1, 1)
            mm = m.repeat_interleave(t.shape[0], 0)
            with autocast("cpu", cfg.model.precision):
                rec = model(prepare_input(apply_mask(x, mm, cfg.masks.fill)[:, None], cfg.model.channels_last))
            sq = (rec[:, 0].float() - x) ** 2 * mm
            sq = sq.view(len(m), t.shape[0], *t.shape[1:])
            mh = mm.view(len(m), t.shape[0], *t.shape[1:]).float()
            s_err += sq.sum(0)
            s_hid += mh.sum(0)
            per_mask.append(sq.flatten(2).sum(2) / mh.flatten(2).sum(2))  # [m, N]
            done = k
            band = (s_err / s_hid.clamp_min(1)).mean(-1)  # [N, H]
            prof = torch.cat([band.mean(0), band.max(0).values]).clamp_min(1e-8).log().numpy()
            out[k][0].append(float(torch.cat(per_mask).mean()))
            out[k][1].append(prof)
    return {k: (np.array(a), np.stack(b)) for k, (a, b) in out.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--machines", default="valve,fan")
    p.add_argument("--train-source", type=int, default=40)
    p.add_argument("--train-target", type=int, default=10)
    p.add_argument("--test", type=int, default=15, help="test clips per domain and label")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="masks_study.jsonl")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from asd_core.config import parse_overrides

    cfg = preset(args.preset, {"epochs": 10, "max_train_tiles": 1500, "precision": "fp32", **parse_overrides(args.set)})
    with open(args.out, "a") as f:
        for mt in args.machines.split(","):
            plans = plan_archive([mt], args.train_source, args.train_target, args.test, 10.0, args.seed)
            train = [q for q in plans if q.name.split == "train"]
            test = [q for q in plans if q.name.split == "test"]
            w_tr, w_te = [render_plan(q) for q in train], [render_plan(q) for q in test]
            tt = train_type(w_tr, cfg, domains=[q.name.domain for q in train])
            det = Scorer({mt: tt.artifact(mt)}).detectors[mt]
            sc = Scorer({mt: tt.artifact(mt)})
            c_tr = [sc.features(mt, w) for w in w_tr]
            c_te = [sc.features(mt, w) for w in w_te]
            y = np.array([q.name.label == "anomaly" for q in test], dtype=int)
            d = np.array([q.name.domain for q in test])
            runs = {}
            rnd = mask_source("random", 256, cfg.masks, cfg.score.mask_seed).masks(64, 64)
            p_tr, p_te = profiles(det.model, cfg, c_tr, rnd, KS), profiles(det.model, cfg, c_te, rnd, KS)
            for k in KS:
                runs[("random", k)] = (p_tr[k], p_te[k])
            for k in (4, 8, 16):
                bal = mask_source("balanced", k, cfg.masks, cfg.score.mask_seed).masks(64, 64)
                runs[("balanced", k)] = (profiles(det.model, cfg, c_tr, bal, [k])[k],
                                         profiles(det.model, cfg, c_te, bal, [k])[k])
            ref_tr, ref_te = runs[("random", 256)]
            ref_knn = NeighbourBank.fit(ref_tr[1], k=5).score(ref_te[1])
            for (sched, k), (tr, te) in runs.items():
                knn = NeighbourBank.fit(tr[1], k=5).score(te[1])
                for rule, s, r in (("mse", te[0], ref_te[0]), ("knn_err", knn, ref_knn)):
                    m = section_metrics(mt, "00", y, s, d, np.zeros_like(y))
                    row = {"machine_type": mt, "schedule": sched, "k": k, "rule": rule,
                           "spearman_to_256": float(spearmanr(s, r).statistic), "auc_source": m.auc_source,
                           "auc_target": m.auc_target, "pauc": m.pauc}
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                    print(f"{mt:<9} {sched:<9} K={k:<4} {rule:<8} rho {row['spearman_to_256']:.4f}  AUC(s) "
                          f"{m.auc_source:.3f} AUC(t) {m.auc_target:.3f} pAUC {m.pauc:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
