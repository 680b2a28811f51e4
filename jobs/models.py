"""``asd models``: list every trained version of each machine type's model, and choose
the one scoring uses.

::

    asd models MODELS_URI [--type T] [--json]
    asd models MODELS_URI --set-current TYPE MODEL_ID

``asd train`` keeps every version under ``MODELS_URI/<type>/<model_id>/`` and points
``MODELS_URI/<type>/current.json`` at the newest; ``--set-current`` moves the pointer
(roll back or forward), and the next ``asd score`` uses that version.
"""

from __future__ import annotations

import argparse
import json
import sys

from asd_core.artifact import ArtifactError, all_versions, format_versions, set_current
from asd_core.paths import check_segment
from asd_core.storage import open_location


def build_parser() -> argparse.ArgumentParser:
    from jobs.common import add_storage_args, describe, help_formatter

    p = argparse.ArgumentParser(prog="asd models", description=describe(__doc__, 2),
                                formatter_class=help_formatter())
    p.add_argument("models_uri", metavar="MODELS_URI", help="models root of 'asd train' (path or s3://)")
    p.add_argument("--type", default=None, dest="machine_type", help="one machine type only (default: every type)")
    p.add_argument("--json", action="store_true", help="print the versions as JSON lines")
    p.add_argument("--set-current", nargs=2, metavar=("TYPE", "MODEL_ID"), default=None,
                   help="make MODEL_ID the version of TYPE that scoring uses")
    add_storage_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        loc = open_location(args.models_uri, args.endpoint_url)
        # both become folder names under MODELS_URI
        if args.machine_type is not None:
            check_segment(args.machine_type, "--type")
        if args.set_current:
            check_segment(args.set_current[0], "--set-current TYPE")
            check_segment(args.set_current[1], "--set-current MODEL_ID")
    except ValueError as e:
        print(f"asd models: {e}", file=sys.stderr)
        return 2
    if args.set_current:
        mt, model_id = args.set_current
        try:
            previous = set_current(loc, mt, model_id)
        except ArtifactError as e:
            print(f"asd models: {e}", file=sys.stderr)
            return 2
        print(f"{mt}: current model {model_id} (was {previous or 'none'})")
        return 0
    rows = all_versions(loc, [args.machine_type] if args.machine_type else None)
    if not rows:
        print(f"asd models: no model under {loc.uri}" + (f" for {args.machine_type!r}" if args.machine_type else ""),
              file=sys.stderr)
        return 2
    if args.json:
        for r in rows:
            print(json.dumps(r))
    else:
        print(format_versions(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
