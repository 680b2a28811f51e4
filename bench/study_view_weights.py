"""How much each view weighs in ``knn_err_stats``: the error profile (192 numbers) and
the clip statistics (128) are standardised per column and joined, so the profile
weighs 192/128 times as much in the distance. Re-scores the study's saved views
(``bench.study_unet --views-dir``) with the statistics block scaled by ``w`` (1 = the
shipped rule; ``equal`` = each view weighs the same) in the same per-domain banks.

    python -m bench.study_view_weights VIEWS_DIR [--chosen ToyCar,ToyTrain,bearing,fan,valve]
"""

from __future__ import annotations

import argparse
import glob
import os

import numpy as np

from bench.study_unet import hmean, metrics


def domain_banks(tr: np.ndarray, te: np.ndarray, doms: list[str], k: int = 5) -> np.ndarray:
    """Per-domain banks as :class:`asd_core.neighbours.DomainBanks` (``k_d = min(k,
    n_d // 10)``, smallest over domains), on features already scaled."""
    names = sorted(set(doms))
    idx = np.array([names.index(d) for d in doms])
    best = np.full(len(te), np.inf)
    for i in range(len(names)):
        b = tr[idx == i]
        kd = min(k, max(1, len(b) // 10))
        d = np.sqrt(((te[:, None, :] - b[None]) ** 2).sum(-1))
        best = np.minimum(best, np.sort(d, 1)[:, :kd].mean(1))
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.study_view_weights")
    p.add_argument("views_dir")
    p.add_argument("--chosen", default="ToyCar,ToyTrain,bearing,fan,valve")
    args = p.parse_args(argv)
    res: dict[str, dict[str, list]] = {}
    for f in sorted(glob.glob(os.path.join(args.views_dir, "*_base.npz"))):
        mt = os.path.basename(f)[:-4].rsplit("_s", 1)[0]
        z = np.load(f)
        doms = list(z["train_domains"])

        def block(keys, z=z):
            a = np.concatenate([z["tr_" + k] for k in keys], 1)
            b = np.concatenate([z["te_" + k] for k in keys], 1)
            mu, sd = a.mean(0), a.std(0) + 1e-6
            return (a - mu) / sd, (b - mu) / sd

        err, stats = block(["err_mean", "err_max", "err_tstd"]), block(["stats"])
        weights = {"1 (shipped)": 1.0, "equal": np.sqrt(err[0].shape[1] / stats[0].shape[1]),
                   "2": 2**0.5, "0.5": 0.5**0.5}
        for name, w in weights.items():
            s = domain_banks(np.concatenate([err[0], w * stats[0]], 1), np.concatenate([err[1], w * stats[1]], 1), doms)
            m = metrics(z["y"], z["d"], s)
            res.setdefault(name, {}).setdefault(mt, []).append([m["auc_source"], m["auc_target"], m["pauc"]])
    types = sorted(next(iter(res.values())))
    chosen = args.chosen.split(",")
    held = [t for t in types if t not in chosen]
    print("| statistics weight | " + " | ".join(types) + " | official, chosen | official, held out | official |")
    print("|---|" + "---|" * (len(types) + 3))
    for name, r in res.items():
        cells = [f"{np.mean([hmean(v) for v in r[t]]):.3f} ± {np.std([hmean(v) for v in r[t]]):.3f}" for t in types]
        off = lambda ts, r=r: hmean([x for t in ts for v in r[t] for x in v])  # noqa: E731
        print(f"| {name} | " + " | ".join(cells) + f" | {off(chosen):.3f} | {off(held):.3f} | {off(types):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
