"""Run an ``asd`` command as a Ray job on a cluster and exit with the command's own
exit code (what ``ray job submit`` cannot do: it exits 1 for any failure).

    asd submit [--address URL] [--working-dir DIR] -- score DATA_URI MODELS_URI OUT_URI --incremental

Submits ``python -m jobs.cli <command> ...`` through Ray's job API, follows the job's
log once (the command's own lines, its one-line error included), waits for the job
to end and exits with the driver's exit code: ``asd score`` keeps its 0 published /
1 published with too many failures / 2 nothing could start, ``asd train`` its own.
A job whose command never ran (the runtime environment could not be set up, the
driver was killed) exits 3, and the last line says why; a cluster that cannot be
reached, or refuses the submission, exits 3 as well. Ctrl-C or SIGTERM (a cron
``timeout``) stops the job, waits for it to end and exits 130. ``--no-wait`` prints
the job id and returns at once; ``--attach JOB_ID`` follows a submitted job.

The address is ``--address`` or ``$RAY_ADDRESS`` (the dashboard, e.g.
``http://head:8265``); token authentication follows ``$RAY_AUTH_MODE`` like the
``ray`` command. Credentials never travel with the job: see the README on how a
job reaches the object store.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import signal
import sys
import time
from typing import Any

# The job never ran its command, or the cluster could not be asked: neither 0 nor
# the commands' own 1 and 2.
NOT_RUN = 3
STOPPED = 130
_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def build_parser() -> argparse.ArgumentParser:
    from jobs.common import HelpFormatter, describe

    p = argparse.ArgumentParser(prog="asd submit", description=describe(__doc__, 4), formatter_class=HelpFormatter)
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="the asd command and its arguments, after '--' (e.g. -- score DATA MODELS OUT)")
    p.add_argument("--address", default=None,
                   help="Ray dashboard address, e.g. http://head:8265 (default: $RAY_ADDRESS)")
    p.add_argument("--working-dir", default=None, metavar="DIR",
                   help="upload this folder as the job's working directory (a checkout of this project); "
                        "unset when the project is installed on the cluster's nodes")
    p.add_argument("--python", default="python",
                   help="the cluster's Python that has the project installed (or finds it in --working-dir)")
    p.add_argument("--job-id", default=None,
                   help="submission id (default: Ray's); a second submission with the same id is refused")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return once it is submitted")
    p.add_argument("--attach", default=None, metavar="JOB_ID",
                   help="follow an already submitted job instead of submitting one")
    return p


def entrypoint(python: str, command: list[str]) -> str:
    """The job's shell command line: ``python -m jobs.cli <command...>``, quoted."""
    return shlex.join([python, "-m", "jobs.cli", *command])


def exit_code(status: str, driver_exit_code: int | None) -> int:
    """The wrapper's exit code for a finished job: the command's own where it ran."""
    if status == "STOPPED":
        return STOPPED
    if driver_exit_code is not None:
        return int(driver_exit_code)
    return 0 if status == "SUCCEEDED" else NOT_RUN


def _say(msg: str) -> None:
    print(f"asd submit: {msg}", file=sys.stderr, flush=True)


class _Stop(Exception):
    """SIGTERM while following a job."""


async def _follow(client: Any, job_id: str) -> None:
    async for chunk in client.tail_job_logs(job_id):
        sys.stdout.write(chunk)
        sys.stdout.flush()


def _wait_terminal(client: Any, job_id: str, timeout: float | None = None) -> Any:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        info = client.get_job_info(job_id)
        if _status(info) in _TERMINAL or (deadline is not None and time.monotonic() > deadline):
            return info
        time.sleep(1.0)


def _status(info: Any) -> str:
    status = info.status
    return str(getattr(status, "value", status))


def follow(client: Any, job_id: str) -> int:
    """Print the job's log as it comes, wait for its end; the exit code of :func:`exit_code`.
    Ctrl-C / SIGTERM stop the job."""

    def on_term(signum, frame):  # noqa: ARG001
        raise _Stop

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        try:
            asyncio.run(_follow(client, job_id))
            info = _wait_terminal(client, job_id)  # the log can end a moment before the status
        except (KeyboardInterrupt, _Stop):
            _say(f"stopping job {job_id}")
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            client.stop_job(job_id)
            info = _wait_terminal(client, job_id, timeout=60)
            _say(f"job {job_id} {_status(info)}")
            return STOPPED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    status, code = _status(info), info.driver_exit_code
    rc = exit_code(status, code)
    if code is None and status != "SUCCEEDED":
        # the command never ran: Ray's message is the only account of why (its first line)
        why = (info.message or "no reason given").strip().splitlines()[0]
        _say(f"job {job_id} {status}: the command did not run: {why} (exit {rc})")
    else:
        _say(f"job {job_id} {status} (exit {rc})")
    return rc


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command and not args.attach:
        _say("no command given: asd submit [options] -- score DATA_URI MODELS_URI OUT_URI ...")
        return 2
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(args.address)
        if args.attach:
            job_id = args.attach
        else:
            runtime_env = {"working_dir": args.working_dir} if args.working_dir else None
            job_id = client.submit_job(entrypoint=entrypoint(args.python, command), runtime_env=runtime_env,
                                       submission_id=args.job_id)
            _say(f"submitted job {job_id}: asd {shlex.join(command)}")
    except Exception as e:  # noqa: BLE001 - connection refused, bad token, duplicate id: one line
        where = args.address or "$RAY_ADDRESS"
        _say(f"cannot submit to {where}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
        return NOT_RUN
    if args.no_wait:
        print(job_id)
        return 0
    return follow(client, job_id)


if __name__ == "__main__":
    raise SystemExit(main())
