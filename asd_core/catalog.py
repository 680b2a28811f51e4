"""Which clips an archive holds: one :class:`ListedClip` per file, from one of three
sources.

- The DCASE layout (zero configuration): ``<root>/<machine_type>/<split>/section_...wav``
  (:func:`list_archive`).
- A path template (``--pattern``): ``{date}/{machine_type}/{name}.flac`` over any tree;
  each ``{placeholder}`` matches one run of characters inside a path segment and
  becomes a column (:class:`PathPattern`, :func:`list_pattern`). ``machine_type``,
  ``section``, ``domain``, ``label`` and ``split`` are understood; any other name
  (``date``, ``name``, ``id``) is kept as an attribute.
- A manifest (``--manifest``): a CSV or Parquet table with ``path`` (a URI or relative
  to the data root) and ``machine_type``, optional ``section``, ``domain``, ``label``,
  ``split``, ``attributes``; every other column is an attribute
  (:func:`read_manifest`). Exactly the listed clips are used.

Nothing is dropped: a file that cannot be used is listed with a ``reason``
(``bad_name``, ``unsupported_format``, ``not_found``, ``bad_manifest_row``) and a
message, and the scoring job turns it into an error row. No Ray.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .clips import (  # noqa: F401  the listing's names, importable from here
    DEFAULT_SECTION,
    DOMAINS,
    KNOWN_FIELDS,
    LABEL_ALIASES,
    MANIFEST_COLUMNS,
    ListedClip,
    ManifestError,
    _not_audio,
    _segment_problem,
    clip_from_fields,
    is_audio_name,
)
from .dcase import SPLITS, ClipNameError, parse_path
from .manifests import manifest_table, read_manifest, write_manifest  # noqa: F401
from .paths import check_segment
from .storage import Location, fingerprint


# ---------------------------------------------------------------- the DCASE layout
def list_archive(loc: Location, split: str | None = "test", machines: Sequence[str] | None = None) -> list[ListedClip]:
    """Every file under ``<loc>/<machine_type>/<split>/`` (sub-folders included), sorted by path.

    Machine types are whatever folders the archive holds (optionally filtered by
    ``machines``). A file that is not audio is listed with reason
    ``unsupported_format``, one in a sub-folder of the split or with a non-DCASE name
    with ``bad_name``.
    """
    out: list[ListedClip] = []
    splits = [split] if split else list(SPLITS)
    for mt_path in sorted(loc.fs.ls(loc.path, detail=False)):
        mt = mt_path.rstrip("/").rsplit("/", 1)[-1]
        if machines and mt not in machines:
            continue
        bad_type = _segment_problem(mt, "machine type folder")
        for sp in splits:
            d = f"{mt_path.rstrip('/')}/{sp}"
            if not loc.fs.isdir(d):
                continue
            for name, info in sorted(loc.fs.find(d, detail=True).items()):
                if info.get("type") != "file":
                    continue
                size, fp = int(info.get("size") or 0), fingerprint(info)
                if bad_type:
                    out.append(ListedClip(name, size, None, f"{name!r}: {bad_type}", "", fp, "bad_name", split=sp))
                    continue
                if not is_audio_name(name):
                    out.append(ListedClip(name, size, None, _not_audio(name), mt, fp, "unsupported_format", split=sp))
                    continue
                try:
                    out.append(ListedClip.from_dcase(name, size, parse_path(name), fp))
                except ClipNameError as e:
                    out.append(ListedClip(name, size, None, str(e), mt, fp, "bad_name", split=sp))
    return out


def machine_types(loc: Location) -> list[str]:
    """The machine-type folders of an archive in the DCASE layout."""
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in loc.fs.ls(loc.path, detail=False) if loc.fs.isdir(p))


# ---------------------------------------------------------------- path templates
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class PathPattern:
    """A path template relative to the data root, e.g. ``{date}/{machine_type}/{name}.flac``.

    Each placeholder matches one or more characters other than ``/``; the literal
    parts must match exactly, except a trailing file extension, which matches in any
    case (``.flac`` matches ``.FLAC``). ``{machine_type}`` is required.

    >>> PathPattern.parse("{machine_type}/{section}/{label}/{name}.wav").match("fan/id_00/abnormal/0001.WAV")
    {'machine_type': 'fan', 'section': 'id_00', 'label': 'abnormal', 'name': '0001'}
    """

    template: str
    regex: re.Pattern
    fields: tuple[str, ...]

    @classmethod
    def parse(cls, template: str) -> PathPattern:
        t = template.strip().strip("/")
        if any(part in (".", "..") for part in t.split("/")):
            raise ValueError(f"--pattern {template!r} has a '.' or '..' folder: templates are below the data root")
        fields = tuple(_PLACEHOLDER.findall(t))
        if "machine_type" not in fields:
            raise ValueError(f"--pattern {template!r} has no {{machine_type}} placeholder")
        dup = sorted({f for f in fields if fields.count(f) > 1})
        if dup:
            raise ValueError(f"--pattern {template!r} repeats {dup}")
        parts, pos = [], 0
        for m in _PLACEHOLDER.finditer(t):
            parts.append(re.escape(t[pos : m.start()]))
            parts.append(f"(?P<{m[1]}>[^/]+?)")
            pos = m.end()
        tail = t[pos:]
        ext = re.search(r"\.[A-Za-z0-9]+$", tail)
        if ext:  # the extension in any case
            parts.append(re.escape(tail[: ext.start()]) + r"\.(?i:" + re.escape(ext[0][1:]) + ")")
        else:
            parts.append(re.escape(tail))
        return cls(template, re.compile("^" + "".join(parts) + "$"), fields)

    def match(self, relpath: str) -> dict[str, str] | None:
        m = self.regex.match(relpath)
        return dict(m.groupdict()) if m else None


def parse_only(values: Sequence[str] | None) -> dict[str, str | list[str]]:
    """``["date=2026-11-24"]`` -> ``{"date": "2026-11-24"}`` (``--only``); several
    values of one placeholder (the flag repeated, or ``date=A,B``) select all of them:
    ``{"date": ["A", "B"]}``. A value becomes part of the listed folder: it must be one
    folder name (:func:`asd_core.paths.check_segment`)."""
    out: dict[str, list[str]] = {}
    for v in values or []:
        key, eq, val = v.partition("=")
        key = key.strip()
        if not eq or not _PLACEHOLDER.fullmatch("{" + key + "}") or not val.strip(", ") or "/" in val:
            raise ValueError(f"--only {v!r}: use PLACEHOLDER=VALUE, e.g. date=2026-11-24 (or date=A,B)")
        for one in (x.strip() for x in val.split(",")):
            if one and one not in out.setdefault(key, []):
                out[key].append(check_segment(one, f"--only {key}"))
    return {k: vs[0] if len(vs) == 1 else vs for k, vs in out.items()}


def _only_combinations(only: dict[str, str | Sequence[str]]) -> list[dict[str, str]]:
    """Every combination of ``--only`` values: ``{"date": ["A", "B"]}`` -> two dicts."""
    import itertools

    keys = list(only)
    values = [[v] if isinstance(v, str) else list(v) for v in only.values()]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def list_pattern(
    loc: Location,
    pattern: PathPattern | str,
    split: str | None = None,
    machines: Sequence[str] | None = None,
    only: dict[str, str | Sequence[str]] | None = None,
) -> list[ListedClip]:
    """Every file under ``loc`` matched against ``pattern``, sorted by path.

    A file the template does not match is listed with reason ``bad_name`` (its machine
    type unknown), or ``not_audio`` when its name is not an audio file's (a
    ``notes.txt`` in a night's folder: a row, never an error of the night). ``split`` keeps only clips whose ``{split}`` is that split (all
    clips when the template has none); ``machines`` filters machine types. ``only``
    fixes placeholders (``{"date": "2026-11-24"}``): only the folders those values
    name are listed, so a nightly run over one date does not list the whole archive;
    several values of a placeholder list each of their folders.
    """
    if only and any(not isinstance(v, str) for v in only.values()):
        found: dict[str, ListedClip] = {}
        for combo in _only_combinations(only):
            for c in list_pattern(loc, pattern, split, machines, combo):
                found[c.path] = c
        return [found[p] for p in sorted(found)]
    pat = PathPattern.parse(pattern) if isinstance(pattern, str) else pattern
    only = dict(only or {})
    unknown = sorted(set(only) - set(pat.fields))
    if unknown:
        raise ValueError(f"--only {unknown} not placeholders of --pattern {pat.template!r}")
    for key, val in only.items():  # the values become folder names of the listing
        check_segment(val, f"--only {key}")
    if only:  # the fixed values become literal text; the longest literal folder prefix is listed
        fixed = _PLACEHOLDER.sub(lambda m: only.get(m[1], m[0]), pat.template.strip().strip("/"))
        pat = PathPattern.parse(fixed)
        pat = PathPattern(pattern if isinstance(pattern, str) else pattern.template, pat.regex, pat.fields)
        literal = fixed.split("{", 1)[0]
        prefix = literal.rsplit("/", 1)[0] if "/" in literal else ""
    else:
        prefix = ""
    root = loc.path.rstrip("/")
    start = f"{root}/{prefix}" if prefix else root
    found = loc.fs.find(start, detail=True) if not prefix or loc.fs.exists(start) else {}
    out = []
    for name, info in sorted(found.items()):
        if info.get("type") != "file":
            continue
        size, fp = int(info.get("size") or 0), fingerprint(info)
        rel = name[len(root) + 1 :] if name.startswith(root + "/") else name
        values = pat.match(rel)
        if values is None:
            if machines:
                continue
            if is_audio_name(rel):
                out.append(ListedClip(name, size, None, f"{rel!r} does not match --pattern {pat.template!r}",
                                      fingerprint=fp, reason="bad_name"))
            else:  # notes.txt, a .csv next to the recordings: listed, never an error
                out.append(ListedClip(name, size, None, f"{rel!r}: not audio; not scored", fingerprint=fp,
                                      reason="not_audio"))
            continue
        c = clip_from_fields(name, size, fp, {**values, **only}, "pattern")
        if machines and c.machine_type not in machines:
            continue
        if split and "split" in pat.fields and c.split not in (None, split):
            continue
        out.append(c if c.split or not split else replace(c, split=split, split_known=False))
    return out


# ---------------------------------------------------------------- one entry point
def list_clips(
    data: Location,
    *,
    split: str | None = "test",
    machines: Sequence[str] | None = None,
    pattern: str | None = None,
    manifest: str | None = None,
    endpoint_url: str | None = None,
    training: bool = False,
    only: dict[str, str | Sequence[str]] | None = None,
    allow_roots: Sequence[str] = (),
) -> list[ListedClip]:
    """The clips of ``data`` from a manifest, a template (``only`` fixes some of its
    placeholders), or the DCASE layout; giving both a manifest and a template is an
    error. ``allow_roots`` (``--allow-root``): roots besides ``data`` that a
    manifest's paths may name."""
    if manifest and pattern:
        raise ValueError("give --manifest or --pattern, not both")
    if allow_roots and not manifest:
        raise ValueError("--allow-root needs --manifest")
    if manifest:
        return read_manifest(manifest, data, endpoint_url=endpoint_url, training=training, machines=machines,
                             allow_roots=allow_roots)
    if pattern:
        return list_pattern(data, pattern, split=split, machines=machines, only=only)
    if only:
        raise ValueError("--only needs --pattern")
    return list_archive(data, split=split, machines=machines)


def listing_problem(
    listed: Sequence[ListedClip], data: Location, *, machines: Sequence[str] | None = None,
    split: str | None = "test", layout: str = "dcase",
) -> str | None:
    """Why a listing cannot be what the user meant, in one line naming the fix, or
    None: nothing listed at all, or ``--machines`` names a type the archive lacks.
    Checked before anything starts."""
    found = sorted({c.machine_type for c in listed if c.machine_type})
    missing = [m for m in machines or [] if m not in found]
    where = f"<root>/<machine_type>/{split or '<split>'}/" if layout == "dcase" else layout
    if missing:
        if layout == "dcase" and not found:
            found = machine_types(data)
        return (f"--machines {','.join(missing)}: no such machine type with clips under {data.uri} "
                f"(found: {', '.join(found) or 'none'})")
    if not listed:
        if layout == "dcase":
            folders = machine_types(data)
            sub = sorted({posixpath.basename(p.rstrip("/")) for f in folders[:20]
                          for p in data.fs.ls(f"{data.path}/{f}", detail=False) if data.fs.isdir(p)})
            hint = (f"; its folders ({', '.join(folders[:8])}) hold {', '.join(sub[:8]) or 'no folders'}, not "
                    f"'{split or 'train/test'}': is DATA_URI one level too high, or is this not the DCASE layout "
                    "(use --pattern or --manifest)?") if folders else ""
            return f"no files under {data.uri} in the layout {where}{hint}"
        return f"no files listed under {data.uri} ({layout})"
    return None


def list_checked(
    data: Location, *, split: str = "test", machines: Sequence[str] | None = None, pattern: str | None = None,
    manifest: str | None = None, endpoint_url: str | None = None, only: dict | None = None, training: bool = False,
    allow_roots: Sequence[str] = (),
) -> list[ListedClip]:
    """:func:`list_clips`, refused with a one-line ``ValueError`` when the listing
    cannot be what the user meant (:func:`listing_problem`); what jobs call before Ray.
    A scoring night that ``--only`` selects and that holds no file (a plant holiday) is
    an empty listing, not an error, when DATA_URI itself exists."""
    listed = list_clips(data, split=split, machines=machines, pattern=pattern, manifest=manifest,
                        endpoint_url=endpoint_url, only=only, training=training, allow_roots=allow_roots)
    if not listed and pattern and only and not training and not machines and data.fs.isdir(data.path):
        return []
    layout = f"manifest {manifest}" if manifest else f"--pattern {pattern!r}" if pattern else "dcase"
    problem = listing_problem(listed, data, machines=machines, split=split, layout=layout)
    if problem:
        raise ValueError(problem)
    return listed
