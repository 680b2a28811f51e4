"""Manifests: CSV or Parquet files that list exactly the clips to train on or score
(``path`` relative to DATA_URI or a URI under it or an ``--allow-root``,
``machine_type``, optional ``section``, ``domain``, ``label``, ``split``,
``attributes``; other columns become attributes), and writing one from a listing.
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Sequence
from dataclasses import replace

from .clips import ListedClip, ManifestError, _segment_problem, clip_from_fields
from .paths import OutsideRoot, check_roots, confine_manifest_path, is_segment
from .storage import Location, fingerprint, open_location, read_bytes, write_bytes


def _manifest_frame(loc: Location):
    import pandas as pd

    data = read_bytes(loc, loc.path)
    name = loc.path.lower()
    if name.endswith((".parquet", ".pq")):
        df = pd.read_parquet(io.BytesIO(data))
    elif name.endswith((".csv", ".csv.gz", ".txt")):
        df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False,
                         compression="gzip" if name.endswith(".gz") else None)
    else:
        raise ManifestError(f"manifest {loc.uri}: use a .csv or .parquet file")
    df.columns = [str(c).strip() for c in df.columns]
    if "path" not in df.columns:
        raise ManifestError(f"manifest {loc.uri}: no 'path' column (columns: {', '.join(df.columns)})")
    if "machine_type" not in df.columns:
        raise ManifestError(f"manifest {loc.uri}: no 'machine_type' column (columns: {', '.join(df.columns)})")
    return df.astype(object).where(df.notna(), None)


def _resolve(data: Location, path: str, allow_roots: Sequence[str] = ()) -> str:
    """A manifest path as a path on the data location's filesystem; it must be under
    the data root or one of ``allow_roots`` (:func:`asd_core.paths.confine_manifest_path`)."""
    uri = confine_manifest_path(path, data.uri, allow_roots)
    return uri[len("s3://") :] if uri.startswith("s3://") else uri


def read_manifest(
    manifest_uri: str,
    data: Location,
    *,
    endpoint_url: str | None = None,
    training: bool = False,
    machines: Sequence[str] | None = None,
    allow_roots: Sequence[str] = (),
) -> list[ListedClip]:
    """The clips a manifest lists, one :class:`ListedClip` per row (in row order).

    A row whose object does not exist gets reason ``not_found``; a row with a bad
    value (empty path or machine type, a path outside the data root and
    ``allow_roots``, a machine type or section that is not one folder name, unknown
    label, domain or split) gets ``bad_manifest_row`` naming its row number. Raises
    :class:`ManifestError` for a manifest that cannot be used at all, a path listed
    twice, and, when ``training``, a row labelled anomaly or a test row (training is
    on normal clips only) or a row naming a path outside its roots or a machine type
    or section that is not a folder name (a model would be written there).
    :class:`ValueError` for a malformed ``allow_roots`` entry.
    """
    check_roots(data.uri, allow_roots)
    loc = open_location(manifest_uri, endpoint_url)
    try:
        df = _manifest_frame(loc)
    except ManifestError:
        raise
    except FileNotFoundError as e:
        raise ManifestError(f"manifest {loc.uri} not found") from e
    except Exception as e:  # noqa: BLE001 - a corrupt table, a bad encoding
        raise ManifestError(f"manifest {loc.uri} cannot be read: {type(e).__name__}: {e}") from e
    rows = df.to_dict("records")
    resolved: list[str | None] = []
    problems: dict[int, str] = {}
    for i, r in enumerate(rows):
        p = str(r.get("path") or "").strip()
        try:
            if not p:
                raise ValueError("empty path")
            resolved.append(_resolve(data, p, allow_roots))
        except OutsideRoot as e:
            if training:
                raise ManifestError(f"manifest {loc.uri} row {i + 2}: {e}") from None
            resolved.append(None)
            problems[i] = str(e)
        except ValueError as e:
            resolved.append(None)
            problems[i] = str(e)
        if training:
            for col in ("machine_type", "section"):
                v = str(r.get(col) or "").strip()
                if v and not is_segment(v):
                    raise ManifestError(f"manifest {loc.uri} row {i + 2}: {_segment_problem(v, col)}")
    seen: dict[str, int] = {}
    for i, p in enumerate(resolved):
        if p is not None and p in seen:
            raise ManifestError(f"manifest {loc.uri}: rows {seen[p] + 2} and {i + 2} both list {p!r}")
        if p is not None:
            seen[p] = i
    # One listing per folder rather than one request per object.
    infos: dict[str, dict] = {}
    for folder in sorted({posixpath.dirname(p) for p in resolved if p}):
        try:
            infos.update({e["name"].rstrip("/"): e for e in data.fs.ls(folder, detail=True)})
        except FileNotFoundError:
            continue
    out = []
    for i, (r, p) in enumerate(zip(rows, resolved, strict=True)):
        line = i + 2  # the header is line 1
        if p is None:
            out.append(ListedClip(str(r.get("path") or ""), 0, None, f"manifest row {line}: {problems[i]}",
                                  str(r.get("machine_type") or ""), "", "bad_manifest_row"))
            continue
        info = infos.get(p)
        values = {k: v for k, v in r.items() if k != "path"}
        c = clip_from_fields(p, int(info.get("size") or 0) if info else 0, fingerprint(info) if info else "",
                             values, "manifest")
        if c.reason == "bad_manifest_row":
            c = replace(c, error=f"manifest row {line}: {c.error}")
        elif info is None or info.get("type") not in (None, "file"):
            c = replace(c, reason="not_found", error=f"manifest row {line}: no object at {data.uri_of(p)}")
        if machines and c.machine_type not in machines:
            continue
        if training and c.ok and (c.label == "anomaly" or c.split == "test"):
            what = "labelled anomaly" if c.label == "anomaly" else "a test clip"
            raise ManifestError(
                f"manifest {loc.uri} row {line}: {data.uri_of(p)} is {what}; a training manifest lists "
                "normal training clips only"
            )
        out.append(c if c.split else replace(c, split_known=False))
    return out


def manifest_table(listed: Sequence[ListedClip], data: Location):
    """The manifest of ``listed`` (usable clips only) as a pyarrow table: ``path``
    relative to the data root, the known fields, one column per attribute."""
    import pyarrow as pa

    root = data.path.rstrip("/") + "/"
    attr_names = sorted({k for c in listed if c.ok for k in c.attributes})
    rows = []
    for c in listed:
        if not c.ok:
            continue
        row = {"path": c.path[len(root) :] if c.path.startswith(root) else data.uri_of(c.path),
               "machine_type": c.machine_type, "section": c.section, "domain": c.domain, "label": c.label,
               "split": c.split}
        row.update({k: c.attributes.get(k) for k in attr_names})
        rows.append(row)
    cols = ["path", "machine_type", "section", "domain", "label", "split", *attr_names]
    return pa.Table.from_pylist(rows, schema=pa.schema([(c, pa.string()) for c in cols]))


def write_manifest(listed: Sequence[ListedClip], data: Location, out_uri: str, endpoint_url: str | None = None) -> str:
    """Write :func:`manifest_table` of ``listed`` as CSV or Parquet (by extension); returns the URI."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = manifest_table(listed, data)
    loc = open_location(out_uri, endpoint_url)
    buf = io.BytesIO()
    if loc.path.lower().endswith((".parquet", ".pq")):
        pq.write_table(table, buf)
    elif loc.path.lower().endswith(".csv"):
        pacsv.write_csv(table, buf)
    else:
        raise ValueError(f"manifest {out_uri}: use a .csv or .parquet name")
    write_bytes(loc, loc.path, buf.getvalue())
    return loc.uri
