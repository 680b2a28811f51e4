"""A small reference detector for calibrating the difficulty of an archive.

Not the project's model: a deliberately plain, unsupervised baseline. Per clip,
the mean and standard deviation over time of each log-mel band (64 bands, so
128 numbers); the anomaly score is the mean Euclidean distance to the k nearest
training clips after standardising the features on the training set. A dataset
on which this gets AUC 1.0 is too easy to tell detectors apart; one on which it
is at 0.5 may hide anomalies nobody can find.

Metrics follow the official DCASE 2023 Task 2 evaluator, per machine type
(section 00):

- AUC(source): ROC AUC over source-domain normal test clips + ALL anomalous
  test clips (both domains); AUC(target) likewise with target-domain normals;
- pAUC: ``roc_auc_score(y, s, max_fpr=0.1)`` over all test clips.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from typing import Any

import numpy as np

from asd_core.audio import decode
from asd_core.dcase import AUDIO_SUFFIXES, ClipNameError, parse_path
from asd_core.storage import Location, open_location, read_bytes

SAMPLE_RATE = 16000  # Hz


def clip_features(x: np.ndarray) -> np.ndarray:
    """``[T]`` samples at 16 kHz -> ``[128]``: per-band mean then per-band std of the
    log-mel (dB; n_fft 1024, hop 256, 64 bands): the ``knn`` model kind's features."""
    from asd_core.config import ASDConfig
    from asd_core.kinds.knn import clip_statistics

    return clip_statistics(x, ASDConfig())[0].numpy().astype(np.float64)


def knn_scores(train: np.ndarray, test: np.ndarray, k: int = 5) -> np.ndarray:
    """Mean distance of each ``test`` row to its ``k`` nearest ``train`` rows.

    ``train``: ``[N, D]``, ``test``: ``[M, D]``; features are standardised with
    the training set's mean and std first (:class:`asd_core.neighbours.NeighbourBank`,
    which the ``knn`` model kind stores). Returns ``[M]`` (higher = more anomalous).
    """
    from asd_core.neighbours import NeighbourBank

    return NeighbourBank.fit(train, k=k).score(test)


def dcase_metrics(domains: Iterable[str], labels: Iterable[int], scores: Iterable[float]) -> dict[str, float]:
    """AUC(source), AUC(target) and pAUC (max FPR 0.1) as the DCASE 2023 evaluator computes them.

    ``domains``: ``source`` / ``target`` per test clip; ``labels``: 1 = anomaly.
    A metric is NaN when its subset lacks one of the two classes.
    """
    from sklearn.metrics import roc_auc_score

    d = np.asarray(list(domains))
    y = np.asarray(list(labels), dtype=int)
    s = np.asarray(list(scores), dtype=float)
    out: dict[str, float] = {}
    for dom in ("source", "target"):
        sel = (y == 1) | (d == dom)
        ok = len(set(y[sel].tolist())) == 2
        out[f"auc_{dom}"] = float(roc_auc_score(y[sel], s[sel])) if ok else float("nan")
    out["pauc"] = float(roc_auc_score(y, s, max_fpr=0.1)) if len(set(y.tolist())) == 2 else float("nan")
    return out


def _list_clips(loc: Location, machine_type: str, split: str) -> list[str]:
    folder = posixpath.join(loc.path, machine_type, split)
    if not loc.fs.exists(folder):
        return []
    paths = [p for p in loc.fs.ls(folder, detail=False) if p.lower().endswith(AUDIO_SUFFIXES)]
    return sorted(paths)


def machine_types_in(loc: Location) -> list[str]:
    """The machine types an archive holds: folders that have a ``train`` or ``test`` folder."""
    types = []
    for p in sorted(loc.fs.ls(loc.path, detail=False)):
        name = posixpath.basename(p.rstrip("/"))
        if loc.fs.isdir(p) and any(loc.fs.exists(posixpath.join(p, sp)) for sp in ("train", "test")):
            types.append(name)
    return types


def evaluate_reference(
    archive_uri: str,
    machines: Iterable[str] | None = None,
    endpoint_url: str | None = None,
    k: int = 5,
) -> list[dict[str, Any]]:
    """Run the reference detector on every machine type of a labelled DCASE-layout archive.

    Trains on all ``train`` clips (source and target normals) and scores the
    ``test`` clips. Returns one dict per machine type: ``machine_type``,
    ``n_train``, ``n_test``, ``auc_source``, ``auc_target``, ``pauc``.
    """
    loc = open_location(archive_uri, endpoint_url)
    types = list(machines) if machines is not None else machine_types_in(loc)
    rows = []
    for mt in types:
        feats: dict[str, list[np.ndarray]] = {"train": [], "test": []}
        meta: list[tuple[str, int]] = []
        for split in ("train", "test"):
            for path in _list_clips(loc, mt, split):
                try:
                    clip = parse_path(path)
                except ClipNameError:
                    continue
                if split == "test" and not clip.is_labelled:
                    continue
                x = decode(read_bytes(loc, path), SAMPLE_RATE)
                feats[split].append(clip_features(x))
                if split == "test":
                    meta.append((clip.domain or "", int(bool(clip.is_anomaly))))
        if not feats["train"] or not feats["test"]:
            raise ValueError(f"{loc.uri_of(posixpath.join(loc.path, mt))}: needs labelled train and test clips")
        scores = knn_scores(np.stack(feats["train"]), np.stack(feats["test"]), k)
        row: dict[str, Any] = {"machine_type": mt, "n_train": len(feats["train"]), "n_test": len(meta)}
        row.update(dcase_metrics([m[0] for m in meta], [m[1] for m in meta], scores))
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`evaluate_reference` rows, with the harmonic mean."""
    lines = [f"{'machine_type':<12} {'train':>5} {'test':>5} {'AUC(src)':>9} {'AUC(tgt)':>9} {'pAUC':>7}"]
    vals = []
    for r in rows:
        lines.append(
            f"{r['machine_type']:<12} {r['n_train']:>5} {r['n_test']:>5} "
            f"{r['auc_source']:>9.3f} {r['auc_target']:>9.3f} {r['pauc']:>7.3f}"
        )
        vals += [r["auc_source"], r["auc_target"], r["pauc"]]
    vals = [v for v in vals if np.isfinite(v) and v > 0]
    if vals:
        hmean = len(vals) / sum(1.0 / v for v in vals)
        lines.append(f"{'hmean':<12} {'':>5} {'':>5} {hmean:>9.3f}")
    return "\n".join(lines)
