"""Looking after an output's tables: compaction and vacuum (``asd scores --optimize``,
and every :data:`~asd_core.store.layout.OPTIMIZE_EVERY` runs), repair of a damaged
output (``--repair``), ``latest`` rebuilt from the history."""

from __future__ import annotations

import posixpath
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .. import results
from ..paths import is_segment
from . import layout, legacy
from .rows import latest_rows, plain
from .tables import VACUUM_RETAIN_HOURS, StoreError

RunStore = Any  # asd_core.store.runstore.RunStore: the store these functions work on




def optimize(store: RunStore, retain_hours: float | None = None) -> dict[str, dict]:
    """Compact every table's small files, checkpoint, vacuum what no version of the
    last ``retain_hours`` (default a week) references; remove expired staging."""
    store.recover()
    hours = VACUUM_RETAIN_HOURS if retain_hours is None else retain_hours
    return {name: store.tables.optimize(name, hours) for name in layout.TABLES if store.tables.exists(name)}


def repair(store: RunStore, current: str | None = None) -> list[str]:
    """Make a damaged output usable again; returns what was done, one line each.

    - a table whose newest commits cannot be read, or name files outside it: those
      commit files are set aside under ``OUT/_repair/<table>/`` (the table goes back
      to its last readable version);
    - data files the log names but that are gone: dropped from the table (FSCK);
    - staging whose commit record is unreadable: set aside under ``OUT/_repair/``;
    - ``latest`` is rebuilt from the history (reads the whole history, once).
    """
    rs = layout
    notes: list[str] = []
    if store.layout() in ("legacy", "migrating"):
        notes.append(f"converted the former layout: {store.migrate()}")
    for name in rs.TABLES:
        if not store.tables.exists(name):
            continue
        try:
            store.tables.load(name)
        except StoreError as e:
            store.tables.forget(name)
            moved = legacy.set_aside_bad_commits(store, name)
            notes.append(f"{store.tables.uri(name)}: {e}; set aside {', '.join(moved) or 'nothing'}")
            store.tables.load(name)  # still unreadable: the error says so
        gone = store.tables.fsck(name)
        if gone:
            notes.append(f"{store.tables.uri(name)}: dropped {len(gone)} missing data file(s): {', '.join(gone)}")
    root = store.p(rs.STAGING)
    for d in sorted(store.out.fs.ls(root, detail=False, refresh=True)) if store._exists(root) else []:
        name = posixpath.basename(d.rstrip("/"))
        if not is_segment(name):
            continue
        try:
            store._read_intent(name)
        except StoreError as e:
            dest = store.p(rs.REPAIR, rs.STAGING, f"{name}-{int(time.time())}")
            store._mv(store.stage_dir(name), dest)
            notes.append(f"{e.args[0].split(';')[0]}: set aside at {store.uri(dest)}")
    store.recover(current)
    n = rebuild_latest(store)
    notes.append(f"{store.tables.uri(rs.LATEST)}: rebuilt from the history ({n} rows)")
    return notes


def rebuild_latest(store: RunStore) -> int:
    """Rewrite ``latest`` from the history (each key's last-scored row). Reads the
    whole history: a repair, not nightly work."""
    rs = layout
    hist = store.tables.read(rs.SCORES)
    if hist is None or hist.num_rows == 0:
        return 0
    t = results.conform(plain(hist))
    key = pc.binary_join_element_wise(
        *[pc.fill_null(t[c].cast(pa.string()), "") for c in ("path", "split", "models_uri")],
        pc.fill_null(t["n_masks"].cast(pa.string()), "0"), "\x1f")
    t = t.append_column("_key", key).sort_by([("_key", "ascending"), ("scored_at", "ascending"),
                                               ("run_id", "ascending")])
    keys = t["_key"].combine_chunks()
    last = pc.not_equal(keys.slice(0, len(keys) - 1), keys.slice(1)) if len(keys) > 1 else pa.array([], pa.bool_())
    keep = pa.concat_arrays([last, pa.array([True])])
    t = t.filter(keep).drop_columns(["_key"])
    store.tables.overwrite(rs.LATEST, latest_rows(t), app_id=None, partition_by=rs.PARTITIONS[rs.LATEST])
    return t.num_rows
