"""DCASE 2023 Task 2 file names: parse and build them as typed records.

Development / labelled names::

    section_00_source_train_normal_0000_<attrs>.wav
    section_00_target_test_anomaly_0012_<attrs>.wav

Evaluation (unlabelled) names::

    section_00_0000.wav

The machine type is not part of the file name: it is the folder two levels up
(``<root>/<machine_type>/<split>/<file>``), so it is passed in by the caller or
taken from the path by :func:`parse_path`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

DOMAINS = ("source", "target")
SPLITS = ("train", "test")
LABELS = ("normal", "anomaly")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")  # what soundfile (libsndfile) decodes and clips use

_LABELLED = re.compile(
    r"^section_(?P<section>\d{2})_(?P<domain>source|target)_(?P<split>train|test)_"
    r"(?P<label>normal|anomaly)_(?P<index>\d{4})(?:_(?P<attrs>.+))?$"
)
_EVAL = re.compile(r"^section_(?P<section>\d{2})_(?P<index>\d{4})(?:_(?P<attrs>.+))?$")


class ClipNameError(ValueError):
    """A file name that does not follow the DCASE 2023 Task 2 conventions."""


@dataclass(frozen=True)
class ClipName:
    """One clip's identity as encoded in its DCASE file name.

    ``domain`` and ``label`` are ``None`` for unlabelled evaluation names;
    ``attributes`` keeps the raw suffix (``m-n_X``, ``vel_620_ac_0.08``) exactly,
    ``attribute_pairs`` splits it into (key, value) pairs where that is possible.
    """

    machine_type: str
    section: str
    index: int
    split: str = "test"
    domain: str | None = None
    label: str | None = None
    attributes: str = ""
    suffix: str = ".wav"
    attribute_pairs: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.machine_type or "/" in self.machine_type:
            raise ClipNameError(f"bad machine type {self.machine_type!r}")
        if not re.fullmatch(r"\d{2}", self.section):
            raise ClipNameError(f"section must be two digits, got {self.section!r}")
        if self.split not in SPLITS:
            raise ClipNameError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.domain is not None and self.domain not in DOMAINS:
            raise ClipNameError(f"domain must be one of {DOMAINS}, got {self.domain!r}")
        if self.label is not None and self.label not in LABELS:
            raise ClipNameError(f"label must be one of {LABELS}, got {self.label!r}")
        if (self.domain is None) != (self.label is None):
            raise ClipNameError("domain and label are given together or not at all")
        if not 0 <= self.index <= 9999:
            raise ClipNameError(f"index must be 0..9999, got {self.index}")
        if self.suffix not in AUDIO_SUFFIXES:
            raise ClipNameError(f"suffix must be one of {AUDIO_SUFFIXES}, got {self.suffix!r}")
        if not self.attribute_pairs and self.attributes:
            object.__setattr__(self, "attribute_pairs", split_attributes(self.attributes))

    @property
    def is_labelled(self) -> bool:
        return self.label is not None

    @property
    def is_anomaly(self) -> bool | None:
        """True / False for labelled clips, None when the label is unknown."""
        return None if self.label is None else self.label == "anomaly"

    @property
    def filename(self) -> str:
        return build_name(self)

    def relpath(self) -> str:
        """``<machine_type>/<split>/<file name>``, the path below an archive root."""
        return f"{self.machine_type}/{self.split}/{self.filename}"


def split_attributes(attrs: str) -> tuple[tuple[str, str], ...]:
    """Split ``vel_620_ac_0.08`` into ``(("vel", "620"), ("ac", "0.08"))``.

    Returns ``()`` when the suffix is not a clean key/value sequence; the raw string
    is always kept on the record, so nothing is lost.
    """
    parts = attrs.split("_")
    if len(parts) % 2:
        return ()
    return tuple((parts[i], parts[i + 1]) for i in range(0, len(parts), 2))


def build_name(clip: ClipName) -> str:
    """The file name of ``clip`` (no folders)."""
    tail = f"_{clip.attributes}" if clip.attributes else ""
    if clip.label is None:
        return f"section_{clip.section}_{clip.index:04d}{tail}{clip.suffix}"
    return (
        f"section_{clip.section}_{clip.domain}_{clip.split}_{clip.label}_"
        f"{clip.index:04d}{tail}{clip.suffix}"
    )


def parse_name(filename: str, machine_type: str, split: str | None = None) -> ClipName:
    """Parse a bare DCASE file name.

    ``split`` is only needed for evaluation names, which do not carry one (default
    ``test``). Raises :class:`ClipNameError` naming the file when it does not match.
    """
    stem, dot, ext = filename.rpartition(".")
    suffix = f".{ext.lower()}" if dot else ""
    if suffix not in AUDIO_SUFFIXES:
        raise ClipNameError(f"{filename!r}: not an audio file name ({', '.join(AUDIO_SUFFIXES)})")
    m = _LABELLED.match(stem)
    if m:
        return ClipName(
            machine_type=machine_type,
            section=m["section"],
            index=int(m["index"]),
            split=m["split"],
            domain=m["domain"],
            label=m["label"],
            attributes=m["attrs"] or "",
            suffix=suffix,
        )
    m = _EVAL.match(stem)
    if m:
        return ClipName(
            machine_type=machine_type,
            section=m["section"],
            index=int(m["index"]),
            split=split or "test",
            attributes=m["attrs"] or "",
            suffix=suffix,
        )
    raise ClipNameError(
        f"{filename!r}: not a DCASE 2023 Task 2 name; expected "
        "'section_00_<source|target>_<train|test>_<normal|anomaly>_0000[_attrs].wav' "
        "or 'section_00_0000.wav'"
    )


def parse_path(path: str) -> ClipName:
    """Parse ``.../<machine_type>/<split>/<file>`` (local path or URI).

    The machine type is the folder above the split folder; the split folder must be
    ``train`` or ``test`` and must agree with a labelled name's own split.
    """
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if len(parts) < 3:
        raise ClipNameError(f"{path!r}: expected <machine_type>/<train|test>/<file>")
    machine_type, split_dir, filename = parts[-3], parts[-2], parts[-1]
    if split_dir not in SPLITS:
        raise ClipNameError(f"{path!r}: folder {split_dir!r} is neither 'train' nor 'test'")
    clip = parse_name(filename, machine_type=machine_type, split=split_dir)
    if clip.split != split_dir:
        raise ClipNameError(f"{path!r}: name says split {clip.split!r}, folder says {split_dir!r}")
    return clip
