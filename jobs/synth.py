"""``asd synth``: write a synthetic machine-sound archive in the DCASE 2023 Task 2 layout.

python -m jobs.synth /tmp/synth                       # full development-set size
python -m jobs.synth s3://bucket/synth --small --reference --endpoint-url http://127.0.0.1:5000
"""

from __future__ import annotations

import argparse
import json
import sys

from asd_core.reference import evaluate_reference, format_table
from asd_core.synth import MACHINE_TYPES, generate_archive

# --small: enough for a CPU demo or a smoke test of the whole pipeline in minutes
SMALL = {"train_source": 40, "train_target": 10, "test": 10, "seconds": 10.0}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="asd synth",
        description=(
            "Generate synthetic machine sounds as <OUT_URI>/<machine_type>/{train,test}/"
            "section_00_<domain>_<split>_<label>_<index>_<attrs>.wav (16 kHz mono PCM_16). "
            "Defaults match the DCASE 2023 development set: 990 source + 10 target normal "
            "train clips and 50 clips per domain and label in test (200 test clips), 10 s each. "
            f"--small: {SMALL['train_source']} + {SMALL['train_target']} train, "
            f"{SMALL['test']} per domain and label in test, {SMALL['seconds']:g} s. "
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
    p.add_argument("--train-source", type=int, default=None, help="source-domain normal train clips per type (990)")
    p.add_argument("--train-target", type=int, default=None, help="target-domain normal train clips per type (10)")
    p.add_argument("--test", type=int, default=None, help="test clips per domain and label per type (50)")
    p.add_argument("--seconds", type=float, default=None, help="clip length in s (10)")
    p.add_argument("--seed", type=int, default=0, help="archive seed (default %(default)s)")
    p.add_argument("--small", action="store_true", help="small archive for demos and smoke tests (see above)")
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint (else AWS_ENDPOINT_URL[_S3])")
    p.add_argument("--reference", action="store_true", help="run the k-NN reference detector afterwards and print AUCs")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = dict(SMALL) if args.small else {"train_source": 990, "train_target": 10, "test": 50, "seconds": 10.0}
    for key in sizes:
        value = getattr(args, key)
        if value is not None:  # explicit flags win over --small
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
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
