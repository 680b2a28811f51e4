"""``asd synth``: write a synthetic machine-sound archive in the DCASE 2023 Task 2 layout.

::

    python -m jobs.synth /tmp/synth                       # full development-set size
    python -m jobs.synth s3://bucket/synth --size small --reference --endpoint-url http://127.0.0.1:5000
"""

from __future__ import annotations

import argparse
import json
import sys

from asd_core.kinds.knn.reference import evaluate_reference
from asd_core.results import format_table
from asd_core.synth import ARCHIVE_SIZES, MACHINE_TYPES, describe_size, generate_archive
from jobs.common import HelpFormatter


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="asd synth",
        formatter_class=HelpFormatter,
        description=(
            "Generate synthetic machine sounds as <OUT_URI>/<machine_type>/{train,test}/<DCASE 2023 name>.wav "
            "(16 kHz mono PCM_16). "
            "Sizes per machine type (the same as 'asd demo --size'): "
            + "; ".join(f"{k}: {describe_size(k)}" for k in ARCHIVE_SIZES)
            + " (full = the DCASE 2023 development set). "
            "The same seed gives byte-identical files; each clip has its own seed, so "
            "changing --test leaves train clips unchanged."
        ),
    )
    p.add_argument("out_uri", metavar="OUT_URI", help="local folder or s3://bucket/prefix")
    p.add_argument(
        "--machines",
        default=",".join(MACHINE_TYPES),
        help="comma-separated machine types (default: all of %(default)s)",
    )
    p.add_argument("--size", choices=sorted(ARCHIVE_SIZES), default="full", help="archive size (see above)")
    p.add_argument("--small", action="store_const", const="small", dest="size", help="the same as --size small")
    p.add_argument("--train-source", type=int, default=None,
                   help="source-domain normal train clips per type (default: the --size's)")
    p.add_argument("--train-target", type=int, default=None,
                   help="target-domain normal train clips per type (default: the --size's)")
    p.add_argument("--test", type=int, default=None, help="test clips per domain and label per type (default: the --size's)")
    p.add_argument("--seconds", type=float, default=None, help="clip length in s (default: the --size's)")
    p.add_argument("--seed", type=int, default=0, help="archive seed")
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint (else AWS_ENDPOINT_URL[_S3])")
    p.add_argument("--reference", action="store_true", help="run the k-NN reference detector afterwards and print AUCs")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    from jobs.common import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging()
    sizes = dict(ARCHIVE_SIZES[args.size])
    for key in sizes:
        value = getattr(args, key)
        if value is not None:  # explicit flags win over --size
            sizes[key] = value
    machines = [m.strip() for m in args.machines.split(",") if m.strip()]
    unknown = [m for m in machines if m not in MACHINE_TYPES]
    if unknown:
        print(f"asd synth: unknown machine type(s) {unknown}; choose from {', '.join(MACHINE_TYPES)}", file=sys.stderr)
        return 2
    summary = generate_archive(
        args.out_uri,
        machines=machines,
        seed=args.seed,
        endpoint_url=args.endpoint_url,
        progress=not args.quiet,
        **sizes,
    )
    print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in summary.items()}))
    if args.reference:
        rows = evaluate_reference(args.out_uri, machines=machines, endpoint_url=args.endpoint_url)
        print(format_table([r["metrics"] for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
