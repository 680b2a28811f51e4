"""What makes the U-Net find broken machines: scoring rules and training variants,
measured on the synthetic development set next to the kNN reference and the official
autoencoder baseline, on the same clips.

    python -m bench.study_unet --machines fan,valve --seeds 0,1,2 --out study.jsonl \\
        [--variant name:key=value,key=value ...] [--train-source 150] [--test 50]

Per machine type and seed: renders the clips in memory (no files; the seed changes
both the clips and the models), trains one U-Net per variant (tiny preset plus the
variant's overrides) and scores train and test clips once, keeping per-tile error
maps and encoder features, so every scoring rule is evaluated on the same model:

- ``mse``: the report's mean masked MSE (over masks, then tiles); ``mse_max``: max
  over tiles;
- ``zerr``: log error per mel band, z-scored against the training clips, mean z^2;
- ``knn_err``: k-NN distance (k=5; ``_k1``: k=1) of the log error per band (mean
  and max over tiles) to the training clips'; ``knn_err3`` adds the error's spread
  over time; ``knn_err_domains``, ``knn_err+stats_domains``,
  ``knn_err+stats+mod_domains`` and ``knn_err+stats+env_domains`` (the shipped
  default) the same in per-domain banks, joined with the clip's statistics and with
  the modulation spectrum of its tiles or the envelope spectrum of its waveform;
- ``knn_enc``: k-NN distance of the encoder's features (each level's channels x
  bands, mean and std over time, averaged over tiles); ``knn_enc0`` the first level
  only (ConvIn), ``knn_encb`` the bottleneck only, ``knn_enc0_err`` ConvIn + the
  error profile.

References on the same clips: ``knn-ref`` (log-mel mean/std per band, k=5) and the
baseline autoencoder (``ae-mse``, ``ae-maha``). One JSON line per (type, seed,
variant, rule) goes to ``--out``; the summary table is printed at the end
(``--summarise FILE`` prints it again from a file).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np
import torch

from asd_core.config import parse_overrides, preset
from asd_core.detector import Scorer, train_type
from asd_core.features import envelope_spectrum
from asd_core.kinds.knn.features import segments
from asd_core.kinds.knn.reference import clip_features
from asd_core.kinds.unet.kind import error_profiles, modulation_spectra, tile_statistics
from asd_core.kinds.unet.masks import RandomMaskSource
from asd_core.kinds.unet.scoring import score_tiles
from asd_core.metrics import section_metrics
from asd_core.neighbours import DomainBanks, NeighbourBank
from asd_core.runtime import autocast, prepare_input
from asd_core.synth import MACHINE_TYPES, plan_archive, render_plan

STUDY_DEFAULTS = {"epochs": 10, "max_train_tiles": 1500, "precision": "fp32"}


def hmean(vals) -> float:
    v = [x for x in vals if np.isfinite(x) and x > 0]
    return len(v) / sum(1 / x for x in v) if v else float("nan")


@torch.inference_mode()
def encoder_levels(model, tiles: torch.Tensor, cfg) -> list[torch.Tensor]:
    """``[N, H, W]`` normalised tiles -> per encoder level ``[N, 2 * C * F]``: channels x
    bands, mean and std over time."""
    out: list[list[torch.Tensor]] = []
    for start in range(0, tiles.shape[0], 256):
        x = prepare_input(tiles[start : start + 256, None], cfg.model.channels_last)
        with autocast("cpu", cfg.model.precision):
            feats = model.encode(x)
        for i, f in enumerate(feats):
            f = f.float()
            if len(out) <= i:
                out.append([])
            out[i].append(torch.cat([f.mean(-1).flatten(1), f.std(-1).flatten(1)], 1))
    return [torch.cat(o) for o in out]


def unet_views(tt, wavs, cfg, masks) -> dict[str, np.ndarray]:
    """Per clip: report score, max-tile score, the band error profile of the shipped
    ``knn_err`` rule in its three parts (log mean and max over tiles, spread over time),
    encoder features per level (mean over tiles), and the shipped rule's other two views
    of the normalised tiles: their statistics and their modulation spectrum."""
    scorer = Scorer({"x": tt.artifact("x")})
    model = scorer.detectors["x"].model
    tiles = [scorer.features("x", w) for w in wavs]
    counts = [t.shape[0] for t in tiles]
    allt = torch.cat(tiles)
    per_tile, maps = score_tiles(
        model, allt, masks, forward_batch=cfg.score.forward_batch, fill=cfg.masks.fill,
        precision=cfg.model.precision, channels_last=cfg.model.channels_last, error_maps=True,
    )
    views: dict[str, list] = defaultdict(list)
    views["tstats"], views["mod"] = list(tile_statistics(tiles)), list(modulation_spectra(tiles))
    views["env"] = [envelope_spectrum(w, cfg.features.sample_rate) for w in wavs]
    for k, part in zip(("err_mean", "err_max", "err_tstd"), np.split(error_profiles(maps, counts), 3, axis=1),
                       strict=True):
        views[k] = list(part)
    levels = encoder_levels(model, allt, cfg)
    off = 0
    for c in counts:
        sl = slice(off, off + c)
        off += c
        views["mse"].append(float(per_tile[sl].mean()))
        views["mse_max"].append(float(per_tile[sl].max()))
        for i, lv in enumerate(levels):
            views[f"enc{i}"].append(lv[sl].mean(0).numpy())
    return {k: np.asarray(v) for k, v in views.items()}


def knn(tr: np.ndarray, te: np.ndarray, k: int) -> np.ndarray:
    return NeighbourBank.fit(tr, k=k).score(te)


def rule_scores(tr: dict[str, np.ndarray], te: dict[str, np.ndarray], domains: list[str]) -> dict[str, np.ndarray]:
    """Every scoring rule of the study from the train and test clips' views
    (``domains``: of the training clips, in order)."""
    out = {"mse": te["mse"], "mse_max": te["mse_max"]}
    err3 = ["err_mean", "err_max", "err_tstd"]
    cat3 = np.concatenate([tr[k] for k in err3], 1), np.concatenate([te[k] for k in err3], 1)
    # the shipped rule (asd_core.kinds.unet, score.rule=knn_err): per-domain banks
    out["knn_err_domains"] = DomainBanks.fit(cat3[0], domains, k=5).score(cat3[1])
    if "stats" in tr:  # both views: the error profile and the clip's log-mel statistics
        both = np.concatenate([cat3[0], tr["stats"]], 1), np.concatenate([cat3[1], te["stats"]], 1)
        out["knn_err+stats_domains"] = DomainBanks.fit(both[0], domains, k=5).score(both[1])  # standardised, joined
        out["fuse_z_err_stats"] = _z_fusion([(cat3[0], cat3[1]), (tr["stats"], te["stats"])], domains)
        out["fuse_ratio_err_stats"] = _z_fusion([(cat3[0], cat3[1]), (tr["stats"], te["stats"])], domains, ratio=True)
    for third in ("mod", "env"):  # score.rule=knn_err_stats_mod / _env: a third view beside the first two
        if third in tr:
            three = [*err3, "tstats", third]
            out[f"knn_err+stats+{third}_domains"] = DomainBanks.fit(
                np.concatenate([tr[k] for k in three], 1), domains, k=5).score(np.concatenate([te[k] for k in three], 1))
    encs = sorted(k for k in tr if k.startswith("enc"))
    cat_e = np.concatenate([tr[k] for k in encs], 1), np.concatenate([te[k] for k in encs], 1)
    out["knn_enc_domains"] = DomainBanks.fit(cat_e[0], domains, k=5).score(cat_e[1])
    mu, sd = tr["err_mean"].mean(0), tr["err_mean"].std(0) + 1e-6
    out["zerr"] = (((te["err_mean"] - mu) / sd) ** 2).mean(1)
    cat = lambda v, keys: np.concatenate([v[k] for k in keys], 1)  # noqa: E731
    err = ["err_mean", "err_max"]
    out["knn_err"] = knn(cat(tr, err), cat(te, err), 5)
    out["knn_err_k1"] = knn(cat(tr, err), cat(te, err), 1)
    err3 = ["err_mean", "err_max", "err_tstd"]
    out["knn_err3"] = knn(cat(tr, err3), cat(te, err3), 5)
    encs = sorted(k for k in tr if k.startswith("enc"))
    out["knn_enc"] = knn(cat(tr, encs), cat(te, encs), 5)
    out["knn_enc_k1"] = knn(cat(tr, encs), cat(te, encs), 1)
    out["knn_enc0"] = knn(tr["enc0"], te["enc0"], 5)
    out["knn_enc0_k1"] = knn(tr["enc0"], te["enc0"], 1)
    out["knn_encb"] = knn(tr[encs[-1]], te[encs[-1]], 5)
    out["knn_enc0_err"] = knn(cat(tr, ["enc0", *err]), cat(te, ["enc0", *err]), 5)
    return out


def _z_fusion(views: list[tuple[np.ndarray, np.ndarray]], domains: list[str], ratio: bool = False) -> np.ndarray:
    """Sum over views of each view's per-domain-bank distance, z-scored against the
    training clips' own (leave-one-out) distances in that view (``ratio``: divided by
    their mean instead, which keeps the score positive)."""
    total = 0.0
    for tr, te in views:
        bank = DomainBanks.fit(tr, domains, k=5)
        own = bank.score(tr, self_domain=bank.domain)
        s = bank.score(te)
        total = total + (s / own.mean() if ratio else (s - own.mean()) / (own.std() + 1e-9))
    return total


def metrics(y, d, s) -> dict[str, float]:
    m = section_metrics("x", "00", y, s, d, np.zeros_like(y))
    return {"auc_source": m.auc_source, "auc_target": m.auc_target, "pauc": m.pauc}


def run_one(mt: str, seed: int, variants: dict[str, dict], args, emit) -> None:
    plans = plan_archive([mt], args.train_source, args.train_target, args.test, 10.0, seed)
    train = [q for q in plans if q.name.split == "train"]
    test = [q for q in plans if q.name.split == "test"]
    t0 = time.perf_counter()
    w_train, w_test = [render_plan(q) for q in train], [render_plan(q) for q in test]
    dom_train = [q.name.domain for q in train]
    y = np.array([q.name.label == "anomaly" for q in test], dtype=int)
    d = np.array([q.name.domain for q in test])
    base = {"machine_type": mt, "seed": seed, "n_train": len(train), "n_test": len(test)}
    print(f"[{mt} seed {seed}] rendered {len(plans)} clips in {time.perf_counter() - t0:.0f} s", flush=True)

    stats_tr = np.stack([clip_features(w) for w in w_train])
    stats_te = np.stack([clip_features(w) for w in w_test])
    if not args.skip_refs:
        t0 = time.perf_counter()
        s = NeighbourBank.fit(stats_tr, k=5).score(stats_te)
        emit({**base, "variant": "ref", "rule": "knn-ref", **metrics(y, d, s), "seconds": time.perf_counter() - t0})
        s = DomainBanks.fit(stats_tr, dom_train, k=5).score(stats_te)  # the knn kind's default since 2026-11-30
        emit({**base, "variant": "ref", "rule": "knn-ref-domains", **metrics(y, d, s)})
        seg = NeighbourBank.fit(torch.cat([segments(w) for w in w_train]).numpy(), k=5)  # the knn kind's frame level
        s = np.array([seg.score(segments(w).numpy()).max() for w in w_test])
        emit({**base, "variant": "ref", "rule": "knn-frame", **metrics(y, d, s)})
    if not args.skip_refs and not args.skip_ae:
        cfg = preset("tiny", {"kind": "baseline-ae", "seed": seed})
        t0 = time.perf_counter()
        tt = train_type(w_train, cfg, domains=dom_train)
        for rule, score in (("ae-mse", "mse"), ("ae-maha", "mahalanobis")):
            art = tt.artifact(mt)
            art.config = cfg.override({"ae_score": score})
            sc = Scorer({mt: art})
            s = np.array([sc.score_wav(mt, w).score for w in w_test])
            emit({**base, "variant": "ref", "rule": rule, **metrics(y, d, s), "seconds": time.perf_counter() - t0})

    for vname, overrides in variants.items():
        cfg = preset(args.preset, {**STUDY_DEFAULTS, "seed": seed, **overrides})
        t0 = time.perf_counter()
        tt = train_type(w_train, cfg, domains=dom_train)
        t_train = time.perf_counter() - t0
        masks = RandomMaskSource(args.masks, cfg.masks, cfg.score.mask_seed).masks(
            cfg.features.n_mels, cfg.features.tile_frames
        )
        t0 = time.perf_counter()
        tr_v, te_v = unet_views(tt, w_train, cfg, masks), unet_views(tt, w_test, cfg, masks)
        tr_v["stats"], te_v["stats"] = stats_tr, stats_te
        if args.views_dir:
            np.savez_compressed(
                f"{args.views_dir}/{mt}_s{seed}_{vname}.npz", y=y, d=d, train_domains=np.array(dom_train),
                **{f"tr_{k}": v for k, v in tr_v.items()}, **{f"te_{k}": v for k, v in te_v.items()},
            )
        for rule, s in rule_scores(tr_v, te_v, dom_train).items():
            emit({**base, "variant": vname, "rule": rule, **metrics(y, d, s), "train_s": t_train,
                  "score_s": time.perf_counter() - t0, "final_loss": tt.summary["losses"][-1]})


def rescore(views_dir: str, train_target: int) -> list[dict]:
    """Rule rows recomputed from the ``.npz`` views a run saved (no training)."""
    import glob
    import os

    rows = []
    for f in sorted(glob.glob(os.path.join(views_dir, "*_s*_*.npz"))):
        stem = os.path.basename(f)[:-4]
        mt, rest = stem.rsplit("_s", 1)
        seed, vname = rest.split("_", 1)
        z = np.load(f)
        tr = {k[3:]: z[k] for k in z.files if k.startswith("tr_")}
        te = {k[3:]: z[k] for k in z.files if k.startswith("te_")}
        n = len(tr["mse"])
        doms = list(z["train_domains"]) if "train_domains" in z.files else (
            ["source"] * (n - train_target) + ["target"] * train_target)  # plan_archive's order
        for rule, s in rule_scores(tr, te, doms).items():
            rows.append({"machine_type": mt, "seed": int(seed), "variant": vname, "rule": rule,
                         **metrics(z["y"], z["d"], s)})
    return rows


PLOTTED = {
    ("base", "mse"): "U-Net, report score (mean masked MSE)",
    ("base", "knn_err_domains"): "U-Net, default score (knn_err)",
    ("ref", "knn-ref"): "kNN on log-mel statistics",
    ("ref", "ae-maha"): "baseline autoencoder (Mahalanobis)",
}


def plot(rows: list[dict], path: str) -> None:
    """Bars per machine type: mean over seeds of hmean(AUC(s), AUC(t), pAUC) of the
    report's score, the default score and the two references."""
    from matplotlib.figure import Figure

    rows = list({(r["machine_type"], r["seed"], r["variant"], r["rule"]): r for r in rows}.values())
    types = sorted({r["machine_type"] for r in rows})
    fig = Figure(figsize=(9, 4))
    ax = fig.add_subplot()
    width = 0.8 / len(PLOTTED)
    for i, (key, label) in enumerate(PLOTTED.items()):
        vals, errs = [], []
        for t in types:
            v = [hmean([r["auc_source"], r["auc_target"], r["pauc"]]) for r in rows
                 if (r["variant"], r["rule"]) == key and r["machine_type"] == t]
            vals.append(np.mean(v) if v else np.nan)
            errs.append(np.std(v) if len(v) > 1 else 0.0)
        ax.bar(np.arange(len(types)) + (i - 1.5) * width, vals, width, yerr=errs, label=label, capsize=2)
    ax.set_xticks(np.arange(len(types)), types)
    ax.set_ylim(0.4, 1.0)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set_ylabel("hmean(AUC(s), AUC(t), pAUC)")
    ax.set_title("Synthetic development set: mean over seeds (bars: std)")
    ax.legend(fontsize=7, loc="lower right")
    fig.savefig(path, dpi=110, bbox_inches="tight")


def summarise(rows: list[dict]) -> str:
    rows = list({(r["machine_type"], r["seed"], r["variant"], r["rule"]): r for r in rows}.values())  # last wins
    by = defaultdict(lambda: defaultdict(list))  # (variant, rule) -> type -> [hmean per seed]
    allv = defaultdict(list)
    for r in rows:
        key = (r["variant"], r["rule"])
        by[key][r["machine_type"]].append(hmean([r["auc_source"], r["auc_target"], r["pauc"]]))
        allv[key] += [r["auc_source"], r["auc_target"], r["pauc"]]
    types = sorted({r["machine_type"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    ref = by.get(("ref", "knn-ref-domains"), by.get(("ref", "knn-ref"), {}))
    lines = [f"hmean(AUC(s), AUC(t), pAUC) per type, mean over seeds {seeds}; 'official' = hmean of all values; "
             "'wins' = types where the rule's per-type hmean >= knn-ref-domains'",
             f"{'variant/rule':<28}" + "".join(f"{t[:8]:>9}" for t in types) + f"{'official':>10}{'wins':>6}"]
    for key in sorted(by, key=lambda k: -hmean(allv[k])):
        per = [np.mean(by[key][t]) if by[key].get(t) else float("nan") for t in types]
        wins = sum(1 for t, v in zip(types, per, strict=True) if ref.get(t) and v >= np.mean(ref[t]))
        lines.append(f"{key[0] + '/' + key[1]:<28}" + "".join(f"{v:>9.3f}" for v in per)
                     + f"{hmean(allv[key]):>10.3f}{wins:>6}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--machines", default=",".join(MACHINE_TYPES))
    p.add_argument("--seeds", default="0")
    p.add_argument("--train-source", type=int, default=100)
    p.add_argument("--train-target", type=int, default=10)
    p.add_argument("--test", type=int, default=50, help="test clips per domain and label")
    p.add_argument("--masks", type=int, default=8, help="scoring masks per tile")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=V,KEY=V")
    p.add_argument("--skip-refs", action="store_true")
    p.add_argument("--skip-ae", action="store_true", help="no autoencoder reference (the slowest one)")
    p.add_argument("--no-base", action="store_true", help="only the --variant configurations")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: other work shares the machine)")
    p.add_argument("--out", default="study.jsonl")
    p.add_argument("--views-dir", default=None, help="save each model's clip views (.npz) to re-score offline")
    p.add_argument("--summarise", default=None, metavar="FILE")
    p.add_argument("--plot", default=None, metavar="PNG", help="with --summarise: AUC per type, four detectors")
    p.add_argument("--rescore", default=None, metavar="VIEWS_DIR",
                   help="with --summarise: the U-Net rows recomputed from saved views with today's rules")
    args = p.parse_args(argv)
    if args.summarise:
        rows = [json.loads(x) for x in open(args.summarise)]
        if args.rescore:
            rows = [r for r in rows if r["variant"] == "ref"] + rescore(args.rescore, args.train_target)
        print(summarise(rows))
        if args.plot:
            plot(rows, args.plot)
            print(f"plot written to {args.plot}")
        return 0
    torch.set_num_threads(args.threads)
    variants = {} if args.no_base else {"base": {}}
    for v in args.variant:
        name, _, kv = v.partition(":")
        variants[name] = parse_overrides([x for x in kv.split(",") if x])
    rows = []
    with open(args.out, "a") as f:
        def emit(row):
            rows.append(row)
            f.write(json.dumps(row) + "\n")
            f.flush()
            print(f"  {row['variant']:>10} {row['rule']:<13} AUC(s) {row['auc_source']:.3f} "
                  f"AUC(t) {row['auc_target']:.3f} pAUC {row['pauc']:.3f}", flush=True)

        for seed in [int(s) for s in args.seeds.split(",")]:
            for mt in args.machines.split(","):
                run_one(mt, seed, variants, args, emit)
    print(summarise(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
