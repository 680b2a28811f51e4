"""What a listing yields: one :class:`ListedClip` per file of an archive, usable or
with the reason it is not, and the rules that turn template or manifest values into
one (labels, domains, splits, the default section). No I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from .dcase import AUDIO_SUFFIXES, SPLITS, ClipName
from .paths import check_segment

KNOWN_FIELDS = ("machine_type", "section", "domain", "label", "split")
DEFAULT_SECTION = "00"  # the section of a clip whose template or manifest names none
LABEL_ALIASES = {"normal": "normal", "anomaly": "anomaly", "abnormal": "anomaly"}  # MIMII says "abnormal"
DOMAINS = ("source", "target")
MANIFEST_COLUMNS = ("path", "machine_type", "section", "domain", "label", "split", "attributes")


class ManifestError(ValueError):
    """A manifest that cannot be used as a whole (unreadable, no ``path`` column,
    duplicated paths, an anomaly in a training manifest, a training manifest naming a
    path outside its roots or a machine type or section that is not a folder name)."""


@dataclass(frozen=True)
class ListedClip:
    """One file of an archive and what is known about it.

    ``reason`` is empty for a clip that can be scored (or trained on); otherwise it is
    the error reason and ``error`` the message.
    """

    path: str  # path on the location's filesystem (no scheme)
    size: int
    clip: ClipName | None = None  # the parsed DCASE name, when the file has one
    error: str = ""
    machine_type: str = ""
    fingerprint: str = ""  # storage.fingerprint: ETag (S3) or mtime (local)
    reason: str = ""
    section: str | None = None
    domain: str | None = None
    label: str | None = None  # "normal" / "anomaly" / None (unlabelled)
    split: str | None = None
    attributes: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    # False when the archive does not say the split (a template without {split}, a
    # manifest row without one): training then holds normals out (asd_core.holdout)
    split_known: bool = field(default=True, compare=False)

    @property
    def ok(self) -> bool:
        return not self.reason

    @classmethod
    def from_dcase(cls, path: str, size: int, clip: ClipName, fingerprint: str = "") -> ListedClip:
        return cls(path, size, clip, machine_type=clip.machine_type, fingerprint=fingerprint,
                   section=clip.section, domain=clip.domain, label=clip.label, split=clip.split)

    def attributes_json(self) -> str | None:
        return json.dumps(self.attributes, sort_keys=True) if self.attributes else None


def is_audio_name(name: str) -> bool:
    return name.lower().endswith(AUDIO_SUFFIXES)


def _not_audio(path: str) -> str:
    return f"{path!r}: not an audio file soundfile decodes ({', '.join(AUDIO_SUFFIXES)})"


def _segment_problem(value: str, what: str) -> str:
    """Why ``value`` cannot be one folder or file name (:func:`asd_core.paths.check_segment`); "" when it can."""
    try:
        check_segment(value, what)
    except ValueError as e:
        return str(e)
    return ""



def clip_from_fields(path: str, size: int, fp: str, values: dict[str, Any], source: str) -> ListedClip:
    """A :class:`ListedClip` from placeholder or manifest values; bad values give a
    clip with reason ``bad_name`` (templates) or ``bad_manifest_row`` (manifests)."""
    reason = "bad_name" if source == "pattern" else "bad_manifest_row"
    vals = {k: ("" if v is None else str(v).strip()) for k, v in values.items()}
    mt = vals.get("machine_type", "")
    section = vals.get("section") or DEFAULT_SECTION  # no section: the archive is one section
    problem = ""
    label = LABEL_ALIASES.get(vals.get("label", "").lower()) if vals.get("label") else None
    domain = vals.get("domain", "").lower() or None
    split = vals.get("split", "").lower() or None
    # machine type and section become folder and file names (models, submission CSVs):
    # a bad one is not kept on the clip, only named in its error
    bad_mt = "machine_type is empty" if not mt else _segment_problem(mt, "machine_type")
    bad_section = _segment_problem(section, "section") if section is not None else ""
    if bad_mt:
        problem, mt = bad_mt, ""
    elif bad_section:
        problem = bad_section
    elif vals.get("label") and label is None:
        problem = f"label {vals['label']!r} is not one of normal, anomaly (abnormal)"
    elif domain is not None and domain not in DOMAINS:
        problem = f"domain {vals['domain']!r} is not one of {', '.join(DOMAINS)}"
    elif split is not None and split not in SPLITS:
        problem = f"split {vals['split']!r} is not one of {', '.join(SPLITS)}"
    attrs = {k: v for k, v in vals.items() if k not in KNOWN_FIELDS and k != "attributes" and v != ""}
    if vals.get("attributes"):
        raw = vals["attributes"]
        try:
            parsed = json.loads(raw)
            attrs.update({str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {"attributes": raw})
        except ValueError:
            attrs["attributes"] = raw
    base = ListedClip(path, size, None, "", mt, fp, "", None if bad_section else section, domain, label, split, attrs)
    if problem:
        return replace(base, reason=reason, error=f"{path!r}: {problem}")
    if not is_audio_name(path):
        return replace(base, reason="unsupported_format", error=_not_audio(path))
    return base
