"""How many scoring masks a nightly run needs: K in {1, 2, 4, ..., 256} for the
report's score (``mse``, mean masked MSE) and the shipped error-profile rule
(``knn_err``, per-domain banks), with two mask schedules:

- ``random``: the first K of one seeded set of 256 random masks (what
  ``score.mask_schedule=random`` scores with at ``n_masks=K`` for K <= 256);
- ``balanced``: the library's ``BalancedMaskSource``: cycles of 4 masks in which every
  patch is hidden exactly 3 times (48 of 64), each cycle with a fresh seeded patch order.

    python -m bench.study_masks --machines fan,valve --seeds 0 --out masks.jsonl
    python -m bench.study_masks --summarise masks.jsonl [--plot docs/study_masks.png]

Per machine type and seed: renders the synthetic clips in memory, trains one tiny
U-Net and runs every mask of each schedule once over the train and test clips. Each K
is scored with up to ``--draws`` disjoint sets of K masks (masks 0..K-1, K..2K-1, ...;
the first is what ``n_masks=K`` scores with), so the K-mask noise is measured over
several draws on the same model and clips. The training clips' error profiles under
the same K masks form the ``knn_err`` bank, as in an artifact trained with
``n_masks=K``. One JSON line per (type, seed, schedule, K, rule), with one value per
draw: Spearman correlation of the test-clip scores with random K = 256, AUC(source),
AUC(target), pAUC. ``--summarise`` averages them over types, seeds and draws.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np
import torch
from scipy.stats import spearmanr

from asd_core.config import parse_overrides, preset
from asd_core.detector import Scorer, train_type
from asd_core.kinds.unet.kind import error_profiles
from asd_core.kinds.unet.masks import BalancedMaskSource, RandomMaskSource
from asd_core.kinds.unet.scoring import per_clip_mean, score_tiles
from asd_core.metrics import section_metrics
from asd_core.neighbours import DomainBanks
from asd_core.synth import MACHINE_TYPES, plan_archive, render_plan

STUDY_DEFAULTS = {"epochs": 10, "max_train_tiles": 1500, "precision": "fp32"}  # as bench.study_unet
KS = (1, 2, 4, 8, 16, 32, 64, 256)
RULES = ("mse", "knn_err")
AUC_TOL, RHO_MIN = 0.005, 0.99  # the criterion


def balanced_masks(n: int, cfg) -> torch.Tensor:
    """``n`` balanced masks (what ``score.mask_schedule=balanced`` scores with)."""
    return BalancedMaskSource(n, cfg.masks, cfg.score.mask_seed).masks(cfg.features.n_mels, cfg.features.tile_frames)


def draw_views(model, cfg, clips: list[torch.Tensor], masks: torch.Tensor, ks, max_draws: int):
    """Per K in ``ks``: for each of the first ``max_draws`` disjoint blocks of K masks
    (``masks[b*K:(b+1)*K]``, b = 0 is the first K: what ``n_masks=K`` scores with), what
    each rule reads, ``{"mse": [C], "knn_err": [C, 3H]}``, computed as the shipped kind
    does (score_tiles, error_profiles). Every mask runs once; the blocks share them."""
    counts = [int(t.shape[0]) for t in clips]
    tiles = torch.cat(clips)
    kw = dict(forward_batch=max(cfg.score.forward_batch, tiles.shape[0]), fill=cfg.masks.fill,
              precision=cfg.model.precision, channels_last=cfg.model.channels_last, error_maps=True)
    acc = {k: (0.0, 0.0, 0.0) for k in ks}  # running (score sum, error sum, hidden count) of the open block
    out = {k: [] for k in ks}
    n = min(len(masks), max(min(k * max_draws, len(masks)) for k in ks))
    for i in range(n):
        s, err = score_tiles(model, tiles, masks[i : i + 1], **kw)  # one mask: err is its squared error
        h = masks[i].float()
        for k in ks:
            if len(out[k]) == max_draws or (i // k + 1) * k > len(masks):
                continue
            a = acc[k]
            acc[k] = a = (a[0] + s, a[1] + err, a[2] + h)
            if (i + 1) % k == 0:
                out[k].append({"mse": per_clip_mean((a[0] / k).numpy(), counts),
                               "knn_err": error_profiles(a[1] / a[2].clamp_min(1.0), counts)})
                acc[k] = (0.0, 0.0, 0.0)
    return out


def run_one(mt: str, seed: int, args, emit) -> None:
    t0 = time.perf_counter()
    plans = plan_archive([mt], args.train_source, args.train_target, args.test, 10.0, seed)
    train = [q for q in plans if q.name.split == "train"]
    test = [q for q in plans if q.name.split == "test"]
    w_tr, w_te = [render_plan(q) for q in train], [render_plan(q) for q in test]
    dom_tr = [q.name.domain for q in train]
    y = np.array([q.name.label == "anomaly" for q in test], dtype=int)
    d = np.array([q.name.domain for q in test])
    cfg = preset(args.preset, {**STUDY_DEFAULTS, "seed": seed, **parse_overrides(args.set)})
    tt = train_type(w_tr, cfg, domains=dom_tr)
    sc = Scorer({mt: tt.artifact(mt)})
    model = sc.detectors[mt].model
    c_tr, c_te = [sc.features(mt, w) for w in w_tr], [sc.features(mt, w) for w in w_te]
    t_train = time.perf_counter() - t0
    hw = (cfg.features.n_mels, cfg.features.tile_frames)
    schedules = {"random": (RandomMaskSource(max(KS), cfg.masks, cfg.score.mask_seed).masks(*hw), KS),
                 "balanced": (balanced_masks(max(args.balanced) * args.balanced_draws, cfg), args.balanced)}
    scores = {}  # (schedule, K, rule) -> [draws][C]
    for sched, (masks, ks) in schedules.items():
        tr = draw_views(model, cfg, c_tr, masks, ks, args.draws)
        te = draw_views(model, cfg, c_te, masks, ks, args.draws)
        for k in ks:
            scores[sched, k, "mse"] = [v["mse"] for v in te[k]]
            scores[sched, k, "knn_err"] = [
                DomainBanks.fit(a["knn_err"], dom_tr, k=cfg.score.rule_k).score(b["knn_err"])
                for a, b in zip(tr[k], te[k], strict=True)]
    base = {"machine_type": mt, "seed": seed, "n_train": len(train), "n_test": len(test),
            "train_s": round(t_train, 1), "score_s": round(time.perf_counter() - t0 - t_train, 1)}
    for (sched, k, rule), draws in scores.items():
        ref = scores["random", max(KS), rule][0]
        per = defaultdict(list)
        for s in draws:
            m = section_metrics(mt, "00", y, s, d, np.zeros_like(y))
            per["spearman_to_256"].append(round(float(spearmanr(s, ref).statistic), 5))
            for name in ("auc_source", "auc_target", "pauc"):
                per[name].append(round(getattr(m, name), 5))
        emit({**base, "schedule": sched, "k": k, "rule": rule, **per})  # lists over draws; [0] = first K masks


def aggregate(rows: list[dict]) -> list[dict]:
    """Per (schedule, K, rule), over the (type, seed) units and the mask draws: Spearman
    (mean, min), AUC(s), AUC(t), pAUC and their mean paired difference to random K = 256;
    the share of draws whose type-mean meets the criterion; the first draw's differences."""
    rows = list({(r["machine_type"], r["seed"], r["schedule"], r["k"], r["rule"]): r for r in rows}.values())
    ref = {(r["machine_type"], r["seed"], r["rule"]): r for r in rows if (r["schedule"], r["k"]) == ("random", 256)}
    groups = defaultdict(list)
    for r in rows:
        groups[r["schedule"], r["k"], r["rule"]].append(r)
    out = []
    for (sched, k, rule), rs in sorted(groups.items(), key=lambda g: (g[0][2], g[0][0] != "random", g[0][1])):
        n = min(len(r["auc_source"]) for r in rs)
        rho = np.array([r["spearman_to_256"][:n] for r in rs])  # [units, draws]
        delta = {m: np.array([np.array(r[m][:n]) - ref[r["machine_type"], r["seed"], rule][m][0] for r in rs])
                 for m in ("auc_source", "auc_target", "pauc")}
        ok = ((rho.mean(0) >= RHO_MIN) & (np.abs(delta["auc_source"].mean(0)) <= AUC_TOL)
              & (np.abs(delta["auc_target"].mean(0)) <= AUC_TOL))  # per draw, over the units
        agg = {"schedule": sched, "k": k, "rule": rule, "units": len(rs), "draws": n,
               "rho": rho.mean(), "rho_min": rho.min(), "draws_meeting": ok.mean(),
               "first_d_auc_source": delta["auc_source"][:, 0].mean(), "first_d_auc_target": delta["auc_target"][:, 0].mean()}
        for m in delta:
            agg[m] = np.mean([r[m][:n] for r in rs])
            agg["d_" + m] = delta[m].mean()
        agg["meets"] = bool(agg["rho"] >= RHO_MIN and abs(agg["d_auc_source"]) <= AUC_TOL
                            and abs(agg["d_auc_target"]) <= AUC_TOL)
        out.append(agg)
    return out


def summarise(rows: list[dict]) -> str:
    agg = aggregate(rows)
    types = sorted({r["machine_type"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"Mean over {len(types)} types x {len(seeds)} seed(s) ({', '.join(types)}; seeds {seeds}) and over "
             "the K-mask draws; d = mean paired difference to random K = 256; meets = mean rho >= "
             f"{RHO_MIN} and |d AUC(s)|, |d AUC(t)| <= {AUC_TOL}; draws meeting = share of the draws whose "
             "type-mean meets it; first draw = the first K masks (what n_masks = K scores with)", "",
             "| rule | schedule | K | draws | rho mean (min) | AUC(s) | AUC(t) | pAUC | d AUC(s) | d AUC(t) | d pAUC "
             "| draws meeting | first draw d AUC(s) / d AUC(t) | meets |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in agg:
        lines.append(f"| {a['rule']} | {a['schedule']} | {a['k']} | {a['draws']} | {a['rho']:.4f} ({a['rho_min']:.3f}) | "
                     f"{a['auc_source']:.3f} | {a['auc_target']:.3f} | {a['pauc']:.3f} | "
                     f"{a['d_auc_source']:+.4f} | {a['d_auc_target']:+.4f} | {a['d_pauc']:+.4f} | "
                     f"{a['draws_meeting']:.0%} | {a['first_d_auc_source']:+.4f} / {a['first_d_auc_target']:+.4f} | "
                     f"{'yes' if a['meets'] else 'no'} |")
    lines.append("")
    for rule in RULES:
        for sched in ("random", "balanced"):
            ok = [a["k"] for a in agg if (a["rule"], a["schedule"]) == (rule, sched) and a["meets"] and a["k"] < 256]
            lines.append(f"cheapest K < 256 meeting the criterion, {rule}, {sched}: {min(ok) if ok else 'none'}")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    """Spearman to random K = 256 and the mean paired AUC differences, against K (means
    over types, seeds and draws)."""
    from matplotlib.figure import Figure

    agg = aggregate(rows)
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    panels = [("rho", "Spearman to random K=256"), ("d_auc_source", "AUC(source) - AUC at K=256"),
              ("d_auc_target", "AUC(target) - AUC at K=256")]
    for i, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        for rule, colour in zip(RULES, ("tab:blue", "tab:orange"), strict=True):
            for sched, style in (("random", "-o"), ("balanced", "--s")):
                pts = sorted((a["k"], a[key]) for a in agg if (a["rule"], a["schedule"]) == (rule, sched))
                if pts:
                    ax.plot(*zip(*pts, strict=True), style, color=colour, label=f"{rule}, {sched}", markersize=4)
        if key == "rho":
            ax.axhline(RHO_MIN, color="grey", linestyle=":", linewidth=0.8)
            ax.set_ylim(max(0.5, ax.get_ylim()[0]), 1.002)
        else:
            ax.axhspan(-AUC_TOL, AUC_TOL, color="grey", alpha=0.2)
            ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(KS, [str(k) for k in KS])
        ax.set_xlabel("scoring masks K")
        ax.set_title(title, fontsize=9)
    fig.axes[0].legend(fontsize=7, loc="lower right")
    types = sorted({r["machine_type"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    fig.suptitle(f"Scoring masks: mean over {len(types)} synthetic types x {len(seeds)} seed(s) and the "
                 "K-mask draws (grey: the criterion)", fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--machines", default=",".join(MACHINE_TYPES))
    p.add_argument("--seeds", default="0")
    p.add_argument("--train-source", type=int, default=20)
    p.add_argument("--train-target", type=int, default=5)
    p.add_argument("--test", type=int, default=8, help="test clips per domain and label")
    p.add_argument("--balanced", default="4,8,16", help="K of the balanced schedule (multiples of 4)")
    p.add_argument("--draws", type=int, default=16, help="disjoint mask sets per K (fewer where 256 / K is less)")
    p.add_argument("--balanced-draws", type=int, default=2, help="balanced masks made: this x the largest K")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default="masks_study.jsonl")
    p.add_argument("--summarise", default=None, metavar="FILE", help="print the table of a results file")
    p.add_argument("--plot", default=None, metavar="PNG", help="with --summarise: Spearman and AUC against K")
    args = p.parse_args(argv)
    if args.summarise:
        rows = [json.loads(x) for x in open(args.summarise)]
        print(summarise(rows))
        if args.plot:
            plot(rows, args.plot)
            print(f"plot written to {args.plot}")
        return 0
    args.balanced = tuple(int(k) for k in args.balanced.split(","))
    torch.set_num_threads(1)
    rows = []
    with open(args.out, "a") as f:
        def emit(row):
            rows.append(row)
            f.write(json.dumps(row) + "\n")
            f.flush()

        for seed in [int(s) for s in args.seeds.split(",")]:
            for mt in args.machines.split(","):
                run_one(mt, seed, args, emit)
                r = rows[-1]
                print(f"[{mt} seed {seed}] train {r['train_s']:.0f} s, score {r['score_s']:.0f} s", flush=True)
    print(summarise(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
