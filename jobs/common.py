"""Pieces every job shares: common flags, Ray start-up, machine lists."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
from typing import Any

# Settings a Ray worker needs to reach the same object store as the driver, forwarded
# through the runtime env. Only non-secret ones: Ray writes a job's runtime env to its
# logs (runtime_env_agent.log, the dashboard). Credentials reach workers the way they
# reach any process on a Ray node: the node's AWS chain (instance profile, mounted
# ~/.aws/credentials, the environment the raylet was started with). A local cluster
# started by this driver inherits the driver's environment, secrets included.
_FORWARD_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
)


def cpus_per_worker_to_fit(n_workers_total: int) -> float:
    """Fractional CPUs so that every worker of every type fits at once (at most 1 each)."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    return max(0.05, min(1.0, round(cpus / max(n_workers_total, 1) * 0.9, 2)))


class ResourcesUnavailable(RuntimeError):
    """The cluster cannot provide what a job asks for, now or after autoscaling."""


def require_resources(need: dict[str, float], what: str) -> None:
    """Fail fast when the cluster has less than ``need`` (e.g. ``{"GPU": 1}``) of a
    resource and no autoscaler configured to add nodes that have it; waiting would
    hang forever ("pending 4 GPU")."""
    import ray
    from ray._private.state import state  # what Ray Train itself consults (worker_group.py)

    have = ray.cluster_resources()
    missing = {k: v for k, v in need.items() if v > 0 and have.get(k, 0.0) < v}
    if not missing:
        return
    try:
        max_cfg = state.get_max_resources_from_cluster_config()  # None: no autoscaler config
    except Exception:  # noqa: BLE001 - an older or partial cluster: treat as none
        max_cfg = None
    short = {k: v for k, v in missing.items() if not max_cfg or (max_cfg.get(k) or 0) < v}
    if short:
        detail = ", ".join(f"{v:g} {k} (the cluster has {have.get(k, 0.0):g}" + (
            f", its autoscaler at most {max_cfg.get(k) or 0:g})" if max_cfg else ", no autoscaler can add more)"
        ) for k, v in short.items())
        raise ResourcesUnavailable(f"{what} needs {detail}")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default; a description keeps its paragraphs."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(p if p.startswith(" ") else super(HelpFormatter, self)._fill_text(p, width, indent)
                           for p in text.split("\n\n"))  # an indented block (a list of files) stays as written

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        # a default written by hand ("(default: every folder)") already says it; None, a
        # flag's False and an empty list say nothing
        said = any(m in text for m in ("(default", "; default", "%(default)"))
        nothing = action.default is None or action.default is False or action.default == []
        if said or nothing or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def help_formatter() -> type[argparse.HelpFormatter]:
    return HelpFormatter


def describe(doc: str | None, paragraphs: int = 1) -> str:
    """A module docstring as ``--help`` text: its first ``paragraphs`` prose paragraphs
    (literal blocks such as usage lines are left out: argparse prints the usage; a block
    that a kept paragraph announces with ``::``, such as a list of files, stays), with
    RST markup removed (````x```` -> ``x``, ``:func:`x``` -> ``x``, ``text::`` -> ``text:``)."""
    out: list[str] = []
    for para in re.split(r"\n\s*\n", (doc or "").strip()):
        if para.startswith((" ", "\t")) or para.strip() == "::":
            if out and out[-1].endswith(":") and para.strip() != "::" and len(out) <= paragraphs:
                out[-1] += "\n\n" + para.rstrip()  # the block a kept paragraph announces ("Writes::")
            continue
        if len(out) == paragraphs:
            break
        para = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", para).replace("``", "")
        out.append(re.sub(r"::$", ":", para.rstrip()))
    return "\n\n".join(out)


def add_set_arg(p: argparse.ArgumentParser, what: str = "override a configuration field") -> None:
    """``--set KEY=VALUE`` (repeatable), its help listing every accepted key."""
    from asd_core.config import override_keys

    keys = ", ".join(override_keys())
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"{what}; repeatable. KEY is a field name, or stage.field (train.epochs). Keys: {keys}")


def config_error(prog: str, e: Exception) -> int:
    """Print a bad ``--set`` / ``--preset`` / ``--grid`` as one line on stderr; exit code 2."""
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    print(f"{prog}: {msg}", file=sys.stderr)
    return 2


def add_storage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--endpoint-url",
        default=None,
        help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL; AWS when unset)",
    )


def add_ray_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join: 'auto', 'ray://host:10001', or unset for the job's cluster / a local one",
    )


def parse_machines(value: str | None) -> list[str] | None:
    """``"fan,valve"`` -> ``["fan", "valve"]``; empty/None -> None (= every type found)."""
    from asd_core.paths import check_segment

    if not value:
        return None
    return [check_segment(m.strip(), "--machines value") for m in value.split(",") if m.strip()]


def init_ray(address: str | None, endpoint_url: str | None = None, verbose: bool = False):
    """Connect to (or start) Ray, forwarding the object-store settings (never
    credentials, see ``_FORWARD_ENV``) to workers. In a terminal, unless ``verbose``,
    Ray's own lines (its start-up, Ray Data's and Ray Train's progress, the workers'
    output) stay in Ray's log files (``/tmp/ray/session_latest/logs``): the job shows
    its own progress bar and lines. In a log (cron, ``ray job logs``) everything is kept."""
    import ray

    env = {k: os.environ[k] for k in _FORWARD_ENV if k in os.environ}
    if endpoint_url:
        env["AWS_ENDPOINT_URL"] = endpoint_url
    job_cfg = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")  # set for a `ray job submit` driver
    if job_cfg:
        # The job's runtime env already reaches every worker; re-sending its keys makes
        # ray.init fail on the conflict (and print both envs, secrets included).
        job_env = (json.loads(job_cfg).get("runtime_env") or {}).get("env_vars") or {}
        env = {k: v for k, v in env.items() if k not in job_env}
    if ray.is_initialized():
        return ray
    quiet = not verbose and sys.stderr.isatty()
    ray.init(address=address, runtime_env={"env_vars": env} if env else None, log_to_driver=not quiet,
             logging_level=logging.WARNING if quiet else logging.INFO)
    if quiet:
        import ray.data  # noqa: F401 - configures its logger on import: a file handler and a console one

        for name in ("ray.data", "ray.train", "ray.tune"):  # these do not propagate to "ray"
            for handler in logging.getLogger(name).handlers:
                if not isinstance(handler, logging.FileHandler):  # their log files keep everything
                    handler.setLevel(logging.WARNING)
        logging.getLogger("ray.train").setLevel(logging.WARNING)
    return ray


@contextlib.contextmanager
def ray_session(address: str | None, endpoint_url: str | None = None, verbose: bool = False):
    """``init_ray`` for a job's ``main``; shuts Ray down afterwards only if it was
    started here (a caller that already runs Ray, such as ``asd demo``, keeps it)."""
    import ray

    started_here = not ray.is_initialized()
    init_ray(address, endpoint_url, verbose)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def log_to_stderr() -> None:
    """Ray worker processes start without a root handler; give them one."""
    if not logging.getLogger().handlers:
        setup_logging()


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@contextlib.contextmanager
def storage_errors(what: str, uri: str):
    """Turn a storage failure while checking inputs into one :class:`ValueError` line
    naming the URI and the likely fix (a missing bucket or folder, credentials, the
    endpoint) instead of a traceback."""
    try:
        yield
    except ValueError:
        raise
    except FileNotFoundError as e:
        raise ValueError(f"{what} not found: {uri} ({e}); check the bucket and path") from e
    except PermissionError as e:
        raise ValueError(f"{what} {uri}: access denied ({e}); check the credentials' permissions") from e
    except Exception as e:  # noqa: BLE001 - botocore's NoCredentialsError, EndpointConnectionError, ...
        name = type(e).__name__
        fix = ("set credentials (AWS_PROFILE, ~/.aws/credentials or an instance role)" if "Credential" in name
               else "check --endpoint-url / AWS_ENDPOINT_URL and the network")
        raise ValueError(f"{what} {uri} cannot be read: {name}: {e}; {fix}") from e


def open_reachable(what: str, uri: str, endpoint_url: str | None = None):
    """``open_location(uri)`` after one request that proves the store answers (credentials,
    endpoint): a failure is :func:`storage_errors`' one line, not a traceback."""
    from asd_core.storage import open_location

    loc = open_location(uri, endpoint_url)
    with storage_errors(what, uri):
        loc.fs.exists(loc.path)
    return loc


def start_local_s3(name: str = "local") -> tuple[Any, str]:
    """An embedded S3-compatible server (moto) on a free port of 127.0.0.1, with
    throwaway credentials (``name``) and ``AWS_ENDPOINT_URL`` set in this process's
    environment, so Ray workers started afterwards reach it. Returns ``(server,
    endpoint)``; ``server.stop()`` ends it. For the demo and benchmarks, never for
    real data."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update({"AWS_ACCESS_KEY_ID": name, "AWS_SECRET_ACCESS_KEY": name, "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL": endpoint})
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the server's per-request lines
    return server, endpoint
