"""Outputs written by the former layout (one-file index), read as they are and
converted once into the Delta tables; setting aside unreadable commits (repair).

The former layout under OUT::

    scores/date=<day>/run=<run_id>/part-*.parquet + _SUCCESS   (format 2; format 1: scores/<run_id>/)
    latest/scores.parquet        runs/<run_id>.json          _journal.json
    metrics/date=<day>/run=<run_id>/{metrics,evaluated}.parquet (format 1: metrics/<run_id>/)
    alerts/<run_id>.parquet      submission/<run_id>/

:func:`migrate` moves those folders under ``OUT/_legacy/`` (kept as a backup: delete it
once the tables are checked), then commits every published run into the tables (each
with the run's transaction id, so an interrupted conversion resumes where it stopped),
then ``latest`` (from the former index, or rebuilt from the runs when that file is
unreadable), then writes ``_legacy/MIGRATED.json``. Paths in old records and the
journal are used only when they lie inside OUT.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .. import results
from ..paths import check_segment, is_within
from .layout import MIGRATE_LATEST, PARTITIONS, REPAIR, app_id
from .rows import read_tables
from .tables import StoreError, one_line

RunStore = Any  # asd_core.store.runstore.RunStore: the store these functions work on

log = logging.getLogger("asd_core.runstore")

LEGACY = "_legacy"
MOVED = "MOVED"
MIGRATED = "MIGRATED.json"
JOURNAL = "_journal.json"
SUCCESS = "_SUCCESS"
FOLDERS = ("scores", "latest", "runs", "metrics", "evaluated", "alerts")


def present(store: RunStore) -> bool:
    """Whether OUT holds outputs of the former layout (not converted)."""
    fs = store.out.fs
    fs.invalidate_cache(store.root)
    if fs.exists(store.p(JOURNAL)) or fs.exists(store.p("latest", "scores.parquet")):
        return True
    for name, mark in (("runs", ".json"), ("scores", "")):
        d = store.p(name)
        if fs.exists(d) and not store.tables.exists(name):
            for entry in fs.ls(d, detail=False):
                base = posixpath.basename(entry.rstrip("/"))
                if (mark and base.endswith(mark)) or (not mark and not base.startswith(("_", "."))
                                                       and not base.startswith("run_date=")):
                    return True
    return False


# ---------------------------------------------------------------- reading the former layout
def _inside(store: RunStore, path: str, what: str) -> str:
    """``path`` if it is under OUT (literally, or once symlinks are resolved on a local
    disk: records hold absolute paths), else :class:`ValueError`."""
    real = os.path.realpath
    if not is_within(path, store.root) and not (
        store.out.protocol == "file" and is_within(real(path), real(store.root))
    ):
        raise ValueError(f"{what} names {store.uri(path)}, outside {store.out.uri}")
    return path


def _base(store: RunStore, base: str | None) -> str:
    return store.root if base is None else base


def record(store: RunStore, run_id: str, base: str | None = None) -> dict | None:
    path = posixpath.join(_base(store, base), "runs", f"{check_segment(run_id, 'run id')}.json")
    try:
        return json.loads(store.out.fs.cat_file(path))
    except FileNotFoundError:
        return None


def records(store: RunStore, base: str | None = None) -> list[dict[str, Any]]:
    d = posixpath.join(_base(store, base), "runs")
    if not store.out.fs.exists(d):
        return []
    recs = []
    for f in sorted(store.out.fs.ls(d, detail=False)):
        if f.endswith(".json"):
            try:
                recs.append(json.loads(store.out.fs.cat_file(f)))
            except ValueError:
                log.warning("%s is not JSON; skipped", store.uri(f))
    return sorted((r for r in recs if isinstance(r, dict) and "run_id" in r),
                  key=lambda m: (m.get("published_at", ""), m["run_id"]))


def _relocate(store: RunStore, path: str, base: str | None) -> str:
    """A path an old record names, read from ``base`` (``_legacy/`` once moved)."""
    if base is None:
        return path
    real = os.path.realpath
    if is_within(path, store.root):
        rel = path[len(store.root):].lstrip("/")
    else:
        rel = os.path.relpath(real(path), real(store.root))
    return posixpath.join(base, rel)


def read_run(store: RunStore, rec: dict[str, Any], base: str | None = None) -> pa.Table:
    """The rows of one run of the former layout (only the files its record lists, all
    under OUT: :class:`ValueError` otherwise)."""
    what = f"the record of run {rec.get('run_id')!r}"
    d = rec.get("scores_path") or store.p("scores", check_segment(rec["run_id"], "run id"))
    _inside(store, d, what)
    d = _relocate(store, d, base)
    return read_tables(store.out, [f"{d}/{check_segment(n, f'{what}: file')}" for n in rec.get("files", [])])


def latest(store: RunStore, base: str | None = None) -> pa.Table:
    path = posixpath.join(_base(store, base), "latest", "scores.parquet")
    if not store.out.fs.exists(path):
        return results.empty_scores()
    return read_tables(store.out, [path]).sort_by([("path", "ascending")])


def read_output(store: RunStore, kind: str, rec: dict[str, Any], base: str | None = None) -> pa.Table | None:
    import pyarrow.parquet as pq

    root = _base(store, base)
    rid = check_segment(rec["run_id"], "run id")
    if kind == "alerts":
        path = posixpath.join(root, "alerts", f"{rid}.parquet")
    elif rec.get("format", 1) >= 2:
        path = posixpath.join(root, kind, f"date={check_segment(rec['date'], 'date')}", f"run={rid}", f"{kind}.parquet")
    else:
        path = posixpath.join(root, "metrics", rid, f"{kind}.parquet")
    try:
        with store.out.fs.open(path, "rb") as f:
            return pq.read_table(f)
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------- conversion
def _recover_journal(store: RunStore) -> None:
    """The former layout's interrupted publish: finished (its ``_SUCCESS`` exists: the
    record is written) or rolled back (the moved files are removed)."""
    path = store.p(JOURNAL)
    try:
        j = json.loads(store.out.fs.cat_file(path))
        rid, d = j["run_id"], j["scores_path"]
    except FileNotFoundError:
        return
    except (ValueError, KeyError, TypeError) as e:
        log.warning("%s is unreadable (%s); a publish it described is converted if it committed", store.uri(path),
                    one_line(e))
        store.out.fs.rm(path)
        return
    d = _inside(store, d, f"journal {store.uri(path)}")
    try:
        manifest = json.loads(store.out.fs.cat_file(f"{d}/{SUCCESS}"))
    except FileNotFoundError:
        manifest = None
    if manifest is None:
        log.warning("run %s crashed while publishing (no %s); its files at %s are removed", rid, SUCCESS, store.uri(d))
        store.out.fs.rm(d, recursive=True)
    elif not store.out.fs.exists(store.record_path(rid)):
        log.warning("run %s was published but not recorded; recording it", rid)
        manifest.setdefault("scores_path", d)
        store._write_json(store.record_path(rid), {**manifest, "recovered": True})
    store.out.fs.rm(path)


def _move(store: RunStore, src: str, dst: str) -> None:
    """Move a folder, resumable: file by file on S3; one rename on a local disk."""
    fs = store.out.fs
    store._confined(src)
    if store.out.protocol == "file" and not fs.exists(dst):
        os.makedirs(posixpath.dirname(dst), exist_ok=True)
        os.rename(src, dst)
        return
    for f in sorted(fs.find(src)):
        store._mv(f, posixpath.join(dst, f[len(src):].lstrip("/")))
    if fs.exists(src):
        fs.rm(src, recursive=True)


def _published(store: RunStore, base: str) -> list[dict[str, Any]]:
    """Every run the former layout published: its record, or its ``_SUCCESS`` manifest
    where the record is missing; oldest first."""
    recs = {r["run_id"]: r for r in records(store, base)}
    scores = posixpath.join(base, "scores")
    if store.out.fs.exists(scores):
        for f in sorted(store.out.fs.find(scores)):
            if f.endswith(f"/{SUCCESS}"):
                try:
                    m = json.loads(store.out.fs.cat_file(f))
                except ValueError:
                    log.warning("%s is not JSON; its run is not converted", store.uri(f))
                    continue
                if isinstance(m, dict) and m.get("run_id") not in recs:
                    # the manifest sits in the run's folder: name it as it was before the move
                    m["scores_path"] = store.p(posixpath.dirname(f)[len(base):].lstrip("/"))
                    recs[m["run_id"]] = {**m, "recovered": True}
    return sorted(recs.values(), key=lambda m: (m.get("published_at", ""), m["run_id"]))


def migrate(store: RunStore) -> dict | None:
    """Convert OUT from the former layout (see the module's docstring); returns counts,
    ``None`` when there is nothing to convert."""
    from .rows import alert_rows, latest_rows

    fs = store.out.fs
    base = store.p(LEGACY)
    if fs.exists(posixpath.join(base, MIGRATED)) and not present(store):
        return None
    if not present(store) and not fs.exists(base):
        return None
    t0 = time.perf_counter()
    if not fs.exists(posixpath.join(base, MOVED)):
        _recover_journal(store)
        for name in FOLDERS:
            src = store.p(name)
            if fs.exists(src) and not store.tables.exists(name):
                _move(store, src, posixpath.join(base, name))
        store._write_json(posixpath.join(base, MOVED), {"moved_at": time.time()})
    runs = _published(store, base)
    n_rows = 0
    for rec in runs:
        rid = check_segment(rec["run_id"], "run id")
        if store.tables.committed("runs", app_id(rid)):
            continue
        rows = read_run(store, rec, base)
        date = rec.get("date") or (rec.get("published_at") or "1970-01-01")[:10]
        date = check_segment(date, "date")
        new = {k: v for k, v in rec.items() if k != "files"}
        new.update(format=3, date=date, migrated_from_format=rec.get("format", 1),
                   scores_path=store.run_dir(rid, date))
        outputs = {"alerts": alert_rows(rows)}
        for kind in ("metrics", "evaluated"):
            t = read_output(store, kind, rec, base)
            if t is not None:
                outputs[kind] = t
        intent = {"record": new, "outputs": sorted(outputs), "submission": []}
        store._commit_night(rid, intent, {"rows": rows, "outputs": outputs, "submission": {}}, staged=False,
                            latest=False)
        n_rows += rows.num_rows
    n_latest = 0
    if not store.tables.committed("latest", MIGRATE_LATEST):
        try:
            table = latest(store, base)
        except Exception as e:  # noqa: BLE001 - a garbage index is rebuilt from the runs
            log.warning("the former index %s is unreadable (%s); rebuilt from the published runs",
                        store.uri(posixpath.join(base, "latest", "scores.parquet")), one_line(e))
            table = _fold([read_run(store, r, base) for r in runs])
        if table.num_rows == 0 and runs:
            table = _fold([read_run(store, r, base) for r in runs])
        else:  # runs committed but never indexed (a publish the journal finished, a record rebuilt)
            table = _fold([table] + [read_run(store, r, base) for r in runs if r.get("recovered")])
        if table.num_rows:
            store.tables.append("latest", latest_rows(table), app_id=MIGRATE_LATEST, partition_by=PARTITIONS["latest"])
        n_latest = table.num_rows
    done = {"runs": len(runs), "history_rows": n_rows, "latest_rows": n_latest,
            "seconds": round(time.perf_counter() - t0, 1), "backup": store.uri(base)}
    store._write_json(posixpath.join(base, MIGRATED), done)
    log.warning("converted %s to Delta tables: %d runs, %d latest rows; the former files are kept under %s "
                "(delete them once the tables are checked)", store.out.uri, len(runs), n_latest, store.uri(base))
    return done


def _fold(tables: list[pa.Table]) -> pa.Table:
    """Each key's row from the last table that has it (runs oldest first)."""
    latest = results.empty_scores()
    for new in tables:
        new = results.conform(new)
        if latest.num_rows and new.num_rows:
            latest = latest.filter(pc.invert(pc.is_in(_key(latest), value_set=_key(new).combine_chunks())))
        latest = pa.concat_tables([latest, new])
    return latest


def _key(t: pa.Table):
    parts = [pc.fill_null(t[c].cast(pa.string()), "") for c in ("path", "split", "models_uri")]
    parts.append(pc.fill_null(t["n_masks"].cast(pa.string()), "0"))
    return pc.binary_join_element_wise(*parts, "\x1f")


# ---------------------------------------------------------------- repair
def set_aside_bad_commits(store: RunStore, name: str) -> list[str]:
    """Move the table's newest commit files that cannot be parsed, or that add files
    outside the table, to ``OUT/_repair/<name>/``, newest first, until one is good;
    a garbage ``_last_checkpoint`` (a hint) too. Returns the names moved."""

    fs = store.out.fs
    logdir = posixpath.join(store.tables.path(name), "_delta_log")
    dest = store.p(REPAIR, name, str(int(time.time())))
    moved = []
    hint = posixpath.join(logdir, "_last_checkpoint")
    fs.invalidate_cache(logdir)
    if fs.exists(hint):
        try:
            json.loads(fs.cat_file(hint))
        except ValueError:
            store._mv(hint, posixpath.join(dest, "_last_checkpoint"))
            moved.append("_last_checkpoint")
    commits = sorted(p for p in fs.ls(logdir, detail=False, refresh=True) if p.endswith(".json") and
                     posixpath.basename(p).split(".")[0].isdigit())
    for path in reversed(commits):
        if _commit_ok(fs.cat_file(path)):
            break
        store._mv(path, posixpath.join(dest, posixpath.basename(path)))
        moved.append(posixpath.basename(path))
    if not moved:
        raise StoreError(f"{store.tables.uri(name)}: its log cannot be read and no newest commit is to blame; restore "
                         "the table from a backup (or remove it: latest is rebuilt from the history)")
    return moved


def _commit_ok(data: bytes) -> bool:
    try:
        for line in data.decode().splitlines():
            if line.strip():
                action = json.loads(line)
                for kind in ("add", "remove"):
                    p = (action.get(kind) or {}).get("path") if isinstance(action, dict) else None
                    if p is not None and ("://" in p or p.startswith("/") or ".." in p.split("/")):
                        return False
    except (ValueError, UnicodeDecodeError, AttributeError):
        return False
    return True
