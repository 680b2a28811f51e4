"""Run names and the per-output lease: what keeps runs inside their folder and
two runs from writing one output at the same time. No Ray.

Run ids (``asd score --run-id``, ``asd train --run-name``) become folder names under
a user's URI, so they are one path segment (:func:`asd_core.paths.check_segment`:
letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit; no ``/``, no
``=`` that Hive partitioning would read as a column).

The lease is one small JSON object (``{"owner": run_id, "expires_at": ...}``) created
with an exclusive write (``O_EXCL`` on a local disk, ``If-None-Match: *`` on S3), so
of two runs that start together exactly one gets it. A lease whose expiry has passed
(its run was killed before it could release it) is taken over.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from .paths import check_segment
from .storage import Location, read_bytes

log = logging.getLogger(__name__)

DEFAULT_LEASE_TTL_S = 6 * 3600.0  # longer than any nightly run; a killed run blocks at most this long


def validate_run_id(run_id: str, what: str = "run id") -> str:
    """``run_id`` if it is a safe single folder name, else :class:`ValueError`
    (:func:`asd_core.paths.check_segment`)."""
    return check_segment(run_id, what)


def new_run_id() -> str:
    """``20260124T021500Z-1a2b3c``: sortable by start time, unique (scoring and training runs)."""
    import uuid

    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


class LeaseHeld(RuntimeError):
    """Another run holds the lease."""


@dataclass
class Lease:
    """An exclusive lease on ``<loc>/<path>`` for run ``owner``.

    ``acquire`` raises :class:`LeaseHeld` (naming the holder and its expiry) when a live
    lease exists; ``release`` deletes the object if this run still owns it. Use as a
    context manager.
    """

    loc: Location
    path: str
    owner: str
    ttl_s: float = DEFAULT_LEASE_TTL_S

    @property
    def uri(self) -> str:
        return self.loc.uri_of(self.path)

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps(
            {
                "owner": self.owner,
                "acquired_at": _iso(now),
                "expires_at": _iso(now + self.ttl_s),
                "expires_at_epoch": now + self.ttl_s,
            }
        ).encode()

    def _create(self) -> bool:
        if self.loc.protocol == "file":
            self.loc.fs.makedirs(posixpath.dirname(self.path), exist_ok=True)
        try:
            with self.loc.fs.open(self.path, "xb") as f:
                f.write(self._body())
            return True
        except FileExistsError:
            return False

    def holder(self) -> dict | None:
        try:
            return json.loads(read_bytes(self.loc, self.path))
        except FileNotFoundError:
            return None
        except ValueError:  # unreadable lease: treat as expired
            return {"owner": "?", "expires_at_epoch": 0.0}

    def acquire(self) -> Lease:
        for _ in range(3):
            if self._create():
                return self
            held = self.holder()
            if held is None:  # released in between: try again
                continue
            if float(held.get("expires_at_epoch", 0.0)) > time.time():
                raise LeaseHeld(
                    f"{self.uri} is held by run {held.get('owner')!r} until {held.get('expires_at')}: another run "
                    "is writing this output; wait for it to finish (or delete the lease if that run is dead)"
                )
            log.warning("lease %s of run %r expired at %s; taking it over", self.uri, held.get("owner"),
                        held.get("expires_at"))
            try:
                self.loc.fs.rm(self.path)
            except FileNotFoundError:
                pass
        raise LeaseHeld(f"{self.uri}: could not take the lease (contended)")

    def release(self) -> None:
        held = self.holder()
        if held is not None and held.get("owner") == self.owner:
            try:
                self.loc.fs.rm(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
