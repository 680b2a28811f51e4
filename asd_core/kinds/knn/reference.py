"""The knn kind as a quick reference detector, for calibrating the difficulty of an
archive (``asd synth --reference``) and for the studies in ``bench/``.

Per clip the log-mel statistics of :func:`.features.clip_statistics`; the score is the
distance to the nearest training clips of each domain after standardising on them,
the smallest over the domains (:class:`asd_core.neighbours.DomainBanks`, what the knn
kind stores by default). Listing comes
from :mod:`asd_core.catalog`, metrics from :mod:`asd_core.metrics` (the official
evaluator's). A dataset on which this gets AUC 1.0 is too easy to tell detectors apart;
one on which it is at 0.5 may hide anomalies nobody can find.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from ...audio import decode
from ...catalog import list_archive
from ...metrics import gamma_threshold, section_metrics
from ...neighbours import DomainBanks
from ...stages import FeatureConfig
from ...storage import open_location, read_bytes
from .features import clip_statistics

_FEATURES = FeatureConfig()


def clip_features(wav: np.ndarray) -> np.ndarray:
    """``[T]`` samples at 16 kHz -> ``[2 * n_mels]`` float64 clip statistics."""
    return clip_statistics(wav, _FEATURES)[0].numpy().astype(np.float64)


def evaluate_reference(
    archive_uri: str,
    machines: Iterable[str] | None = None,
    endpoint_url: str | None = None,
    k: int = 5,
) -> list[dict[str, Any]]:
    """Fit the reference on every machine type's normal ``train`` clips of a labelled
    DCASE-layout archive and score its labelled ``test`` clips.

    Returns one dict per machine type: ``machine_type``, ``n_train``, ``n_test``,
    ``auc_source``, ``auc_target``, ``pauc`` and ``metrics`` (the
    :class:`asd_core.metrics.SectionMetrics`; decisions at the gamma threshold of the
    training clips' leave-one-out scores).
    """
    loc = open_location(archive_uri, endpoint_url)
    listed = list_archive(loc, split=None, machines=list(machines) if machines is not None else None)
    by_type: dict[str, dict[str, list]] = defaultdict(lambda: {"train": [], "test": []})
    for c in listed:
        if not c.ok or c.clip is None or (c.clip.split == "test" and not c.clip.is_labelled):
            continue
        by_type[c.machine_type][c.clip.split].append(c)
    rows = []
    for mt in sorted(by_type):
        train, test = by_type[mt]["train"], by_type[mt]["test"]
        if not train or not test:
            raise ValueError(f"{loc.join(mt).uri}: needs labelled train and test clips")

        def feats(clips):
            return np.stack([clip_features(decode(read_bytes(loc, c.path), _FEATURES.sample_rate)) for c in clips])

        train_feats = feats(train)
        bank = DomainBanks.fit(train_feats, [c.clip.domain for c in train], k=k)
        threshold = gamma_threshold(bank.score(train_feats, self_domain=bank.domain))
        scores = bank.score(feats(test))
        y = [int(bool(c.clip.is_anomaly)) for c in test]
        m = section_metrics(mt, "00", y, scores, [c.clip.domain or "" for c in test], (scores > threshold).astype(int))
        rows.append({"machine_type": mt, "n_train": len(train), "n_test": len(test), "auc_source": m.auc_source,
                     "auc_target": m.auc_target, "pauc": m.pauc, "metrics": m})
    return rows
