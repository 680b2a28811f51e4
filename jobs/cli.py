"""The ``asd`` command: one subcommand per job; each is also ``python -m jobs.<name>``."""

from __future__ import annotations

import importlib
import sys

import asd_core

# subcommand -> (module, one-line help). Modules are imported only when used, so
# ``asd --help`` stays fast and a subcommand's heavy imports (Ray) stay its own.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("jobs.demo", "run the whole system locally: S3 server, Ray, synth, train, score, report"),
    "synth": ("jobs.synth", "write a synthetic machine-sound archive in the DCASE 2023 layout"),
    "train": ("jobs.train", "train one model (unet, baseline-ae or knn) per machine type on Ray Train"),
    "score": ("jobs.score", "score an archive with Ray Data into Parquet, metrics and submission CSVs"),
    "manifest": ("jobs.manifest", "list an archive through a path template (--pattern) and write the manifest"),
    "scores": ("jobs.scores", "read a scoring output: each clip's latest row, or one run's rows, as CSV or Parquet"),
    "report": ("jobs.report", "a night's alerts, its scores against training, alerts per night; metrics and ROC of labelled runs"),
    "models": ("jobs.models", "list every trained model version per machine type; choose the one scoring uses"),
    "sweep": ("jobs.sweep", "train and score machine types under many configurations on Ray Tune"),
    "submit": ("jobs.submit", "run an asd command as a Ray job on a cluster; exits with the command's own exit code"),
    "version": ("", "print the version"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: asd <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "'asd <command> --help' describes a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    cmd, rest = args[0], args[1:]
    if cmd in ("version", "--version"):
        print(f"asd {asd_core.__version__}")
        return 0
    if cmd not in COMMANDS:
        print(f"asd: unknown command {cmd!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[cmd][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
