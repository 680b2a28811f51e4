"""Progress of a long run, for a person at a terminal and for a log file.

In a terminal (stderr is a TTY) a tqdm bar with the rate and ETA; otherwise (cron,
``ray job logs``, CI) one log line every ``interval_s`` seconds::

    scoring: 120/400 clips (30%), 3.2 clips/s, ETA 1m27s

``ASD_PROGRESS_INTERVAL`` (seconds) sets the interval of the log lines (default 30);
``ASD_PROGRESS=log`` forces log lines in a terminal, ``ASD_PROGRESS=off`` silences both.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time

DEFAULT_INTERVAL_S = 30.0


def _eta(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """Counts ``done`` of ``total`` units; ``update(n)`` after each piece of work,
    ``close()`` (or the context manager) at the end, which logs the final line."""

    def __init__(self, what: str, total: int, unit: str = "clips", *, log: logging.Logger | None = None,
                 interval_s: float | None = None, stream=None):
        self.what, self.total, self.unit = what, total, unit
        self.log = log or logging.getLogger("asd.progress")
        env = os.environ.get("ASD_PROGRESS_INTERVAL")
        self.interval_s = interval_s if interval_s is not None else float(env) if env else DEFAULT_INTERVAL_S
        self.stream = stream or sys.stderr
        mode = os.environ.get("ASD_PROGRESS", "auto")
        self.enabled = mode != "off"
        self.bar = None
        if self.enabled and mode != "log" and getattr(self.stream, "isatty", lambda: False)():
            try:
                from tqdm import tqdm

                size = shutil.get_terminal_size((100, 20))  # a new pty may report 0 x 0: tqdm would hide the bar
                self.bar = tqdm(total=total, desc=what, unit=f" {unit}", file=self.stream,
                                ncols=min(size.columns or 100, 120), nrows=size.lines or 20, smoothing=0.1)
            except ImportError:  # no tqdm: log lines
                self.bar = None
        self.done = 0
        self.t0 = time.monotonic()
        self.last = self.t0

    def line(self) -> str:
        dt = max(time.monotonic() - self.t0, 1e-9)
        rate = self.done / dt
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = f", ETA {_eta((self.total - self.done) / rate)}" if rate > 0 and self.total > self.done else ""
        return f"{self.what}: {self.done}/{self.total} {self.unit}{pct}, {rate:.2f} {self.unit}/s{eta}"

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.interval_s:
            self.last = now
            self.log.info("%s", self.line())

    def note(self, message: str) -> None:
        """A line about the run (an epoch's loss, a type finished): above the bar in a
        terminal, a log line otherwise."""
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            self.log.info("%s", message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.enabled:
            self.log.info("%s, %.1f s", self.line(), time.monotonic() - self.t0)
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
