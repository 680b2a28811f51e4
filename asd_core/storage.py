"""Storage: every path is a URI (``s3://bucket/prefix`` or a local path).

One fsspec filesystem object is built per URI scheme and endpoint and passed to
everything that does I/O (our readers and writers, Ray Data, Ray Train), so a
custom S3 endpoint (MinIO, the embedded moto server) reaches every process.

Endpoint: the ``endpoint_url`` argument, else ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL``. Credentials: the standard AWS chain (environment, profile,
instance role); nothing here reads, stores or logs a secret.
"""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Location:
    """A filesystem and a path on it (the path has no ``s3://`` prefix)."""

    fs: Any  # fsspec.AbstractFileSystem
    path: str
    protocol: str  # "file" or "s3"

    def join(self, *parts: str) -> Location:
        return Location(self.fs, posixpath.join(self.path, *parts), self.protocol)

    @property
    def uri(self) -> str:
        return f"s3://{self.path}" if self.protocol == "s3" else self.path

    def uri_of(self, path: str) -> str:
        """The URI of another ``path`` on the same filesystem."""
        return f"s3://{path}" if self.protocol == "s3" else path


def endpoint_from_env() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def open_location(uri: str, endpoint_url: str | None = None) -> Location:
    """Resolve ``uri`` to a :class:`Location`.

    >>> open_location("/tmp/x").protocol
    'file'
    """
    if uri.startswith("s3://"):
        import s3fs  # imported here: local-only users never pay for it

        endpoint = endpoint_url or endpoint_from_env()
        client_kwargs = {"endpoint_url": endpoint} if endpoint else {}
        # skip_instance_cache: a fresh object per call keeps endpoints apart in tests
        fs = s3fs.S3FileSystem(client_kwargs=client_kwargs, skip_instance_cache=True)
        return Location(fs, uri[len("s3://") :].rstrip("/"), "s3")
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"unsupported URI scheme in {uri!r}: use a local path or s3://")
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    return Location(fsspec.filesystem("file"), os.path.abspath(path), "file")


def pyarrow_filesystem(loc: Location):
    """A ``pyarrow.fs.FileSystem`` over the same store, for Ray Data and Ray Train."""
    import pyarrow.fs as pafs

    if loc.protocol == "file":
        return pafs.LocalFileSystem()
    return pafs.PyFileSystem(pafs.FSSpecHandler(loc.fs))


def fingerprint(info: dict[str, Any]) -> str:
    """What changes when an object is replaced, from fsspec listing info: the ETag on
    S3 (content hash for simple uploads), the modification time (ns) on local disks;
    "" when the filesystem gives neither. With the size it keys incremental runs."""
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return f"etag:{str(etag).strip(chr(34))}"
    mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
    if mtime is None:
        return ""
    if hasattr(mtime, "timestamp"):
        mtime = mtime.timestamp()
    return f"mtime:{round(float(mtime) * 1e9)}"


def read_bytes(loc: Location, path: str) -> bytes:
    return loc.fs.cat_file(path)


def read_many(loc: Location, paths: Sequence[str], chunk: int = 32) -> Iterator[tuple[str, bytes | Exception]]:
    """Yield ``(path, bytes | Exception)`` for every path, in order, fetched ``chunk``
    at a time (concurrent requests on object stores). A file that cannot be read
    gives its exception instead of bytes; nothing raises for one bad file."""
    for start in range(0, len(paths), chunk):
        part = list(paths[start : start + chunk])
        try:
            got = loc.fs.cat(part, on_error="return")
        except Exception as e:  # the whole request failed: retry one by one
            log.debug("batch read failed (%s); reading one by one", e)
            got = {}
            for p in part:
                try:
                    got[p] = loc.fs.cat_file(p)
                except Exception as e1:  # noqa: BLE001 - reported per file
                    got[p] = e1
        if not isinstance(got, dict):  # a single path gives bytes
            got = {part[0]: got}
        for p in part:
            yield p, got.get(p, FileNotFoundError(p))


def write_bytes(loc: Location, path: str, data: bytes) -> None:
    parent = posixpath.dirname(path)
    if loc.protocol == "file" and parent:
        loc.fs.makedirs(parent, exist_ok=True)
    with loc.fs.open(path, "wb") as f:
        f.write(data)


def ensure_bucket(loc: Location) -> None:
    """Create the bucket of an s3 location when it does not exist (local: the folder)."""
    if loc.protocol == "file":
        loc.fs.makedirs(loc.path, exist_ok=True)
        return
    bucket = loc.path.split("/", 1)[0]
    if not loc.fs.exists(bucket):
        loc.fs.mkdir(bucket)
