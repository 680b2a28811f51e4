"""Which values may become part of a path, and which locations a manifest may name.
Pure functions; no I/O, no Ray.

Every value that ends up as one folder or file name under a user's URI (a machine
type, a section, a run id, a model id, a date, a template's ``--only`` value) goes
through :func:`check_segment`: 1 to :data:`SEGMENT_MAX` letters, digits, ``.``, ``_``
or ``-``, starting with a letter or digit. So it is never ``.`` or ``..``, never holds
a ``/``, is never hidden (``.x``), never reads as an option (``-x``) or as one of the
store's own names (``_runs``, ``_staging``, ``_SUCCESS``), and never has an ``=`` that
Hive partitioning would read as a column.

A manifest's ``path`` (relative to DATA_URI, absolute, ``file://`` or ``s3://``) must
resolve under DATA_URI or under a root the user names explicitly (``--allow-root``):
:func:`confine_manifest_path`. Roots are compared segment by segment, so
``s3://data-evil/x`` is not under ``s3://data``.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Sequence

SEGMENT_MAX = 128  # run ids had this limit; far below any filesystem's or S3's
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class OutsideRoot(ValueError):
    """A manifest path that resolves outside DATA_URI and every allowed root."""


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def is_segment(value: object) -> bool:
    """Whether ``value`` is a safe single folder or file name (see :func:`check_segment`)."""
    return isinstance(value, str) and len(value) <= SEGMENT_MAX and _SEGMENT.fullmatch(value) is not None


def check_segment(value: object, what: str) -> str:
    """``value`` when it is one safe path segment, else :class:`ValueError` in one line
    naming ``what`` and the value.

    >>> check_segment("fan", "machine type")
    'fan'
    >>> check_segment("..", "machine type")
    Traceback (most recent call last):
    ...
    ValueError: machine type '..': not a folder name (use letters, digits, '.', '_', '-', starting with a letter or digit, at most 128; no '/')
    """
    if not is_segment(value):
        raise ValueError(
            f"{what} {_show(value)}: not a folder name (use letters, digits, '.', '_', '-', starting with a letter "
            f"or digit, at most {SEGMENT_MAX}; no '/')"
        )
    return value  # type: ignore[return-value]


def is_within(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it, compared segment by segment (no
    normalisation: a path with a ``.`` or ``..`` segment is never within). Both are
    paths of one filesystem (``/abs/path`` or ``bucket/key``)."""
    parts = path.split("/")
    if any(p in (".", "..") for p in parts):
        return False
    base = root.rstrip("/").split("/")
    return parts[: len(base)] == base


def _root(uri: str, what: str) -> tuple[str, str]:
    """``(scheme, path)`` of a root: ``("s3", "bucket/prefix")`` or ``("file", "/abs")``."""
    uri = uri.strip()
    if uri.startswith("s3://"):
        key = uri[len("s3://") :].rstrip("/")
        parts = key.split("/")
        if not parts[0] or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"{what} {_show(uri)}: use s3://bucket or s3://bucket/prefix (no empty, '.' or '..' part)")
        return "s3", key
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"{what} {_show(uri)}: unsupported URI scheme; use a local path or s3://")
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    if not path:
        raise ValueError(f"{what}: empty path")
    return "file", os.path.abspath(path)


def _uri(scheme: str, path: str) -> str:
    return f"s3://{path}" if scheme == "s3" else path


def check_roots(data_uri: str, allow_roots: Sequence[str] = ()) -> list[tuple[str, str]]:
    """DATA_URI and the allowed roots as ``(scheme, path)``; :class:`ValueError` for a
    root that is malformed or on other storage than DATA_URI (clips are read through
    DATA_URI's filesystem)."""
    data = _root(data_uri, "DATA_URI")
    roots = [data]
    for r in allow_roots:
        scheme, path = _root(r, "--allow-root")
        if scheme != data[0]:
            raise ValueError(
                f"--allow-root {_show(r)} is {'on S3' if scheme == 's3' else 'local'} but DATA_URI "
                f"{_uri(*data)} is {'on S3' if data[0] == 's3' else 'local'}: clips are read through DATA_URI's storage"
            )
        roots.append((scheme, path))
    return roots


def confine_manifest_path(path: str, data_uri: str, allow_roots: Sequence[str] = ()) -> str:
    """The URI (``s3://bucket/key`` or ``/abs/path``) a manifest ``path`` names, when it
    is under ``data_uri`` or one of ``allow_roots``.

    A relative path is joined to DATA_URI and normalised (``a/../b.wav`` is ``b.wav``);
    an absolute or ``file://`` path is normalised on a local DATA_URI and read relative
    to an S3 one (as before); an ``s3://`` URI is taken as written. Raises
    :class:`OutsideRoot` for a path outside every root (``../x``, ``/etc/x``,
    ``s3://other/x``, ``s3://b/data/../x``) and :class:`ValueError` for an empty path,
    an unsupported scheme or an ``s3://`` path on a local DATA_URI.
    """
    roots = check_roots(data_uri, allow_roots)
    scheme, root = roots[0]
    p = str(path).strip()
    if not p:
        raise ValueError("empty path")
    if p.startswith("s3://"):
        if scheme != "s3":
            raise ValueError(f"{p!r} is on S3 but the data root {data_uri} is not")
        target = p[len("s3://") :]
    elif "://" in p and not p.startswith("file://"):
        raise ValueError(f"{p!r}: unsupported URI scheme")
    else:
        local = p[len("file://") :] if p.startswith("file://") else p
        if local.startswith("/") and scheme == "file":
            target = posixpath.normpath(local)
        else:
            target = posixpath.normpath(posixpath.join(root, local.lstrip("/")))
    if any(s == scheme and is_within(target, r) for s, r in roots):
        return _uri(scheme, target)
    allowed = ", ".join(_uri(s, r) for s, r in roots)
    raise OutsideRoot(
        f"{p!r} resolves to {_uri(scheme, target)}, outside {allowed}; list clips under DATA_URI or name their "
        "root with --allow-root"
    )
