"""``asd train``: one model per machine type, all types trained concurrently on Ray Train.

::

    asd train DATA_URI MODELS_URI [--model unet|baseline-ae|knn] [--machines fan,valve] [--preset ...]
              [--set epochs=3 ...] [--workers-per-model N] [--gpus-per-worker G]
              [--address auto|ray://...] [--resume] [--endpoint-url URL]

Same as ``ray job submit --working-dir . -- python -m jobs.train ...``.

Per machine type, a Ray task (``num_cpus=0``) prepares the type's training rows once
(:func:`asd_core.trainrun.train_type_from_spec`), puts them in the object store and
runs one ``TorchTrainer`` (data-parallel DDP across its workers, each rank on its slice
of every global batch; the library's epoch loop :func:`asd_core.kinds.run_epochs`).
Checkpoints go to ``MODELS_URI/_runs/<run_id>/<machine_type>/`` through the same
filesystem object the data is read with, so a custom S3 endpoint reaches every process;
then the task saves a new model version and points ``current.json`` at it. Run record
and resume: :mod:`asd_core.trainrun`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import tempfile
from typing import Any

import numpy as np
import torch

from asd_core.catalog import list_checked, parse_only
from asd_core.config import DEFAULT_PRESET, PRESETS, ASDConfig, cpu_warning, parse_overrides, preset
from asd_core.kinds import KINDS, get_kind, run_epochs
from asd_core.runs import validate_run_id
from asd_core.runstore import release_on_signals
from asd_core.runtime import prepare_model
from asd_core.storage import open_location, pyarrow_filesystem
from asd_core.trainrun import (
    TrainingProgress,
    TrainingRun,
    TrainOptions,
    format_record,
    initial_model,
    maybe_fail,
    record_epoch,
    save_checkpoint,
    train_type_from_spec,
)

from .common import (
    HelpFormatter,
    ResourcesUnavailable,
    add_ray_args,
    add_set_arg,
    add_storage_args,
    config_error,
    cpus_per_worker_to_fit,
    describe,
    log_to_stderr,
    parse_machines,
    ray_session,
    require_resources,
    setup_logging,
    storage_errors,
)

log = logging.getLogger("asd.train")


# ---------------------------------------------------------------- worker side
def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: resume from ``ray.train.get_checkpoint()``, train, report every
    epoch. ``config``: ``config`` (ASDConfig dict), ``tiles_ref`` (the kind's training
    rows ``[N, *item_shape]``), ``machine_type``, ``fail_once`` / ``models_loc``."""
    import ray
    import ray.train
    import ray.train.torch

    log_to_stderr()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = ASDConfig.from_dict(config["config"])
    kind = get_kind(cfg.model.kind)
    mt = config["machine_type"]
    device = ray.train.torch.get_device()
    tiles = torch.from_numpy(np.asarray(ray.get(config["tiles_ref"]), dtype=np.float32))  # [N, ...]

    ckpt = ray.train.get_checkpoint()
    with ckpt.as_directory() if ckpt else contextlib.nullcontext() as d:
        # SyncBatchNorm keeps BN statistics those of the global batch; it is GPU-only,
        # so CPU DDP normalises each rank's share on its own (losses differ slightly).
        model, state, opt_state = initial_model(cfg, d, sync_batchnorm=world > 1 and device.type == "cuda")
    state["resumes"] += [state["epoch"]] if ckpt else []  # where this attempt resumed
    if ckpt and rank == 0:
        log.info("%s: resuming from the checkpoint after epoch %d", mt, state["epoch"])
    model = prepare_model(ray.train.torch.prepare_model(model), cfg.model.channels_last)  # device; DDP if world > 1
    opt = kind.optimizer(model, cfg)
    if opt_state is not None:
        opt.load_state_dict(opt_state)

    epochs, every = kind.epochs(cfg), cfg.train.checkpoint_every
    share = tiles.shape[0] / world

    def report(epoch: int, loss: float, dt: float) -> None:  # after each epoch, on every rank
        if world > 1:  # the global batch's loss = mean of the ranks' equal shares
            t = torch.tensor([loss], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(t)
            loss = float(t.item()) / world
        metrics = record_epoch(state, epoch, loss, dt, share)
        if rank == 0:  # the driver prints it (EpochBoard): one line, never merged by Ray's log deduplication
            log.debug("%s: epoch %d/%d loss %.5f (%.1f s, %.0f tiles/s per worker)", mt, epoch + 1, epochs, loss, dt, share / dt)
            if config.get("board") is not None:
                config["board"].add.remote(mt, epoch + 1, loss, dt)
        if rank == 0 and (epoch + 1 == epochs or (every > 0 and (epoch + 1) % every == 0)):
            with tempfile.TemporaryDirectory() as d:
                save_checkpoint(model, opt, state, d)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                                 checkpoint_dir_name=f"epoch_{epoch + 1:04d}")
        else:
            ray.train.report(metrics)  # every rank reports every epoch (a barrier)
        if epoch + 1 < epochs:
            maybe_fail(config, epoch + 1, rank, world)

    maybe_fail(config, state["epoch"], rank, world)
    run_epochs(kind, model, tiles, opt, cfg, start=state["epoch"], device=device, rank=rank, world_size=world,
               on_epoch=report)


# ---------------------------------------------------------------- one type: its TorchTrainer
def _fit_type(rows: np.ndarray, spec: dict[str, Any]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Run the type's TorchTrainer on ``rows`` (shared through the object store);
    returns the final model (CPU) and checkpoint state."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    gpus, cpus = spec["gpus_per_worker"], spec["cpus_per_worker"]
    loop_config = {k: spec.get(k) for k in ("config", "machine_type", "models_loc", "fail_once", "board")}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={**loop_config, "tiles_ref": ray.put(rows)},
        scaling_config=ray.train.ScalingConfig(num_workers=spec["workers_per_model"], use_gpu=gpus > 0,
                                               resources_per_worker={"CPU": cpus, **({"GPU": gpus} if gpus else {})}),
        run_config=ray.train.RunConfig(
            name=spec["trial_name"],
            storage_path=spec["storage_path"],
            storage_filesystem=pyarrow_filesystem(spec["models_loc"]),
            failure_config=ray.train.FailureConfig(max_failures=spec["max_failures"]),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"{spec['machine_type']}: training produced no checkpoint")
    with result.checkpoint.as_directory() as d:
        model, state, _ = initial_model(ASDConfig.from_dict(spec["config"]), d)
    return model.eval(), state



def train_one_type(spec: dict[str, Any]) -> dict[str, Any]:
    """Ray task: one machine type from its clips to its artifact (never raises)."""
    log_to_stderr()
    return train_type_from_spec(spec, _fit_type)


# ---------------------------------------------------------------- driver
class EpochBoard:
    """Ray actor: the epochs each type's rank 0 finished, for the driver to show."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, float, float]] = []

    def add(self, machine_type: str, epoch: int, loss: float, seconds: float) -> None:
        self.events.append((machine_type, epoch, loss, seconds))

    def since(self, n: int) -> list[tuple[str, int, float, float]]:
        return self.events[n:]


def _cancel_unfinished(pending: dict) -> None:
    import ray

    finished, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0) if pending else ([], [])
    for ref in set(pending) - set(finished):  # force-cancelling a finished task trips Ray
        ray.cancel(ref, force=True, recursive=True)


def train_all(opts: TrainOptions) -> dict[str, Any]:
    """Train every machine type concurrently (one Ray task + TorchTrainer each) on an
    initialised Ray; returns the run record (``status`` ``ok`` only when every type is)."""
    import ray

    run = TrainingRun(opts)
    if opts.gpus_per_worker > 0:  # fail now rather than wait forever for GPUs that will never come
        require_resources(
            {"GPU": opts.gpus_per_worker * opts.workers_per_model},
            f"--gpus-per-worker {opts.gpus_per_worker:g} x --workers-per-model {opts.workers_per_model} "
            "(one machine type)",
        )
    cpus = opts.cpus_per_worker
    if cpus is None:
        cpus = 1.0 if opts.gpus_per_worker > 0 else cpus_per_worker_to_fit(len(run.types) * opts.workers_per_model)
    pending: dict[Any, str] = {}
    seen = 0
    try:  # the run record says "running" once start() wrote it: a stop from there on must say "stopped"
        specs = run.start(cpus)
        remote = ray.remote(num_cpus=0, max_retries=0)(train_one_type)
        board = ray.remote(num_cpus=0)(EpochBoard).remote()
        for spec in specs:
            pending[remote.remote({**spec, "board": board})] = spec["machine_type"]
        log.info("run %s: training %d machine types (%s) with %d worker(s) each (%.2f CPU, %.2f GPU per worker)",
                 run.run_id, len(pending), ", ".join(pending.values()), opts.workers_per_model, cpus,
                 opts.gpus_per_worker)
        with TrainingProgress(list(pending.values()), get_kind(opts.config.model.kind).epochs(opts.config),
                              log) as shown:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                events = ray.get(board.since.remote(seen))
                seen += len(events)
                for event in events:
                    shown.epoch(*event)
                for ref in ready:
                    mt = pending.pop(ref)
                    try:
                        entry = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - the task itself died (e.g. its node)
                        entry = {"status": "failed", "error": f"{type(e).__name__}: {e}", "trial_name": mt}
                    shown.type_finished(mt)
                    run.type_done(mt, entry, n_left=len(pending), say=shown.note)
            for event in ray.get(board.since.remote(seen)):  # a last epoch that arrived after its type's end
                shown.epoch(*event)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, `ray job stop` (SIGTERM: ray.init's handler, see main)
        _cancel_unfinished(pending)
        run.stopped()
        raise
    return run.finish()


def run_training(data_uri: str, models_uri: str, **options: Any) -> dict[str, Any]:
    """:func:`train_all` with ``options`` as :class:`asd_core.trainrun.TrainOptions` fields."""
    return train_all(TrainOptions(data_uri, models_uri, **options))


# ---------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asd train", description=describe(__doc__), formatter_class=HelpFormatter)
    p.add_argument("data_uri", help="archive root (path or s3://); by default in the DCASE layout "
                                    "<root>/<machine_type>/train/*.wav")
    p.add_argument("models_uri", help="where artifacts, checkpoints and the run manifest go (path or s3://)")
    p.add_argument("--machines", default=None, help="comma-separated machine types (default: every folder)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--manifest", default=None, metavar="URI",
                     help="CSV/Parquet of the training clips (path, machine_type; optional section, domain, "
                          "label, split, attributes); paths relative to DATA_URI or URIs")
    src.add_argument("--pattern", default=None, metavar="TEMPLATE",
                     help="path template below DATA_URI, e.g. '{date}/{machine_type}/{name}.flac'")
    p.add_argument("--only", action="append", default=[], metavar="PLACEHOLDER=VALUE",
                   help="with --pattern: fix a placeholder, e.g. --only date=2026-11-24 (lists only that folder)")
    p.add_argument("--allow-root", action="append", default=[], metavar="URI",
                   help="with --manifest: a root besides DATA_URI that manifest paths may name (repeatable)")
    p.add_argument("--model", default=None, choices=KINDS,
                   help="model kind (default: the preset's, unet); sets model.kind")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS),
                   help="base configuration: default = U-Net width 8, 10 epochs, knn_err_stats_env (trained and "
                        "measured; CPU-sized); wide = the same choices at width 64, 100 epochs (unmeasured, for "
                        "GPUs); report = the technical report's; tiny = default at 8 epochs, 16 masks (tests)")
    add_set_arg(p)
    p.add_argument("--workers-per-model", type=int, default=1, help="data-parallel workers per machine type")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per worker (0 = train on CPUs)")
    p.add_argument("--cpus-per-worker", type=float, default=None, help="CPUs per worker (default: fit all at once)")
    p.add_argument("--max-failures", type=int, default=2, help="worker-group restarts per type before it fails")
    p.add_argument("--resume", action="store_true", help="continue the latest (or --run-name) run from checkpoints")
    p.add_argument("--run-name", default=None, help="run id to create, or to resume with --resume")
    p.add_argument("-v", "--verbose", action="store_true")
    add_storage_args(p)
    add_ray_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    with release_on_signals():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        overrides = parse_overrides(args.set)
        if args.model:
            overrides["model.kind"] = args.model
        config = preset(args.preset, overrides)
        get_kind(config.model.kind)
    except (KeyError, ValueError) as e:
        return config_error(parser.prog, e)
    warning = cpu_warning(config, args.gpus_per_worker, torch.cuda.is_available())
    if warning:  # before Ray starts: the user can still stop
        print(f"{parser.prog}: {warning}", file=sys.stderr)
    # Inputs are listed and checked before Ray starts; each problem is one line.
    clips, source = None, ""
    try:
        if args.run_name is not None:  # the name becomes a folder under MODELS_URI
            validate_run_id(args.run_name, "--run-name")
        machines = parse_machines(args.machines)
        data = open_location(args.data_uri, args.endpoint_url)
        open_location(args.models_uri, args.endpoint_url)
        with storage_errors("data", args.data_uri):
            listed = list_checked(data, split="train", machines=machines, pattern=args.pattern,
                                  manifest=args.manifest, endpoint_url=args.endpoint_url, training=True,
                                  only=parse_only(args.only), allow_roots=args.allow_root)
        if args.manifest or args.pattern:  # the driver's listing is what the workers train on
            source = f"manifest {args.manifest}" if args.manifest else f"--pattern {args.pattern!r}"
            clips = listed
    except ValueError as e:  # a bad URI scheme, manifest (ManifestError), template, an empty listing
        print(f"asd train: {e}")
        return 2
    try:
        with ray_session(args.address, args.endpoint_url, verbose=args.verbose):
            names = {f.name for f in dataclasses.fields(TrainOptions)}
            opts = {k: v for k, v in vars(args).items() if k in names}
            record = train_all(TrainOptions(**{**opts, "config": config, "machines": machines, "clips": clips,
                                               "source": source}))
    except (FileNotFoundError, FileExistsError, ValueError, ResourcesUnavailable) as e:  # nothing could start
        log.error("%s", e)
        print(f"asd train: {e}")
        return 2
    except KeyboardInterrupt:
        print("asd train: stopped")
        return 130
    print(format_record(record))
    return 0 if record["status"] == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
