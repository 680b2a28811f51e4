"""``asd train``: one model per machine type, all types trained concurrently on Ray Train.

::

    asd train DATA_URI MODELS_URI [--model unet|baseline-ae|knn] [--machines fan,valve] [--preset ...]
              [--set epochs=3 ...] [--workers-per-model N] [--gpus-per-worker G]
              [--address auto|ray://...] [--resume] [--endpoint-url URL]

Same as ``ray job submit --working-dir . -- python -m jobs.train ...``.

Per machine type, a Ray task (``num_cpus=0``) reads and decodes the type's training
clips once (:func:`asd_core.trainprep.prepare_type`: the model kind's feature rows),
puts the training rows in the object store and runs one ``TorchTrainer`` (its own ``ScalingConfig``; data-parallel
DDP across its workers, each rank training on its slice of every global batch).
Checkpoints go to ``MODELS_URI/_runs/<run_id>/<machine_type>/`` through the same
filesystem object the data is read with, so a custom S3 endpoint reaches every
process. Afterwards the task finalises the model (neighbour banks, covariances, the
decision threshold) and writes a new version ``MODELS_URI/<machine_type>/<model_id>/``
and points ``MODELS_URI/<machine_type>/current.json`` at it (``asd models``). A kind
with nothing to train (``knn``) skips the trainer. The driver writes a manifest
(``MODELS_URI/_runs/<run_id>/manifest.json``, copied to ``MODELS_URI/_manifest.json``)
listing every type's status, and updates it as each type finishes.

Resume: Ray Train V2 continues a run from its latest checkpoint whenever a trainer
reuses a ``(storage_path, name)``. Every run therefore gets a fresh ``run_id``;
``--resume`` reuses the previous run's id and names instead, so interrupted or
failed types continue from their last checkpoint and finished ones are kept (or
trained further when ``epochs`` was raised).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import posixpath
import sys
import tempfile
import time
import uuid
from typing import Any

import numpy as np
import torch

from asd_core.artifact import list_artifacts, save_artifact
from asd_core.catalog import ListedClip, list_clips, listing_problem, machine_types, parse_only
from asd_core.config import DEFAULT_PRESET, PRESETS, ASDConfig, cpu_warning, parse_overrides, preset
from asd_core.dcase import AUDIO_SUFFIXES
from asd_core.kinds import KINDS, get_kind
from asd_core.runs import validate_run_id
from asd_core.runtime import prepare_model
from asd_core.storage import Location, ensure_bucket, open_location, pyarrow_filesystem, read_bytes, write_bytes
from asd_core.trainprep import prepare_type, select_training_clips

from .common import (
    HelpFormatter,
    ResourcesUnavailable,
    add_ray_args,
    add_set_arg,
    add_storage_args,
    config_error,
    describe,
    parse_machines,
    ray_session,
    require_resources,
    setup_logging,
    storage_errors,
)

log = logging.getLogger("asd.train")

RUNS_DIR = "_runs"
LATEST_MANIFEST = "_manifest.json"
CKPT_FILE = "state.pt"
CKPT_META = "state.json"
# "fan:2" or "fan:2,valve:1": raise once in the last rank at the start of that epoch
# (0-based), to exercise FailureConfig + checkpoint resume. Test knob, off by default.
FAIL_ONCE_ENV = "ASD_TRAIN_FAIL_ONCE"
MAX_SKIPPED_LISTED = 50  # skipped clips named in a summary (the count is always exact)


# ---------------------------------------------------------------- worker side
def _log_to_stderr() -> None:
    """Ray worker processes start without a root handler; give them one."""
    if not logging.getLogger().handlers:
        setup_logging()


def _maybe_fail(cfg: dict[str, Any], epoch: int, rank: int, world: int) -> None:
    fail = cfg.get("fail_once")
    if not fail or epoch != fail["epoch"] or rank != world - 1:
        return
    loc: Location = cfg["models_loc"]
    if loc.fs.exists(fail["marker"]):
        return
    write_bytes(loc, fail["marker"], b"failed once\n")
    raise RuntimeError(f"{cfg['machine_type']}: injected failure at epoch {epoch} on rank {rank}")


def _save_checkpoint(model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict, path: str) -> None:
    core = model.module if hasattr(model, "module") else model
    weights = {k: v.detach().cpu() for k, v in core.state_dict().items()}
    torch.save({"model": weights, "optimizer": opt.state_dict()}, os.path.join(path, CKPT_FILE))
    with open(os.path.join(path, CKPT_META), "w") as f:
        json.dump(state, f)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: resume from ``ray.train.get_checkpoint()``, train, report every epoch.

    ``config``: ``config`` (ASDConfig dict), ``tiles_ref`` (ObjectRef of the kind's
    training rows, e.g. normalised tiles ``[N, n_mels, tile_frames]`` float16), ``machine_type``, optional
    ``fail_once`` / ``models_loc`` (failure injection).
    """
    import ray
    import ray.train
    import ray.train.torch

    _log_to_stderr()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = ASDConfig.from_dict(config["config"])
    kind = get_kind(cfg.model.kind)
    mt = config["machine_type"]
    device = ray.train.torch.get_device()
    tiles = torch.from_numpy(np.asarray(ray.get(config["tiles_ref"]), dtype=np.float32))  # [N, ...]

    torch.manual_seed(cfg.train.seed)  # same initial weights on every rank and every run
    model = kind.build(cfg)
    if world > 1 and device.type == "cuda":
        # SyncBatchNorm keeps BN statistics those of the global batch; it is GPU-only,
        # so CPU DDP normalises each rank's share on its own (losses differ slightly).
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    state: dict[str, Any] = {"epoch": 0, "losses": [], "epoch_seconds": [], "samples_per_s": [], "resumes": []}
    opt_state = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            blob = torch.load(os.path.join(d, CKPT_FILE), map_location="cpu", weights_only=True)
            with open(os.path.join(d, CKPT_META)) as f:
                state = json.load(f)
        model.load_state_dict(blob["model"])
        opt_state = blob["optimizer"]
        state["resumes"].append(state["epoch"])
        if rank == 0:
            log.info("%s: resuming from the checkpoint after epoch %d", mt, state["epoch"])
    model = ray.train.torch.prepare_model(model)  # to device; DDP when world > 1
    prepare_model(model, cfg.model.channels_last)
    opt = kind.optimizer(model, cfg)
    if opt_state is not None:
        opt.load_state_dict(opt_state)

    epochs, every = kind.epochs(cfg), cfg.train.checkpoint_every
    share = tiles.shape[0] / world
    for epoch in range(state["epoch"], epochs):
        _maybe_fail(config, epoch, rank, world)
        t0 = time.perf_counter()
        loss = kind.train_epoch(model, tiles, opt, epoch, cfg, device=device, rank=rank, world_size=world)
        if world > 1:  # the global batch's loss = mean of the ranks' equal shares
            t = torch.tensor([loss], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(t)
            loss = float(t.item()) / world
        dt = time.perf_counter() - t0
        state["epoch"] = epoch + 1
        state["losses"].append(loss)
        state["epoch_seconds"].append(dt)
        state["samples_per_s"].append(share / dt)
        metrics = {"epoch": epoch + 1, "loss": loss, "epoch_seconds": dt, "samples_per_s_per_worker": share / dt}
        if rank == 0:
            log.info("%s: epoch %d/%d loss %.5f (%.1f s, %.0f tiles/s per worker)", mt, epoch + 1, epochs, loss, dt, share / dt)
        last = epoch + 1 == epochs
        if rank == 0 and (last or (every > 0 and (epoch + 1) % every == 0)):
            with tempfile.TemporaryDirectory() as d:
                _save_checkpoint(model, opt, state, d)
                ray.train.report(
                    metrics,
                    checkpoint=ray.train.Checkpoint.from_directory(d),
                    checkpoint_dir_name=f"epoch_{epoch + 1:04d}",
                )
        else:
            ray.train.report(metrics)  # every rank reports every epoch (a barrier)


# ---------------------------------------------------------------- one type (a Ray task)
def _fit_type(spec: dict[str, Any], tiles_ref: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Run the type's TorchTrainer; returns the final model (CPU) and checkpoint state."""
    import ray.train
    from ray.train.torch import TorchTrainer

    gpus, cpus = spec["gpus_per_worker"], spec["cpus_per_worker"]
    resources = {"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})}
    loop_config: dict[str, Any] = {
        "config": spec["config"],
        "tiles_ref": tiles_ref,
        "machine_type": spec["machine_type"],
        "models_loc": spec["models_loc"],
        "fail_once": spec.get("fail_once"),
    }
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec["workers_per_model"], use_gpu=gpus > 0, resources_per_worker=resources
        ),
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
        blob = torch.load(os.path.join(d, CKPT_FILE), map_location="cpu", weights_only=True)
        with open(os.path.join(d, CKPT_META)) as f:
            state = json.load(f)
    cfg = ASDConfig.from_dict(spec["config"])
    model = get_kind(cfg.model.kind).build(cfg)
    model.load_state_dict(blob["model"])
    return model.eval(), state


def train_one_type(spec: dict[str, Any]) -> dict[str, Any]:
    """Prepare data, train, threshold and save one machine type; never raises.

    Returns the type's manifest entry: ``status`` ``ok``/``failed``, ``error``,
    ``epochs``, ``seconds``, ``model_id``, ``trial_name``, clip counts and losses.
    """
    import ray

    _log_to_stderr()
    mt = spec["machine_type"]
    t0 = time.perf_counter()
    entry: dict[str, Any] = {"status": "failed", "error": "", "trial_name": spec["trial_name"], "model_id": ""}
    try:
        cfg = ASDConfig.from_dict(spec["config"])
        data_loc: Location = spec["data_loc"]
        if spec.get("clips") is not None:  # listed on the driver from a manifest or a template
            where = f"{data_loc.uri} ({spec['source']})"
            paths, skipped, domains = select_training_clips(spec["clips"], dcase_layout=False)
        else:
            type_dir = data_loc.join(mt, "train")
            where = type_dir.uri
            if not data_loc.fs.isdir(type_dir.path):
                raise FileNotFoundError(f"{mt}: no training folder {type_dir.uri}")
            paths, skipped, domains = select_training_clips(list_clips(data_loc, split="train", machines=[mt]))
        if not paths:
            raise FileNotFoundError(f"{mt}: no training clips ({', '.join(AUDIO_SUFFIXES)}) under {where}")
        log.info("%s: reading %d training clips from %s", mt, len(paths), where)
        prep = prepare_type(data_loc, mt, paths, cfg, skipped=skipped, domains=domains)
        t_prep = time.perf_counter() - t0
        log.info(
            "%s: %d clips usable, %d skipped, %d training tiles (%.1f s)",
            mt, prep.n_clips, len(prep.skipped), prep.tiles.shape[0], t_prep,
        )
        kind = get_kind(cfg.model.kind)
        t1 = time.perf_counter()
        if kind.epochs(cfg) > 0:
            tiles_ref = ray.put(prep.tiles)
            model, state = _fit_type(spec, tiles_ref)
            del tiles_ref
        else:  # nothing to train (knn): the artifact is the stored features
            model, state = None, {"epoch": 0, "losses": [], "epoch_seconds": [], "samples_per_s": [], "resumes": []}
        t_train = time.perf_counter() - t1
        fitted = kind.finalize(model, prep.prepared, cfg)
        threshold, scores = fitted.threshold, fitted.train_scores
        summary = {
            "model_kind": kind.name,
            "n_clips": prep.n_clips,
            "n_skipped": len(prep.skipped),
            "skipped": [{"path": p, "reason": r} for p, r in prep.skipped[:MAX_SKIPPED_LISTED]],
            "n_tiles": int(prep.tiles.shape[0]),
            "n_tiles_before_cap": prep.n_tiles_total,
            "losses": state["losses"],
            "epochs": state["epoch"],
            "epoch_seconds": state["epoch_seconds"],
            "samples_per_s_per_worker": state["samples_per_s"],
            "resumes": state["resumes"],
            "workers": spec["workers_per_model"],
            "run_id": spec["run_id"],
            "trial_name": spec["trial_name"],
            "prepare_seconds": t_prep,
            "train_seconds": t_train,
            "total_seconds": time.perf_counter() - t0,
            "train_score_mean": float(np.mean(scores)),
            "train_score_std": float(np.std(scores)),
        }
        model_id = save_artifact(spec["models_loc"], mt, fitted, cfg, summary)
        entry.update(
            status="ok",
            model_kind=kind.name,
            model_id=model_id,
            epochs=state["epoch"],
            losses=state["losses"],
            resumes=state["resumes"],
            n_clips=prep.n_clips,
            n_skipped=len(prep.skipped),
            threshold=float(threshold),
            prepare_seconds=round(t_prep, 2),
            train_seconds=round(t_train, 2),
            samples_per_s_per_worker=state["samples_per_s"],
        )
        log.info("%s: done, model %s, threshold %.4f (%.1f s)", mt, model_id, threshold, time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - a type fails alone, with its message
        entry["error"] = f"{type(e).__name__}: {e}"
        log.error("%s: FAILED: %s", mt, entry["error"])
    entry["seconds"] = round(time.perf_counter() - t0, 2)
    return entry


# ---------------------------------------------------------------- driver
def _new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def _read_json(loc: Location, path: str) -> dict[str, Any] | None:
    try:
        return json.loads(read_bytes(loc, path))
    except FileNotFoundError:
        return None


def _write_manifest(loc: Location, manifest: dict[str, Any]) -> None:
    blob = json.dumps(manifest, indent=2, sort_keys=True).encode()
    write_bytes(loc, posixpath.join(loc.path, RUNS_DIR, manifest["run_id"], "manifest.json"), blob)
    write_bytes(loc, posixpath.join(loc.path, LATEST_MANIFEST), blob)


def _parse_fail_once(value: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in (value or "").split(","):
        if item.strip():
            mt, _, ep = item.strip().rpartition(":")
            out[mt] = int(ep)
    return out


def _auto_cpus_per_worker(n_workers_total: int) -> float:
    """Fractional CPUs so that every worker of every type fits at once (at most 1 each)."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    return max(0.05, min(1.0, round(cpus / max(n_workers_total, 1) * 0.9, 2)))


def load_manifest(models_uri: str, run_name: str | None = None, endpoint_url: str | None = None) -> dict | None:
    """The manifest of run ``run_name`` (or of the latest run) under ``models_uri``."""
    loc = open_location(models_uri, endpoint_url)
    path = (
        posixpath.join(loc.path, RUNS_DIR, run_name, "manifest.json")
        if run_name
        else posixpath.join(loc.path, LATEST_MANIFEST)
    )
    return _read_json(loc, path)


def run_training(
    data_uri: str,
    models_uri: str,
    *,
    config: ASDConfig,
    machines: list[str] | None = None,
    workers_per_model: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float | None = None,
    endpoint_url: str | None = None,
    resume: bool = False,
    run_name: str | None = None,
    max_failures: int = 2,
    fail_once: dict[str, int] | None = None,
    clips: list[ListedClip] | None = None,
    source: str = "",
) -> dict[str, Any]:
    """Train every machine type of ``data_uri`` concurrently; returns the run manifest.

    ``clips`` (from :func:`asd_core.catalog.list_clips` with a manifest or a template;
    ``source`` says which) replaces the DCASE layout: the machine types are theirs.

    Needs an initialised Ray. ``machines`` filters the archive's type folders (a
    name with no folder fails alone). ``cpus_per_worker`` None = share the cluster's
    CPUs among all workers (<= 1 each); with ``gpus_per_worker`` > 0 workers are GPU
    workers (1 CPU each unless given). ``resume`` continues run ``run_name`` (default:
    the latest run) from its checkpoints; without it ``run_name`` names a new run.
    ``fail_once`` (``{type: epoch}``, default from ``$ASD_TRAIN_FAIL_ONCE``) injects
    one worker failure per type, for tests. The manifest's ``status`` is ``ok`` only
    when every type is.
    """
    import ray

    if run_name is not None:
        validate_run_id(run_name, "run name")
    data_loc = open_location(data_uri, endpoint_url)
    models_loc = open_location(models_uri, endpoint_url)
    ensure_bucket(models_loc)
    fail_once = fail_once if fail_once is not None else _parse_fail_once(os.environ.get(FAIL_ONCE_ENV))

    previous: dict[str, Any] | None = None
    if resume:
        previous = load_manifest(models_uri, run_name, endpoint_url)
        if previous is None:
            raise FileNotFoundError(f"--resume: no previous run {run_name or '(latest)'} under {models_loc.uri}")
        old = ASDConfig.from_dict(previous["config"])
        for stage in ("features", "masks", "model"):
            if getattr(old, stage) != getattr(config, stage):
                raise ValueError(
                    f"--resume: run {previous['run_id']} used {stage} {getattr(old, stage)}, now "
                    f"{getattr(config, stage)}; its checkpoints do not fit. Start a new run instead."
                )
        run_id = previous["run_id"]
    else:
        run_id = run_name or _new_run_id()
        if _read_json(models_loc, posixpath.join(models_loc.path, RUNS_DIR, run_id, "manifest.json")):
            raise FileExistsError(f"run {run_id} exists under {models_loc.uri}; use --resume to continue it")

    by_type: dict[str, list[ListedClip]] = {}
    for c in clips or []:
        by_type.setdefault(c.machine_type, []).append(c)
    by_type.pop("", None)  # files a template did not match: no type to train
    if clips is not None:
        types = list(dict.fromkeys(machines)) if machines else sorted(by_type)
        if not types:
            raise FileNotFoundError(f"no clips with a machine type in {source or 'the listing'} of {data_loc.uri}")
    elif machines:
        types = list(dict.fromkeys(machines))
    else:
        types = machine_types(data_loc)
        if not types:
            raise FileNotFoundError(f"no machine-type folders under {data_loc.uri}")
    if gpus_per_worker > 0:  # fail now rather than wait forever for GPUs that will never come
        require_resources(
            {"GPU": gpus_per_worker * workers_per_model},
            f"--gpus-per-worker {gpus_per_worker:g} x --workers-per-model {workers_per_model} (one machine type)",
        )
    if cpus_per_worker is None:
        cpus_per_worker = 1.0 if gpus_per_worker > 0 else _auto_cpus_per_worker(len(types) * workers_per_model)

    storage_path = posixpath.join(models_loc.path, RUNS_DIR, run_id)
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "status": "running",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data_uri": data_loc.uri,
        "source": source or "dcase layout",
        "models_uri": models_loc.uri,
        "checkpoints_uri": models_loc.uri_of(storage_path),
        "config": config.to_dict(),
        "workers_per_model": workers_per_model,
        "gpus_per_worker": gpus_per_worker,
        "cpus_per_worker": cpus_per_worker,
        "resumed": bool(resume),
        "types": {},
    }
    done_artifacts = set(list_artifacts(models_loc)) if previous else set()
    remote = ray.remote(num_cpus=0, max_retries=0)(train_one_type)
    pending: dict[Any, str] = {}
    for mt in types:
        prev = (previous or {}).get("types", {}).get(mt)
        if (
            prev
            and prev.get("status") == "ok"
            and prev.get("epochs") == get_kind(config.model.kind).epochs(config)
            and mt in done_artifacts
        ):
            log.info("%s: already trained in run %s (%d epochs); kept", mt, run_id, prev["epochs"])
            manifest["types"][mt] = {**prev, "kept_from_previous": True}
            continue
        spec = {
            "machine_type": mt,
            "run_id": run_id,
            "trial_name": mt,  # unique per run: storage_path holds the run id
            "storage_path": storage_path,
            "data_loc": data_loc,
            "models_loc": models_loc,
            "config": config.to_dict(),
            "clips": by_type.get(mt, []) if clips is not None else None,
            "source": source,
            "workers_per_model": workers_per_model,
            "gpus_per_worker": gpus_per_worker,
            "cpus_per_worker": cpus_per_worker,
            "max_failures": max_failures,
            "fail_once": (
                {"epoch": fail_once[mt], "marker": posixpath.join(storage_path, f"_injected_failure_{mt}")}
                if mt in fail_once
                else None
            ),
        }
        manifest["types"][mt] = {"status": "running", "trial_name": mt}
        pending[remote.remote(spec)] = mt
    log.info(
        "run %s: training %d machine types (%s) with %d worker(s) each (%.2f CPU, %.2f GPU per worker)",
        run_id, len(pending), ", ".join(pending.values()), workers_per_model, cpus_per_worker, gpus_per_worker,
    )
    _write_manifest(models_loc, manifest)
    t0 = time.perf_counter()
    n_total = len(pending)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            mt = pending.pop(ready[0])
            try:
                entry = ray.get(ready[0])
            except Exception as e:  # noqa: BLE001 - the task itself died (e.g. its node)
                entry = {"status": "failed", "error": f"{type(e).__name__}: {e}", "trial_name": mt}
            manifest["types"][mt] = entry
            n_done = n_total - len(pending)
            elapsed = time.perf_counter() - t0
            eta = f", ETA {elapsed / n_done * len(pending):.0f} s" if pending else ""
            log.info("%s: %s after %.1f s%s (%d/%d types done%s)", mt, entry["status"], elapsed,
                     f" ({entry['error']})" if entry.get("error") else "", n_done, n_total, eta)
            _write_manifest(models_loc, manifest)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, `ray job stop` (SIGTERM, see main)
        for ref, mt in pending.items():
            manifest["types"][mt] = {**manifest["types"][mt], "status": "stopped"}
            ray.cancel(ref, force=True, recursive=True)
        manifest.update(status="stopped", finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        _write_manifest(models_loc, manifest)
        log.error("run %s stopped; manifest says so (--resume continues it)", run_id)
        raise
    manifest["status"] = "ok" if all(e["status"] == "ok" for e in manifest["types"].values()) else "failed"
    manifest["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest["seconds"] = round(time.perf_counter() - t0, 2)
    _write_manifest(models_loc, manifest)
    return manifest


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
    p.add_argument("--model", default=None, choices=KINDS,
                   help="model kind (default: the preset's, unet); sets model.kind")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS),
                   help="base configuration: default = U-Net width 64, 100 epochs (for GPUs); report = the "
                        "technical report's; tiny = width 8, 8 epochs (CPU)")
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


@contextlib.contextmanager
def _stop_on_sigterm():
    """`ray job stop` sends SIGTERM: turn it into KeyboardInterrupt so the manifest
    is marked "stopped" on the way out (Python's default would just die)."""
    import signal
    import threading

    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    with _stop_on_sigterm():
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
    if args.run_name is not None:
        try:
            validate_run_id(args.run_name, "--run-name")
        except ValueError as e:  # before Ray starts: the name becomes a folder under MODELS_URI
            log.error("%s", e)
            return 2
    # Inputs are listed and checked before Ray starts; each problem is one line.
    clips, source = None, ""
    try:
        machines = parse_machines(args.machines)
        data = open_location(args.data_uri, args.endpoint_url)
        open_location(args.models_uri, args.endpoint_url)
        with storage_errors("data", args.data_uri):
            listed = list_clips(data, split="train", machines=machines, pattern=args.pattern,
                                manifest=args.manifest, endpoint_url=args.endpoint_url, training=True,
                                only=parse_only(args.only))
        layout = "dcase"
        if args.manifest or args.pattern:  # the driver's listing is what the workers train on
            source = layout = f"manifest {args.manifest}" if args.manifest else f"--pattern {args.pattern!r}"
            clips = listed
        problem = listing_problem(listed, data, machines=machines, split="train", layout=layout)
        if problem:
            raise ValueError(problem)
    except ValueError as e:  # a bad URI scheme, manifest (ManifestError), template, an empty listing
        print(f"asd train: {e}")
        return 2
    try:
        with ray_session(args.address, args.endpoint_url):
            manifest = run_training(
                args.data_uri,
                args.models_uri,
                config=config,
                machines=machines,
                workers_per_model=args.workers_per_model,
                gpus_per_worker=args.gpus_per_worker,
                cpus_per_worker=args.cpus_per_worker,
                endpoint_url=args.endpoint_url,
                resume=args.resume,
                run_name=args.run_name,
                max_failures=args.max_failures,
                clips=clips,
                source=source,
            )
    except (FileNotFoundError, FileExistsError, ValueError, ResourcesUnavailable) as e:  # nothing could start
        log.error("%s", e)
        print(f"asd train: {e}")
        return 2
    except KeyboardInterrupt:
        print("asd train: stopped")
        return 130
    for mt, e in sorted(manifest["types"].items()):
        losses = e.get("losses") or []
        tail = (
            f"{f'loss {losses[-1]:.5f}, ' if losses else ''}{e.get('epochs')} epochs, {e.get('model_id')}"
            if e["status"] == "ok" else e.get("error")
        )
        print(f"{mt:>16}  {e['status']:6}  {tail}")
    print(f"run {manifest['run_id']}: {manifest['status']}; manifest {manifest['models_uri']}/{LATEST_MANIFEST}")
    return 0 if manifest["status"] == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
