"""``asd sweep`` on a local Ray limited to ``--num-cpus`` CPUs (one trial at a time with
1), for the README's width study and the CPU-sized Section 6 on a shared machine.

    OMP_NUM_THREADS=1 python -m bench.study_sweep --num-cpus 1 -- 'data-s{seed}' OUT \\
        --machines fan,valve,bearing --seeds 2 --preset tiny --grid width=8,16 ...

Everything after ``--`` is ``asd sweep``'s command line; the sweep joins the Ray started
here (its own temp dir), which stops afterwards.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.study_sweep")
    p.add_argument("--num-cpus", type=int, default=1)
    p.add_argument("--temp-dir", default=None, help="Ray's temp dir (default: Ray's)")
    p.add_argument("sweep_args", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    rest = args.sweep_args[1:] if args.sweep_args[:1] == ["--"] else args.sweep_args
    import ray

    from jobs import sweep

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, _temp_dir=args.temp_dir)
    try:
        return sweep.main(rest)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
