"""Nightly batch scoring on Ray Data: archive in, Delta Lake tables of scores, metrics
and alerts, and DCASE submission files out.

    asd score DATA_URI MODELS_URI OUT_URI [--machines fan,valve] [--masks K] ...
    ray job submit --working-dir . -- python -m jobs.score DATA_URI MODELS_URI OUT_URI ...

Pipeline (streaming; memory bounded by batch sizes, not by the archive)::

    driver: asd_core.catalog.list_clips (DCASE layout, --pattern or --manifest)
            -> asd_core.pipeline.clip_items: one item per file (path, size, fingerprint, fields, model id)
    from_arrow ─► map_batches(asd_core.pipeline.fetch_decode)   CPU tasks, 8 clips a batch:
                  s3fs cat of the batch (concurrent, per-file errors), decode,
                  features normalised with the type's stats; bytes dropped here
               ─► map_batches(asd_core.pipeline.ScoreActor, ActorPoolStrategy(size=N))
                  each actor loads the models once and routes clips by machine type
               ─► write_parquet(OUT/_staging/<run_id>/)
    driver: asd_core.scorerun -> asd_core.runstore.RunStore: check rows == items, paths unique ->
            stage metrics, alerts, submission -> _out/COMMIT.json (the commit) -> the tables
            scores, metrics, evaluated, alerts, latest (MERGE) and last the runs row

Why list on the driver and fetch inside the UDF rather than ``read_binary_files``: a
file that cannot be read (deleted after listing, permissions, a flaky endpoint) fails
the whole read task, and Ray Data can only drop whole blocks (``max_errored_blocks``);
here each file gets its own error row. Only one batch of raw bytes per task is ever in
memory, and ``s3fs.cat`` of a batch fetches its objects concurrently.

Output layout: see :mod:`asd_core.store` (the ``latest`` table has each clip once;
``scores`` is the history partitioned by ``run_date``; ``alerts`` the clips over
threshold and the sensor faults).

Incremental runs (``--incremental``) skip clips whose (path, size, fingerprint, model
id) already has a final row in the ``latest`` table for the same
split, models URI and K (an ok row, or an error that a retry cannot fix; read
failures and bad artifacts are retried). A run publishes all or nothing; its metrics
and submission cover every listed clip: this run's rows plus the index rows they
skipped, so a crashed night re-run with ``--incremental`` yields the same metrics as
one clean run.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
from typing import Any

import pyarrow as pa

from asd_core import results
from asd_core.artifact import list_artifacts
from asd_core.catalog import ListedClip, list_checked, parse_only
from asd_core.pipeline import CPU_BATCH, DECODE_BATCH, DEFAULT_BATCH, ScoreActor, fetch_decode
from asd_core.results import strict_json
from asd_core.runs import DEFAULT_LEASE_TTL_S, validate_run_id
from asd_core.runstore import LeaseLost, RunStore, StoreError, write_table
from asd_core.scorerun import (
    DEFAULT_MAX_READ_FAILURE_RATE,
    STAGE_ROWS_PER_FILE,
    Pipeline,
    ScoreOptions,
    exit_status,
    format_summary,
    run_with_lease,
)
from asd_core.storage import Location, ensure_bucket, open_location
from jobs.common import require_resources

log = logging.getLogger("jobs.score")


def ray_pipeline(opts: ScoreOptions) -> Pipeline:
    """The Ray Data pipeline for :func:`asd_core.scorerun.score_run`."""

    def run(items: list[dict], models: dict[str, dict], stage: str, out: Location) -> None:
        if opts.gpus_per_actor > 0:
            require_resources({"GPU": opts.gpus_per_actor}, f"--gpus-per-actor {opts.gpus_per_actor:g} (one scoring actor)")
        _run_pipeline(opts, items, models, stage, out)

    return run


def _run_pipeline(opts: ScoreOptions, items: list[dict], models: dict[str, dict], stage: str, out: Location) -> None:
    import ray
    import ray.data

    from asd_core.progress import Progress

    if not ray.is_initialized():
        ray.init()
    ctx = ray.data.DataContext.get_current()  # configured before the dataset exists
    ctx.max_errored_blocks = 0  # a lost block is a bug: fail loudly (bad clips are rows)
    ctx.enable_progress_bars = log.isEnabledFor(logging.DEBUG)  # ours counts clips (see Progress); Ray's with -v
    gpu = opts.gpus_per_actor > 0
    torch_threads = opts.torch_threads
    if torch_threads is None and not gpu:
        torch_threads = max(1, (os.cpu_count() or 1) // max(opts.actors, 1))
    score_batch = opts.batch_size or (DEFAULT_BATCH if gpu else CPU_BATCH)
    # Small input blocks (a few decode batches each) so decode runs as many tasks; a
    # decode batch no larger than a scoring call, so every call's rows reach the driver
    # (and the progress bar) as they are scored.
    decode_batch = min(DECODE_BATCH, score_batch)
    table = results.to_table(items)
    rows_per_block = max(decode_batch, math.ceil(len(items) / 2000))
    ds = ray.data.from_arrow([table.slice(i, rows_per_block) for i in range(0, len(items), rows_per_block)])
    ds = ds.map_batches(
        fetch_decode,
        batch_size=decode_batch,
        batch_format="pyarrow",
        fn_kwargs={"data_uri": opts.data_uri, "endpoint_url": opts.endpoint_url, "models": models,
                   "max_seconds": opts.max_clip_seconds},
        num_cpus=1,
    )
    ds = ds.map_batches(
        ScoreActor,
        batch_size=score_batch,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=opts.actors),
        fn_constructor_kwargs={
            "models_uri": open_location(opts.models_uri, opts.endpoint_url).uri,
            "endpoint_url": opts.endpoint_url,
            "machine_types": sorted(models),
            "n_masks": opts.n_masks,
            "device": "cuda" if gpu else "cpu",
            "torch_threads": torch_threads,
        },
        num_cpus=opts.cpus_per_actor if opts.cpus_per_actor is not None else 0.5,
        num_gpus=opts.gpus_per_actor or None,
        **({"memory": int(opts.actor_memory_gb * 2**30)} if opts.actor_memory_gb else {}),
    )
    # The score rows are small (the tiles stay in the pipeline): the driver writes them,
    # so it sees every finished batch and can report progress.
    pending: list[pa.Table] = []
    n_pending = part = 0
    with Progress("scoring", len(items), "clips", log=log) as progress:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=2):
            pending.append(batch)
            n_pending += batch.num_rows
            progress.update(batch.num_rows)
            if n_pending >= STAGE_ROWS_PER_FILE:
                write_table(out, f"{stage}/part-{part:05d}.parquet", pa.concat_tables(pending))
                pending, n_pending, part = [], 0, part + 1
        if pending:
            write_table(out, f"{stage}/part-{part:05d}.parquet", pa.concat_tables(pending))


# ---------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    from jobs.common import HelpFormatter, add_ray_args, add_storage_args, describe

    p = argparse.ArgumentParser(prog="asd score", description=describe(__doc__), formatter_class=HelpFormatter)
    p.add_argument("data_uri", help="archive root (s3:// or a folder); by default in the DCASE layout "
                                    "<root>/<machine_type>/<split>/<clip>.wav")
    p.add_argument("models_uri", help="model artifacts: <models>/<machine_type>/")
    p.add_argument("out_uri", help="output root (scores/, latest/, metrics/, alerts/, runs/, submission/)")
    p.add_argument("--machines", default=None, help="comma-separated machine types (default: every folder)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--manifest", default=None, metavar="URI",
                     help="CSV/Parquet listing exactly the clips to score (path, machine_type; optional section, "
                          "domain, label, split, attributes); paths relative to DATA_URI or URIs")
    src.add_argument("--pattern", default=None, metavar="TEMPLATE",
                     help="path template below DATA_URI, e.g. '{date}/{machine_type}/{name}.flac'; "
                          "placeholders become columns ('asd manifest' shows the mapping first)")
    p.add_argument("--only", action="append", default=[], metavar="PLACEHOLDER=VALUE",
                   help="with --pattern: fix a placeholder, e.g. --only date=2026-11-24 (lists only that folder)")
    p.add_argument("--allow-root", action="append", default=[], metavar="URI",
                   help="with --manifest: a root besides DATA_URI that manifest paths may name (repeatable)")
    p.add_argument("--max-clip-seconds", type=float, default=None,
                   help="longer clips become too_long error rows, refused from their header before decoding "
                        "(default: the model's features.max_seconds, 120)")
    p.add_argument("--split", default="test", choices=["test", "train"], help="which folder of each type to score")
    p.add_argument("--masks", type=int, default=None, dest="n_masks", help="masks per tile K (default: the artifact's)")
    p.add_argument("--run-id", default=None, help="run id (default: UTC time + random suffix)")
    p.add_argument("--incremental", action="store_true", help="skip clips already scored in published runs")
    p.add_argument("--actors", type=int, default=1, help="scoring actors")
    p.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per scoring actor (0 = CPU)")
    p.add_argument("--cpus-per-actor", type=float, default=None, help="CPUs reserved per actor (default 0.5)")
    p.add_argument("--torch-threads", type=int, default=None, help="torch threads per CPU actor (default cores/actors)")
    p.add_argument("--actor-memory-gb", type=float, default=None, help="heap reserved per scoring actor (GiB)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"clips per scoring call (default: {DEFAULT_BATCH} with GPUs, {CPU_BATCH} on CPUs)")
    p.add_argument("--ground-truth", nargs="+", default=None, metavar="CSV_URI",
                   help="official ground-truth CSVs or folders (ground_truth_data/, ground_truth_domain/)")
    p.add_argument("--max-error-rate", type=float, default=None,
                   help="exit 1 when more than this fraction of this run's clips failed (any reason; default: off)")
    p.add_argument("--max-read-failure-rate", type=float, default=DEFAULT_MAX_READ_FAILURE_RATE,
                   help="exit 1 when more than this fraction of this run's clips could not be read from storage "
                        f"(read_failed: an outage, not bad files; default {DEFAULT_MAX_READ_FAILURE_RATE}); "
                        "a run in which every clip failed to read always exits 1. The run is published either way")
    p.add_argument("--lease-ttl-hours", type=float, default=DEFAULT_LEASE_TTL_S / 3600,
                   help="expiry of the OUT_URI/_lease.json lease that keeps a second run out "
                        "(default %(default)g; must exceed the longest run)")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    p.add_argument("-v", "--verbose", action="store_true")
    add_storage_args(p)
    add_ray_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Exit 0: published, within the error limits; 1: published, but every clip failed
    to read or an error rate was exceeded; 2: nothing could start (no model at all:
    the error rows are still published; another run holds the output's lease; the
    cluster lacks the requested GPUs; a bad run id); 130: stopped (Ctrl-C, SIGTERM:
    the next run finishes or removes what this one left)."""
    from asd_core.runstore import release_on_signals

    try:
        with release_on_signals():
            return _main(argv)
    except KeyboardInterrupt:
        print("asd score: stopped (the next run finishes or removes what this one left)")
        return 130


def _main(argv: list[str] | None) -> int:
    import contextlib

    from asd_core.runs import LeaseHeld
    from jobs.common import ResourcesUnavailable, parse_machines, ray_session, setup_logging, storage_errors

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    # Everything is checked before Ray starts; each problem is one line naming the fix.
    try:
        if args.run_id is not None:
            validate_run_id(args.run_id)
        opts = _options(args, parse_machines(args.machines))
        data = open_location(opts.data_uri, opts.endpoint_url)
        models_loc = open_location(opts.models_uri, opts.endpoint_url)
        out = open_location(opts.out_uri, opts.endpoint_url)
        with storage_errors("models", opts.models_uri):
            no_models = not list_artifacts(models_loc)  # no Ray is needed then
        with storage_errors("data", opts.data_uri):
            listed = list_checked(data, split=opts.split, machines=opts.machines, pattern=opts.pattern,
                                  manifest=opts.manifest, endpoint_url=opts.endpoint_url, only=opts.only,
                                  allow_roots=opts.allow_roots)
        with storage_errors("output", opts.out_uri):  # only once the inputs are fine: nothing written before
            if out.protocol != "file":
                ensure_bucket(out)  # as asd train does for its models bucket
            if opts.run_id and RunStore(out).is_published(opts.run_id):
                raise ValueError(f"run {opts.run_id!r} is already published under {out.uri}; runs are never "
                                 "rewritten (choose another --run-id)")
    except (ValueError, StoreError) as e:  # a bad run id, URI scheme, manifest, template, listing, table
        print(f"asd score: {e}")
        return 2
    if not listed:  # a night with no recordings is a normal night: an empty run, exit 0
        print(f"asd score: no clips listed under {data.uri} for --only {' '.join(args.only)}: nothing to score")
    session = contextlib.nullcontext() if no_models or not listed else ray_session(args.address, args.endpoint_url, verbose=args.verbose)
    try:
        with session:
            summary = run_with_lease(opts, ray_pipeline(opts), listed)
    except (LeaseHeld, LeaseLost, ResourcesUnavailable, StoreError) as e:
        print(f"asd score: {e}")
        return 2
    print(strict_json(summary) if args.json else format_summary(summary))
    if no_models:
        print(f"asd score: no model artifact under {models_loc.uri} (expected <models>/<machine_type>/current.json); "
              f"{summary['n_scored']} clips published as errors")
        return 2
    code, why = exit_status(summary, opts)
    if why:
        print(why)
    return code


def _options(args: argparse.Namespace, machines: list[str] | None) -> ScoreOptions:
    """The parsed options as :class:`ScoreOptions` (the parser's dests are its field names)."""
    names = {f.name for f in dataclasses.fields(ScoreOptions)}
    given = {k: v for k, v in vars(args).items() if k in names}
    return ScoreOptions(**{**given, "machines": machines, "only": parse_only(args.only),
                           "allow_roots": tuple(args.allow_root),
                           "lease_ttl_s": args.lease_ttl_hours * 3600})


def run_scoring(data_uri: str, models_uri: str, out_uri: str, *, listed: list[ListedClip] | None = None,
                **options: Any) -> dict[str, Any]:
    """Score and publish one run on Ray (an initialised one, else a local one);
    ``options`` are :class:`asd_core.scorerun.ScoreOptions` fields. Returns the summary."""
    opts = ScoreOptions(data_uri, models_uri, out_uri, **options)
    return run_with_lease(opts, ray_pipeline(opts), listed)


if __name__ == "__main__":
    raise SystemExit(main())
