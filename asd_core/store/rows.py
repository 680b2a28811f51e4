"""What the output tables hold besides the score rows themselves: the partition of a
clip in ``latest``, template and manifest fields as columns, the run's date, alert
rows; and the plain Parquet helpers the staging folder uses. Pure functions over
pyarrow tables, no I/O except :func:`write_table` and :func:`read_tables`."""

from __future__ import annotations

import functools
import io
import json
import math
import re
import zlib
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from .. import results
from ..results import SENSOR_REASONS, STATUS_ERROR, STATUS_OK
from ..storage import Location, write_bytes

RUN_DATE = "run_date"  # partition column of the per-run tables: the run's UTC date (never a template's {date})
CLIP_PART = "clip_part"  # partition column of latest: the clip's date, or a hash bucket of its path
EVALUATED_RUN = "evaluated_run_id"  # in evaluated: the run whose metrics the row entered
ALERT_KIND = "alert_kind"  # "anomaly" (an ok row over its threshold) or "sensor" (a dead or silent microphone)
ALERT_RANK = "alert_rank"  # 1, 2, ...: a run's alerts in the order to act on them (anomalies by score, then sensors)
HASH_BUCKETS = 16  # latest's partitions for clips without a date
KEY = ("path", "split", "models_uri", "n_masks")  # one latest row per clip and (split, models URI, K)

ALERT_COLUMNS = ("machine_type", "section", "domain", "anomaly_score", "threshold", "path", "file_name",
                 "attributes", "model_id", "model_kind", "run_id", "scored_at")
ALERT_SCHEMA_EXTRA = (ALERT_KIND, ALERT_RANK, "error_reason", "error")
_STORE_COLUMNS = {RUN_DATE, CLIP_PART, EVALUATED_RUN, ALERT_KIND, "official_score", "record"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


# ---------------------------------------------------------------- latest's partitions
def clip_part(path: str, attributes: str | None) -> str:
    """The ``latest`` partition of a clip: its template's or manifest's ``date`` (a
    night's MERGE then touches only that night's partitions), else ``hNN``, one of
    :data:`HASH_BUCKETS` buckets of its path (one row of :func:`clip_parts`)."""
    return clip_parts(pa.table({"path": [path], "attributes": pa.array([attributes], pa.string())}))[0].as_py()


def _bucket(path: str) -> str:
    return f"h{zlib.crc32(path.encode()) % HASH_BUCKETS:02d}"


def _attrs(attributes: str | dict | None) -> dict[str, Any]:
    if isinstance(attributes, dict):
        return attributes
    if not attributes:
        return {}
    try:
        parsed = json.loads(attributes)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def fields(attributes: pa.Array | pa.ChunkedArray) -> dict[str, pa.Array]:
    """The template or manifest fields in an ``attributes`` JSON column, one string
    array per field (null where a row lacks it). Parsed by Arrow's JSON reader, with a
    row-by-row fallback for anything else than an object of strings."""
    strs = [a if a else "{}" for a in (attributes.to_pylist() if len(attributes) else [])]
    if not strs:
        return {}
    keys: dict[str, None] = {}
    for a in strs[:: max(1, len(strs) // 200)] + strs[-20:]:
        keys.update(dict.fromkeys(_attrs(a)))
    try:
        opts = pajson.ParseOptions(explicit_schema=pa.schema([(k, pa.string()) for k in keys]),
                                   unexpected_field_behavior="infer")
        t = pajson.read_json(io.BytesIO("\n".join(strs).encode()), parse_options=opts)
        if t.num_rows != len(strs):
            raise ValueError("rows")
    except (pa.ArrowException, ValueError):
        t = None
    out: dict[str, pa.Array] = {}
    for name in (t.column_names if t is not None else []):
        col = t[name].combine_chunks()
        if col.type == pa.string():
            out[name] = col
    slow = [n for n in (t.column_names if t is not None else keys) if n not in out] if t is not None else None
    if t is None or slow:
        parsed = [_attrs(a) for a in strs]
        names = slow if t is not None else list(dict.fromkeys(k for d in parsed for k in d))
        for name in names:
            out[name] = pa.array([None if d.get(name) is None else str(d[name]) for d in parsed], pa.string())
    return out


@functools.lru_cache(maxsize=4096)
def field_column(name: str) -> str | None:
    """The column a template or manifest field becomes: its own name, ``attr_<name>``
    where that is a column of the store already, ``None`` (stays only in the
    ``attributes`` JSON) when it is not an identifier."""
    if not _NAME.fullmatch(name):
        return None
    taken = {c.lower() for c in (*results.SCORE_COLUMNS, *_STORE_COLUMNS, *ALERT_SCHEMA_EXTRA)}
    return f"attr_{name}" if name.lower() in taken else name


def with_fields(table: pa.Table, found: dict[str, pa.Array] | None = None) -> pa.Table:
    """``table`` plus one string column per template or manifest field found in its
    ``attributes`` (``date``, ``unit``, ... ; see :func:`field_column`)."""
    if "attributes" not in table.column_names or table.num_rows == 0:
        return table
    found = fields(table["attributes"]) if found is None else found
    seen = {c.lower() for c in table.column_names}
    for name, values in sorted(found.items()):
        col = field_column(name)
        if col is not None and col.lower() not in seen:  # two fields differing only in case: the first wins
            table = table.append_column(col, values)
            seen.add(col.lower())
    return table


def clip_parts(table: pa.Table, found: dict[str, pa.Array] | None = None) -> pa.Array:
    """:func:`clip_part` of every row (vectorised where the date is usable)."""
    found = fields(table["attributes"]) if found is None else found
    date = found.get("date")
    if date is None:
        date = pa.nulls(table.num_rows, pa.string())
    ok = pc.fill_null(pc.match_substring_regex(date, r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"), False)
    if pc.all(ok).as_py():
        return date
    paths = table["path"].to_pylist()
    buckets = pa.array([None if good else _bucket(p) for p, good in zip(paths, ok.to_pylist(), strict=True)],
                       pa.string())
    return pc.if_else(ok, date, buckets)


def with_run_date(table: pa.Table, run_date: str) -> pa.Table:
    if RUN_DATE in table.column_names:
        table = table.drop_columns([RUN_DATE])
    return table.append_column(RUN_DATE, pa.array([run_date] * table.num_rows, pa.string()))


def history_rows(rows: pa.Table, run_date: str, found: dict[str, pa.Array] | None = None) -> pa.Table:
    """A run's score rows as the ``scores`` table holds them."""
    return with_run_date(with_fields(results.conform(rows), found), run_date)


def latest_rows(rows: pa.Table, found: dict[str, pa.Array] | None = None) -> pa.Table:
    """A run's score rows as the ``latest`` table holds them (``clip_part`` added)."""
    rows = results.conform(rows)
    found = fields(rows["attributes"]) if found is None else found
    return with_fields(rows, found).append_column(CLIP_PART, clip_parts(rows, found))


def plain(table: pa.Table) -> pa.Table:
    """``table`` with view and large string types as plain strings (what every reader
    and writer takes)."""
    fields = []
    for f in table.schema:
        t = f.type
        if t in (pa.string_view(), pa.large_string()):
            t = pa.string()
        fields.append(pa.field(f.name, t))
    return table.cast(pa.schema(fields)) if fields != list(table.schema) else table


def key_filter(table: pa.Table, paths: pa.Array, split: str, models_uri: str, n_masks: int | None) -> pa.Table:
    """The rows of ``table`` whose key is (one of ``paths``, ``split``, ``models_uri``, ``n_masks``)."""
    table = plain(table)
    same = pc.is_in(table["path"], value_set=paths)
    same = pc.and_(same, pc.equal(pc.fill_null(table["split"], ""), split or ""))
    same = pc.and_(same, pc.equal(pc.fill_null(table["models_uri"], ""), models_uri or ""))
    same = pc.and_(same, pc.equal(pc.fill_null(table["n_masks"], 0), n_masks or 0))
    return table.filter(same)


# ---------------------------------------------------------------- alerts
def alert_rows(rows: pa.Table) -> pa.Table:
    """The alerts of a run's rows: ``anomaly`` (ok rows whose decision is 1, highest
    score first), then ``sensor`` (error rows whose reason says the microphone is dead
    or silent, :data:`asd_core.results.SENSOR_REASONS`), so that sensor alerts never
    push machine alerts down a list."""
    rows = results.conform(rows)
    ok = rows.filter(pc.fill_null(pc.and_(pc.equal(rows["status"], STATUS_OK), pc.equal(rows["decision"], 1)), False))
    sensor = rows.filter(pc.fill_null(pc.and_(pc.equal(rows["status"], STATUS_ERROR),
                                              pc.is_in(rows["error_reason"], pa.array(sorted(SENSOR_REASONS)))), False))
    cols = list(ALERT_COLUMNS) + ["error_reason", "error"]
    ok = ok.sort_by([("anomaly_score", "descending"), ("path", "ascending")]).select(cols)
    sensor = sensor.sort_by([("machine_type", "ascending"), ("path", "ascending")]).select(cols)
    kinds = pa.array(["anomaly"] * ok.num_rows + ["sensor"] * sensor.num_rows, pa.string())
    both = pa.concat_tables([ok, sensor]).add_column(len(ALERT_COLUMNS), ALERT_KIND, kinds)
    rank = pa.array(range(1, both.num_rows + 1), pa.int32())  # tables keep no row order: ORDER BY alert_rank
    return both.add_column(len(ALERT_COLUMNS) + 1, ALERT_RANK, rank)


def alert_summary(alerts: pa.Table) -> str:
    """``3 clips over threshold: press-07 2, fan-3 1; 2 sensor alerts: fan-3 silent 1,
    press-07 unreadable 1`` (``no clip over threshold``). Rows without ``alert_kind``
    are clips over threshold."""
    kinds = alerts[ALERT_KIND].to_pylist() if ALERT_KIND in alerts.column_names else ["anomaly"] * alerts.num_rows
    types = alerts["machine_type"].to_pylist()
    reasons = alerts["error_reason"].to_pylist() if "error_reason" in alerts.column_names else [None] * len(types)
    over: dict[str, int] = {}
    sensor: dict[str, int] = {}
    for k, mt, r in zip(kinds, types, reasons, strict=True):
        if k == "sensor":
            sensor[f"{mt} {r}"] = sensor.get(f"{mt} {r}", 0) + 1
        else:
            over[mt] = over.get(mt, 0) + 1

    def listed(counts: dict[str, int]) -> str:
        return ", ".join(f"{k} {n}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    n = sum(over.values())
    text = f"{n} clip{'s' if n != 1 else ''} over threshold: {listed(over)}" if n else "no clip over threshold"
    m = sum(sensor.values())
    if m:
        text += f"; {m} sensor alert{'s' if m != 1 else ''}: {listed(sensor)}"
    return text


# ---------------------------------------------------------------- plain files
def _write_parquet(table: pa.Table, sink) -> None:
    """Parquet of ``table`` whose integer columns pandas reads as nullable integers
    (:func:`asd_core.results.nullable_int_schema`)."""
    pq.write_table(table.replace_schema_metadata(results.nullable_int_schema(table.schema).metadata), sink)


def write_table(loc: Location, path: str, table: pa.Table) -> None:
    buf = pa.BufferOutputStream()
    _write_parquet(table, buf)
    write_bytes(loc, path, buf.getvalue().to_pybytes())


def read_tables(loc: Location, paths: Iterable[str]) -> pa.Table:
    """Score rows of Parquet files, conformed to the score schema (old files too)."""
    tables = []
    for p in paths:
        with loc.fs.open(p, "rb") as f:
            tables.append(results.conform(pq.read_table(f)))
    return pa.concat_tables(tables) if tables else results.empty_scores()


def json_default(o: Any) -> Any:
    """``json.dumps`` default for run records and summaries: numpy numbers, NaN as null."""
    import numpy as np

    if isinstance(o, float | np.floating):
        return None if not math.isfinite(float(o)) else float(o)
    if isinstance(o, np.integer):
        return int(o)
    return str(o)


def to_bytes(table: pa.Table, fmt: str) -> bytes:
    """``table`` as Parquet or CSV bytes."""
    buf = io.BytesIO()
    if fmt == "parquet":
        _write_parquet(plain(table), buf)
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(plain(table), buf)
    else:
        raise ValueError(f"format {fmt!r}: use parquet or csv")
    return buf.getvalue()
