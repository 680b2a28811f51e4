"""Scoring results: the score-row schema, metrics from score rows, ground truth,
DCASE submission files and the metrics table (plots: :mod:`asd_core.plots`).

Pure functions over pyarrow tables / pandas frames (plus one ground-truth reader that
goes through :mod:`asd_core.storage`); no Ray. The scoring job (``jobs/score.py``)
writes rows of :data:`SCORE_SCHEMA` and the report job reads them back.

A score row answers one listed clip, whatever happened to it::

    status = "ok"     anomaly_score, decision (0/1), threshold, n_tiles set
    status = "error"  error_reason (a short code, :data:`ERROR_REASONS`) and error
                      (the message); score columns null

Metrics follow the official evaluator (see :mod:`asd_core.metrics`) over the ok rows
with a known label; the official score is the harmonic mean over every machine type
and section.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .holdout import HoldOut, relative
from .metrics import SectionMetrics, official_score, section_metrics
from .paths import is_segment
from .stages import DEFAULT_KIND

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- schema
SCORE_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string()),  # URI of the clip (s3://bucket/... or a local path)
        pa.field("file_name", pa.string()),  # base name, as in submission files
        pa.field("machine_type", pa.string()),  # folder name
        pa.field("section", pa.string()),  # "00"; null for non-DCASE names
        pa.field("domain", pa.string()),  # "source" / "target" / null (unlabelled names)
        pa.field("label", pa.string()),  # "normal" / "anomaly" / null
        pa.field("split", pa.string()),  # "train" / "test"
        pa.field("anomaly_score", pa.float64()),  # the model kind's score (U-Net: score.rule)
        pa.field("decision", pa.int8()),  # 1 = anomalous (score > threshold)
        pa.field("threshold", pa.float64()),  # the model's decision threshold
        pa.field("model_id", pa.string()),  # "<kind>-<sha12>"; "" when the type has no model
        pa.field("model_kind", pa.string()),  # "unet" / "baseline-ae" / "knn"; "" without a model
        pa.field("n_tiles", pa.int32()),  # feature rows scored (U-Net: 64x64 tiles)
        pa.field("duration_s", pa.float64()),  # decoded length, seconds
        pa.field("size", pa.int64()),  # object size in bytes (incremental key with path, fingerprint, model_id)
        pa.field("fingerprint", pa.string()),  # "etag:<ETag>" on S3, "mtime:<ns>" on local disks
        pa.field("source_sample_rate", pa.int32()),  # the file's own rate (Hz), before resampling
        pa.field("status", pa.string()),  # "ok" / "error"
        pa.field("error_reason", pa.string()),  # short code, see ERROR_REASONS
        pa.field("error", pa.string()),  # human-readable message
        pa.field("attributes", pa.string()),  # JSON of a template's or manifest's other fields ({"date": ...})
        pa.field("models_uri", pa.string()),  # where the run read its models (incremental key)
        pa.field("n_masks", pa.int32()),  # --masks of the run; null = each artifact's own K (incremental key)
        pa.field("run_id", pa.string()),
        pa.field("scored_at", pa.timestamp("us", tz="UTC")),
    ]
)
SCORE_COLUMNS = tuple(SCORE_SCHEMA.names)

STATUS_OK = "ok"
STATUS_ERROR = "error"

# Error reasons. The audio ones come from asd_core.audio.AudioDecodeError.reason.
ERROR_REASONS = {
    "bad_name": "not a DCASE 2023 Task 2 file name, or not matched by --pattern",
    "bad_manifest_row": "a manifest row with a bad value (the message names the row)",
    "not_found": "a manifest lists an object that does not exist",
    "no_model": "no model artifact for the clip's machine type",
    "bad_model": "the type's model artifact cannot be loaded or used (the error names its path)",
    "unsupported_format": "not an audio file soundfile decodes (.wav, .flac, .ogg)",
    "not_audio": "a file that is not audio (notes.txt, a .csv) the --pattern does not match: listed, not scored, "
                 "not counted as an error",
    "read_failed": "the object could not be read from storage",
    "empty": "0 bytes or no samples",
    "unreadable": "not audio, truncated or an unknown format",
    "non_finite": "NaN or Inf samples",
    "too_short": "shorter than one tile",
    "too_long": "longer than --max-clip-seconds (features.max_seconds), refused before decoding",
    "low_level": "far below the level of the type's training clips: a dead, unplugged or muted microphone",
    "silent": "digital silence (peak below 1e-5 of full scale)",
    "low_sample_rate": "the source rate cannot fill the mel range (rate / 2 < f_max)",
    "decode_failed": "unexpected error while decoding or featurising",
    "score_failed": "unexpected error while scoring",
}
# Reasons that say the microphone rather than the machine is at fault (a dead, silent
# or unplugged sensor): such error rows are alerts too (``alert_kind = "sensor"``).
SENSOR_REASONS = frozenset({"silent", "unreadable", "low_level"})
# Reasons that may go away on a retry: incremental runs score these clips again
# (``bad_model`` too: an artifact restored from a backup keeps its id). Every other
# reason is a property of the bytes (or of the missing model, which is part of the
# incremental key), so the same clip fails the same way again.
TRANSIENT_REASONS = frozenset({"read_failed", "decode_failed", "score_failed", "bad_model", "not_found"})
# Rows that only record a file was seen: not errors of the night (rates, counts).
NOT_CLIP_REASONS = frozenset({"not_audio"})


def empty_scores() -> pa.Table:
    return SCORE_SCHEMA.empty_table()


def to_table(rows: Sequence[dict]) -> pa.Table:
    """Score rows (dicts with :data:`SCORE_COLUMNS` keys; missing ones null) -> table."""
    return pa.Table.from_pylist([{c: r.get(c) for c in SCORE_COLUMNS} for r in rows], schema=SCORE_SCHEMA)


def conform(table: pa.Table) -> pa.Table:
    """Select and cast ``table``'s columns to :data:`SCORE_SCHEMA` (missing ones null)."""
    cols = []
    for f in SCORE_SCHEMA:
        if f.name in table.column_names:
            cols.append(table[f.name].cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=SCORE_SCHEMA)


def nullable_int_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the pandas metadata that makes its integer columns pandas'
    nullable integers (``Int64``...): a plain ``pandas.read_parquet`` of a file written
    with it gives ``decision`` and ``n_tiles`` as integers with ``<NA>`` on error rows,
    not floats with NaN. Other readers ignore the metadata."""

    dtypes = {f.name: f"{'U' if pa.types.is_unsigned_integer(f.type) else ''}Int{f.type.bit_width}"
              for f in schema if pa.types.is_integer(f.type)}
    if not dtypes:
        return schema
    empty = schema.empty_table().to_pandas().astype(dtypes)
    meta = pa.Schema.from_pandas(empty, preserve_index=False).metadata[b"pandas"]
    return schema.with_metadata({**(schema.metadata or {}), b"pandas": meta})


def is_final(status: str, error_reason: str | None) -> bool:
    """Whether a published row settles its clip for incremental runs."""
    return status == STATUS_OK or (error_reason or "") not in TRANSIENT_REASONS


# ---------------------------------------------------------------- ground truth
_GT_NAME = re.compile(r"^ground_truth_(?P<machine>.+)_section_(?P<section>\d{2})_test\.csv$")


@dataclass
class GroundTruth:
    """Labels and domains from the official evaluator's CSVs.

    ``labels[(machine_type, section, file_name)]`` is "normal"/"anomaly";
    ``domains[...]`` is "source"/"target".
    """

    labels: dict[tuple[str, str, str], str] = field(default_factory=dict)
    domains: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def update(self, other: GroundTruth) -> None:
        self.labels.update(other.labels)
        self.domains.update(other.domains)


def parse_ground_truth_name(file_name: str) -> tuple[str, str]:
    """``ground_truth_ToyDrone_section_00_test.csv`` -> ``("ToyDrone", "00")``."""
    m = _GT_NAME.match(posixpath.basename(file_name))
    if not m:
        raise ValueError(f"{file_name!r}: expected ground_truth_<machine>_section_<ss>_test.csv")
    return m["machine"], m["section"]


def parse_ground_truth(text: str, file_name: str, kind: str = "label") -> GroundTruth:
    """One official ground-truth CSV (no header, rows ``file_name,0|1``).

    ``kind="label"`` (``ground_truth_data/``): 0 = normal, 1 = anomaly;
    ``kind="domain"`` (``ground_truth_domain/``): 0 = source, 1 = target.
    """
    machine, section = parse_ground_truth_name(file_name)
    names = {"label": ("normal", "anomaly"), "domain": ("source", "target")}[kind]
    out: dict[tuple[str, str, str], str] = {}
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if not row or not row[0].strip():
            continue
        if len(row) < 2 or row[1].strip() not in ("0", "1"):
            raise ValueError(f"{file_name}:{lineno}: expected 'file_name,0|1', got {row!r}")
        out[(machine, section, row[0].strip())] = names[int(row[1])]
    return GroundTruth(labels=out) if kind == "label" else GroundTruth(domains=out)


def read_ground_truth(uris: Iterable[str], endpoint_url: str | None = None) -> GroundTruth:
    """Read official ground-truth CSVs from files or folders (local or ``s3://``).

    A folder is searched recursively for ``ground_truth_*_section_*_test.csv``. A file
    under a folder named ``ground_truth_domain`` gives domains, any other gives labels
    (the evaluator's ``ground_truth_data/`` layout).
    """
    from .storage import open_location, read_bytes

    gt = GroundTruth()
    for uri in uris:
        loc = open_location(uri, endpoint_url)
        if loc.fs.isdir(loc.path):
            files = sorted(p for p in loc.fs.find(loc.path) if _GT_NAME.match(posixpath.basename(p)))
        else:
            files = [loc.path]
        for p in files:
            kind = "domain" if posixpath.basename(posixpath.dirname(p)) == "ground_truth_domain" else "label"
            gt.update(parse_ground_truth(read_bytes(loc, p).decode(), p, kind))
    return gt


def apply_ground_truth(df: pd.DataFrame, gt: GroundTruth | None) -> pd.DataFrame:
    """Fill ``label`` / ``domain`` of score rows from ``gt`` (ground truth wins)."""
    if gt is None or (not gt.labels and not gt.domains) or df.empty:
        return df
    df = df.copy()
    keys = list(zip(df["machine_type"], df["section"], df["file_name"], strict=True))
    for col, table in (("label", gt.labels), ("domain", gt.domains)):
        if table:
            found = [table.get(k) for k in keys]
            df[col] = [f if f is not None else old for f, old in zip(found, df[col], strict=True)]
    return df


# ---------------------------------------------------------------- metrics
def evaluable(df: pd.DataFrame) -> pd.DataFrame:
    """The ok rows with a known label and section (what metrics are computed on)."""
    if df.empty:
        return df
    sel = (df["status"] == STATUS_OK) & df["label"].notna() & df["section"].notna() & df["anomaly_score"].notna()
    return df[sel]


def drop_training_clips(df: pd.DataFrame, rules: dict[str, HoldOut], root: str) -> tuple[pd.DataFrame, int]:
    """``df`` without the normal clips a machine type's model trained on (its
    :class:`asd_core.holdout.HoldOut` rule, paths below ``root``), and how many."""
    if df.empty or not rules:
        return df, 0
    trained = [
        mt in rules and label != "anomaly" and not rules[mt].held_out(relative(_fs(path), root))
        for mt, label, path in zip(df["machine_type"], df["label"], df["path"], strict=True)
    ]
    keep = ~np.asarray(trained, dtype=bool)
    return df[keep], int((~keep).sum())


def _fs(uri: str) -> str:
    return uri.split("://", 1)[1] if "://" in uri else uri


def compute_metrics(df: pd.DataFrame) -> tuple[list[SectionMetrics], float]:
    """Per (machine type, section) metrics and the official score of score rows.

    Only ok rows with a label count. Rows without a domain take part in pAUC and
    in the AUCs as anomalies, never as a domain's normals.
    """
    ev = evaluable(df)
    if "model_kind" in ev.columns:
        ev = ev.assign(model_kind=ev["model_kind"].fillna("").replace("", DEFAULT_KIND))
    else:
        ev = ev.assign(model_kind=DEFAULT_KIND)  # rows written before model kinds existed
    sections: list[SectionMetrics] = []
    for (mt, sec, kind), g in ev.groupby(["machine_type", "section", "model_kind"], sort=True):
        m = section_metrics(
            str(mt),
            str(sec),
            (g["label"] == "anomaly").astype(int).to_numpy(),
            g["anomaly_score"].to_numpy(dtype=float),
            g["domain"].fillna("").to_numpy(),
            g["decision"].fillna(0).astype(int).to_numpy(),
        )
        sections.append(dataclasses.replace(m, model_kind=str(kind)))
    return sections, official_score(sections)


METRIC_COLUMNS = (
    "auc_source",
    "auc_target",
    "pauc",
    "precision_source",
    "precision_target",
    "recall_source",
    "recall_target",
    "f1_source",
    "f1_target",
    "auc",
)


def metrics_table(sections: Sequence[SectionMetrics], run_id: str = "", official: float | None = None) -> pa.Table:
    """One row per (machine type, section); ``official_score`` repeated on each row."""
    off = official_score(sections) if official is None else official
    rows = [{**m.to_dict(), "run_id": run_id, "official_score": off} for m in sections]
    schema = pa.schema(
        [pa.field("machine_type", pa.string()), pa.field("section", pa.string())]
        + [pa.field(c, pa.float64()) for c in METRIC_COLUMNS]
        + [
            pa.field("n_clips", pa.int64()),
            pa.field("model_kind", pa.string()),
            pa.field("run_id", pa.string()),
            pa.field("official_score", pa.float64()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def sections_from_table(table: pa.Table) -> list[SectionMetrics]:
    keep = {f for f in SectionMetrics.__dataclass_fields__}
    return [
        SectionMetrics(**{k: (v if v is not None or k != "model_kind" else DEFAULT_KIND) for k, v in r.items() if k in keep})
        for r in table.to_pylist()
    ]


def side_by_side(sections: Sequence[SectionMetrics], kinds: Sequence[str] | None = None) -> str:
    """The technical report's Table 4 layout across model kinds: one line per machine
    type and section, AUC(source), AUC(target) and pAUC (in %) of every kind side by
    side, each kind's official score underneath."""
    kinds = list(kinds or dict.fromkeys(m.model_kind or DEFAULT_KIND for m in sections))
    by = {(m.machine_type, m.section, m.model_kind or DEFAULT_KIND): m for m in sections}
    keys = sorted({(m.machine_type, m.section) for m in sections})
    head = ["Machine", "Section"] + [f"{k} {c}" for k in kinds for c in ("AUC(s)", "AUC(t)", "pAUC")]
    body = []
    for mt, sec in keys:
        row = [mt, sec]
        for k in kinds:
            m = by.get((mt, sec, k))
            row += [_pct(getattr(m, c)) if m else "-" for c in METRIC_COLUMNS[:3]]
        body.append(row)
    offs = ["official score", ""]
    for k in kinds:
        off = official_score([m for m in sections if (m.model_kind or DEFAULT_KIND) == k])
        offs += [_pct(off), "", ""]
    body.append(offs)
    return _grid(head, body)


def _grid(head: list[str], body: list[list[str]]) -> str:
    """A plain-text table: the first two columns left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(r: list[str]) -> str:
        return " | ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    return "\n".join([line(head), "-+-".join("-" * w for w in widths), *[line(r) for r in body]])


def _pct(x: float) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{100.0 * x:.2f}"


def format_table(sections: Sequence[SectionMetrics], official: float | None = None) -> str:
    """The technical report's Table 4 layout (values in %), one line per machine type
    and section, the harmonic means and the official score underneath."""
    off = official_score(sections) if official is None else official
    head = [
        "Machine",
        "Section",
        "AUC(source)",
        "AUC(target)",
        "pAUC",
        "P(source)",
        "P(target)",
        "R(source)",
        "R(target)",
        "F1(source)",
        "F1(target)",
        "AUC(all)",
        "clips",
    ]
    several = len({m.model_kind for m in sections}) > 1
    body = [
        [f"{m.machine_type} ({m.model_kind})" if several else m.machine_type, m.section]
        + [_pct(getattr(m, c)) for c in METRIC_COLUMNS]
        + [str(m.n_clips)]
        for m in sections
    ]
    if sections:
        hm = []
        for c in METRIC_COLUMNS[:3]:
            vals = [getattr(m, c) for m in sections if np.isfinite(getattr(m, c))]
            hm.append(official_score_values(vals))
        body.append(["harmonic mean", ""] + [_pct(v) for v in hm] + [""] * 7 + [str(sum(m.n_clips for m in sections))])
    kinds = sorted({m.model_kind or DEFAULT_KIND for m in sections})
    label = f" of {', '.join(kinds)}" if kinds else ""
    out = [f"Model kind: {', '.join(kinds)}"] if len(kinds) == 1 else []
    out.append(_grid(head, body))
    out.append("")
    out.append(f"Official score{label} (harmonic mean of AUC(source), AUC(target), pAUC): {_pct(off)}")
    return "\n".join(out)


def official_score_values(values: Sequence[float]) -> float:
    """Harmonic mean of finite metric values (NaN when none)."""
    import scipy.stats

    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    return float(scipy.stats.hmean(np.maximum(v, np.finfo(float).eps))) if v.size else float("nan")


# ---------------------------------------------------------------- submission
def submission_files(df: pd.DataFrame) -> dict[str, str]:
    """DCASE submission CSVs of every test clip with a section, by file name.

    ``anomaly_score_<machine>_section_<ss>_test.csv``: ``file_name,score`` and
    ``decision_result_<machine>_section_<ss>_test.csv``: ``file_name,0|1``; no header,
    rows sorted by file name. The official evaluator refuses a section whose CSV misses
    a test file, so error clips are written too: with the section's highest ok score
    (0.0 when it has none) and decision 1, i.e. ranked and flagged as anomalous (a clip
    that could not be scored is one a person should look at). A warning says how many.

    A machine type or section that is not one folder name
    (:func:`asd_core.paths.is_segment`) would make a file name that leads out of the
    submission folder: its clips are left out, with a warning naming them.
    """
    out: dict[str, str] = {}
    if df.empty:
        return out
    test = df[(df["split"] == "test") & df["section"].notna()]
    n_filled = 0
    for (mt, sec), g in test.groupby(["machine_type", "section"], sort=True):
        if not (is_segment(mt) and is_segment(sec)):
            log.warning("submission: machine type %r, section %r is not a folder name; its %d clip(s) are left out of "
                        "the submission files", mt, sec, len(g))
            continue
        g = g.sort_values("file_name")
        ok = g["status"] == STATUS_OK
        fill = float(g.loc[ok, "anomaly_score"].max()) if ok.any() else 0.0
        n_filled += int((~ok).sum())
        scores, decisions = io.StringIO(), io.StringIO()
        ws, wd = csv.writer(scores, lineterminator="\n"), csv.writer(decisions, lineterminator="\n")
        for name, good, s, d in zip(g["file_name"], ok, g["anomaly_score"], g["decision"], strict=True):
            ws.writerow([name, repr(float(s)) if good else repr(fill)])
            wd.writerow([name, int(d) if good else 1])
        out[f"anomaly_score_{mt}_section_{sec}_test.csv"] = scores.getvalue()
        out[f"decision_result_{mt}_section_{sec}_test.csv"] = decisions.getvalue()
    if n_filled:
        log.warning(
            "submission: %d error clip(s) written with their section's highest score and decision 1", n_filled
        )
    return out


def finite(obj: Any) -> Any:
    """``obj`` with NaN and infinite floats as ``None`` and numpy scalars as Python
    numbers: what strict JSON parsers accept (``json.dumps`` writes a bare ``NaN``)."""
    import math

    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def strict_json(obj: Any, **kw: Any) -> str:
    """:func:`finite` ``obj`` as JSON, refusing anything non-finite left over."""
    import json

    return json.dumps(finite(obj), allow_nan=False, default=str, **kw)
