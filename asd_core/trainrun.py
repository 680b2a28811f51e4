"""A training run without Ray: its options, the run record under ``MODELS_URI/_runs/``,
the checkpoint format, and one machine type from listing to saved artifact with the
training itself passed in (``jobs.train`` runs it on Ray Train).

The run record (``_runs/<run_id>/manifest.json``, copied to ``_manifest.json``) lists
every type's status and is rewritten as each type finishes, so a stopped or failed
run says what it did. Resume: Ray Train V2 continues a run from its latest checkpoint
whenever a trainer reuses a ``(storage_path, name)``. Every run therefore gets a fresh
run id; ``--resume`` reuses the previous run's id and names instead, so interrupted or
failed types continue from their last checkpoint and finished ones are kept (or
trained further when ``epochs`` was raised).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .artifact import list_artifacts, save_artifact, score_quantiles
from .catalog import ListedClip, list_clips, machine_types
from .config import ASDConfig
from .dcase import AUDIO_SUFFIXES
from .holdout import HoldOut, relative
from .kinds import get_kind
from .progress import Progress
from .runs import new_run_id, validate_run_id
from .storage import Location, ensure_bucket, open_location, read_bytes, write_bytes
from .trainprep import prepare_type, select_training_clips

log = logging.getLogger("asd.train")

RUNS_DIR = "_runs"
RUN_RECORD = "manifest.json"  # _runs/<run_id>/manifest.json
LATEST_RECORD = "_manifest.json"  # the latest run's record, at the models root
CKPT_FILE = "state.pt"
CKPT_META = "state.json"
# "fan:2" or "fan:2,valve:1": raise once in the last rank at the start of that epoch
# (0-based), to exercise FailureConfig + checkpoint resume. Test knob, off by default.
FAIL_ONCE_ENV = "ASD_TRAIN_FAIL_ONCE"
MAX_SKIPPED_LISTED = 50  # skipped clips named in a summary (the count is always exact)


@dataclass(frozen=True)
class TrainOptions:
    """Everything a training run is told, written once: ``asd train``'s options map
    onto these fields by name."""

    data_uri: str
    models_uri: str
    config: ASDConfig
    machines: list[str] | None = None
    workers_per_model: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float | None = None  # None: share the cluster's CPUs (<= 1 each); 1 with GPUs
    endpoint_url: str | None = None
    resume: bool = False
    run_name: str | None = None
    max_failures: int = 2
    fail_once: dict[str, int] | None = None  # {type: epoch}; default from $ASD_TRAIN_FAIL_ONCE
    clips: list[ListedClip] | None = None  # listed from a manifest or a template (DCASE layout when None)
    source: str = ""  # which listing ``clips`` came from


# ---------------------------------------------------------------- checkpoints
def save_checkpoint(model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict, directory: str) -> None:
    """Weights (unwrapped from DDP) and optimizer in ``state.pt``, progress in ``state.json``."""
    core = model.module if hasattr(model, "module") else model
    weights = {k: v.detach().cpu() for k, v in core.state_dict().items()}
    torch.save({"model": weights, "optimizer": opt.state_dict()}, os.path.join(directory, CKPT_FILE))
    with open(os.path.join(directory, CKPT_META), "w") as f:
        json.dump(state, f)


def load_checkpoint(directory: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(blob, state)`` of :func:`save_checkpoint`: ``blob["model"]``, ``blob["optimizer"]``."""
    blob = torch.load(os.path.join(directory, CKPT_FILE), map_location="cpu", weights_only=True)
    with open(os.path.join(directory, CKPT_META)) as f:
        return blob, json.load(f)


def initial_model(
    cfg: ASDConfig, checkpoint_dir: str | None = None, *, sync_batchnorm: bool = False
) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any] | None]:
    """``(model, state, optimizer state)``: the kind's network with seeded initial
    weights (the same on every rank and every run), or a checkpoint's weights and
    progress."""
    torch.manual_seed(cfg.train.seed)
    model = get_kind(cfg.model.kind).build(cfg)
    if sync_batchnorm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if checkpoint_dir is None:
        return model, new_state(), None
    blob, state = load_checkpoint(checkpoint_dir)
    model.load_state_dict(blob["model"])
    return model, state, blob["optimizer"]


def new_state() -> dict[str, Any]:
    """A type's training progress before its first epoch (what checkpoints carry)."""
    return {"epoch": 0, "losses": [], "epoch_seconds": [], "samples_per_s": [], "resumes": []}


def record_epoch(state: dict[str, Any], epoch: int, loss: float, seconds: float, rows: float) -> dict[str, float]:
    """Add a finished epoch to a checkpoint ``state``; returns the epoch's metrics
    (``rows``: training rows per worker)."""
    state["epoch"] = epoch + 1
    state["losses"].append(loss)
    state["epoch_seconds"].append(seconds)
    state["samples_per_s"].append(rows / seconds)
    return {"epoch": epoch + 1, "loss": loss, "epoch_seconds": seconds, "samples_per_s_per_worker": rows / seconds}


def maybe_fail(spec: dict[str, Any], epoch: int, rank: int, world: int) -> None:
    """The ``fail_once`` test knob: raise once (a marker file remembers) in the last rank."""
    fail = spec.get("fail_once")
    if not fail or epoch != fail["epoch"] or rank != world - 1:
        return
    loc: Location = spec["models_loc"]
    if loc.fs.exists(fail["marker"]):
        return
    write_bytes(loc, fail["marker"], b"failed once\n")
    raise RuntimeError(f"{spec['machine_type']}: injected failure at epoch {epoch} on rank {rank}")


def parse_fail_once(value: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in (value or "").split(","):
        if item.strip():
            mt, _, ep = item.strip().rpartition(":")
            out[mt] = int(ep)
    return out


# ---------------------------------------------------------------- run records
def _read_json(loc: Location, path: str) -> dict[str, Any] | None:
    try:
        return json.loads(read_bytes(loc, path))
    except FileNotFoundError:
        return None


def write_record(loc: Location, record: dict[str, Any]) -> None:
    blob = json.dumps(record, indent=2, sort_keys=True).encode()
    write_bytes(loc, posixpath.join(loc.path, RUNS_DIR, record["run_id"], RUN_RECORD), blob)
    write_bytes(loc, posixpath.join(loc.path, LATEST_RECORD), blob)


def read_record(models_uri: str, run_name: str | None = None, endpoint_url: str | None = None) -> dict | None:
    """The record of training run ``run_name`` (or of the latest run) under ``models_uri``."""
    loc = open_location(models_uri, endpoint_url)
    if run_name:
        return _read_json(loc, posixpath.join(loc.path, RUNS_DIR, validate_run_id(run_name, "run name"), RUN_RECORD))
    return _read_json(loc, posixpath.join(loc.path, LATEST_RECORD))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class TrainingRun:
    """The driver's side of a training run: which types to train, the record, resume.

    ``TrainingRun(opts)`` checks the run (a run name that exists without ``resume``,
    checkpoints a changed config cannot use, no types) and raises ``FileNotFoundError``,
    ``FileExistsError`` or ``ValueError`` before anything is written.
    """

    def __init__(self, opts: TrainOptions):
        self.opts = opts
        config = opts.config
        if opts.run_name is not None:
            validate_run_id(opts.run_name, "run name")
        self.data_loc = open_location(opts.data_uri, opts.endpoint_url)
        self.models_loc = open_location(opts.models_uri, opts.endpoint_url)
        ensure_bucket(self.models_loc)
        self.previous: dict[str, Any] | None = None
        if opts.resume:
            self.previous = read_record(opts.models_uri, opts.run_name, opts.endpoint_url)
            if self.previous is None:
                raise FileNotFoundError(
                    f"--resume: no previous run {opts.run_name or '(latest)'} under {self.models_loc.uri}")
            old = ASDConfig.from_dict(self.previous["config"])
            for stage in ("features", "masks", "model"):
                if getattr(old, stage) != getattr(config, stage):
                    raise ValueError(
                        f"--resume: run {self.previous['run_id']} used {stage} {getattr(old, stage)}, now "
                        f"{getattr(config, stage)}; its checkpoints do not fit. Start a new run instead."
                    )
            self.run_id = self.previous["run_id"]
        else:
            self.run_id = opts.run_name or new_run_id()
            if _read_json(self.models_loc, posixpath.join(self.models_loc.path, RUNS_DIR, self.run_id, RUN_RECORD)):
                raise FileExistsError(f"run {self.run_id} exists under {self.models_loc.uri}; use --resume to continue it")
        self.by_type: dict[str, list[ListedClip]] = {}
        for c in opts.clips or []:
            self.by_type.setdefault(c.machine_type, []).append(c)
        self.by_type.pop("", None)  # files a template did not match: no type to train
        if opts.clips is not None:
            self.types = list(dict.fromkeys(opts.machines)) if opts.machines else sorted(self.by_type)
            if not self.types:
                raise FileNotFoundError(f"no clips with a machine type in {opts.source or 'the listing'} of "
                                        f"{self.data_loc.uri}")
        elif opts.machines:
            self.types = list(dict.fromkeys(opts.machines))
        else:
            self.types = machine_types(self.data_loc)
            if not self.types:
                raise FileNotFoundError(f"no machine-type folders under {self.data_loc.uri}")
        self.storage_path = posixpath.join(self.models_loc.path, RUNS_DIR, self.run_id)
        self.record: dict[str, Any] = {}

    def start(self, cpus_per_worker: float) -> list[dict[str, Any]]:
        """Write the record and return one spec per type to train (types a resumed run
        already finished with the same epochs are kept, not returned)."""
        opts, config = self.opts, self.opts.config
        fail_once = opts.fail_once if opts.fail_once is not None else parse_fail_once(os.environ.get(FAIL_ONCE_ENV))
        self.record = {
            "run_id": self.run_id,
            "status": "running",
            "started_at": _now(),
            "data_uri": self.data_loc.uri,
            "source": opts.source or "dcase layout",
            "models_uri": self.models_loc.uri,
            "checkpoints_uri": self.models_loc.uri_of(self.storage_path),
            "config": config.to_dict(),
            "workers_per_model": opts.workers_per_model,
            "gpus_per_worker": opts.gpus_per_worker,
            "cpus_per_worker": cpus_per_worker,
            "resumed": bool(opts.resume),
            "types": {},
        }
        done_artifacts = set(list_artifacts(self.models_loc)) if self.previous else set()
        specs = []
        for mt in self.types:
            prev = (self.previous or {}).get("types", {}).get(mt)
            if (prev and prev.get("status") == "ok" and prev.get("epochs") == get_kind(config.model.kind).epochs(config)
                    and mt in done_artifacts):
                log.info("%s: already trained in run %s (%d epochs); kept", mt, self.run_id, prev["epochs"])
                self.record["types"][mt] = {**prev, "kept_from_previous": True}
                continue
            specs.append({
                "machine_type": mt,
                "run_id": self.run_id,
                "trial_name": mt,  # unique per run: storage_path holds the run id
                "storage_path": self.storage_path,
                "data_loc": self.data_loc,
                "models_loc": self.models_loc,
                "config": config.to_dict(),
                "clips": self.by_type.get(mt, []) if opts.clips is not None else None,
                "source": opts.source,
                "workers_per_model": opts.workers_per_model,
                "gpus_per_worker": opts.gpus_per_worker,
                "cpus_per_worker": cpus_per_worker,
                "max_failures": opts.max_failures,
                "fail_once": (
                    {"epoch": fail_once[mt], "marker": posixpath.join(self.storage_path, f"_injected_failure_{mt}")}
                    if mt in fail_once else None
                ),
            })
            self.record["types"][mt] = {"status": "running", "trial_name": mt}
        write_record(self.models_loc, self.record)
        self._t0, self._n_started = time.perf_counter(), len(specs)
        return specs

    def type_done(self, machine_type: str, entry: dict[str, Any], n_left: int = 0,
                  say: Callable[[str], None] | None = None) -> None:
        """Record a finished (or failed) type and tell the run's progress (``say``: where
        the line goes, e.g. :meth:`TrainingProgress.note`; default the log)."""
        self.record["types"][machine_type] = entry
        write_record(self.models_loc, self.record)
        n_done, elapsed = self._n_started - n_left, time.perf_counter() - self._t0
        eta = f", ETA {elapsed / n_done * n_left:.0f} s" if n_left and n_done else ""
        error = f" ({entry['error']})" if entry.get("error") else ""
        (say or log.info)(f"{machine_type}: {entry['status']} after {elapsed:.1f} s{error} "
                          f"({n_done}/{self._n_started} types done{eta})")

    def unfinished(self) -> list[str]:
        """The types started and not yet recorded as done (``running``)."""
        return [mt for mt, e in self.record["types"].items() if e.get("status") == "running"]

    def stopped(self) -> None:
        """Ctrl-C or SIGTERM: every type still ``running`` and the run are marked ``stopped``."""
        for mt in self.unfinished():
            self.record["types"][mt] = {**self.record["types"][mt], "status": "stopped"}
        self.record.update(status="stopped", finished_at=_now())
        write_record(self.models_loc, self.record)
        log.error("run %s stopped; its record says so (--resume continues it)", self.run_id)

    def finish(self) -> dict[str, Any]:
        """The final record: ``status`` ``ok`` only when every type is."""
        self.record["status"] = "ok" if all(e["status"] == "ok" for e in self.record["types"].values()) else "failed"
        self.record["finished_at"] = _now()
        self.record["seconds"] = round(time.perf_counter() - self._t0, 2)
        write_record(self.models_loc, self.record)
        return self.record


class TrainingProgress:
    """The driver's view of a run's training: one bar over every type's epochs (over
    the types for a kind with nothing to train), a line per epoch reported by a type's
    rank 0 (:meth:`epoch`), and :meth:`note` for other lines, so that they go above the
    bar in a terminal and into the log otherwise. An epoch a resumed or restarted
    worker group repeats does not move the bar twice."""

    def __init__(self, machine_types: list[str], epochs: int, log_: logging.Logger | None = None):
        self.epochs = epochs
        total = epochs * len(machine_types) if epochs else len(machine_types)
        self.bar = Progress("training", total, "epochs" if epochs else "types", log=log_ or log)
        self.done = dict.fromkeys(machine_types, 0)

    def note(self, message: str) -> None:
        self.bar.note(message)

    def _advance(self, machine_type: str, epoch: int) -> None:
        delta = epoch - self.done.get(machine_type, 0)
        if delta > 0:
            self.done[machine_type] = epoch
            self.bar.update(delta)

    def epoch(self, machine_type: str, epoch: int, loss: float, seconds: float) -> None:
        """Epoch ``epoch`` (1-based) of ``machine_type`` finished with ``loss``."""
        self._advance(machine_type, epoch)
        self.note(f"{machine_type}: epoch {epoch}/{self.epochs} loss {loss:.5f} ({seconds:.1f} s)")

    def type_finished(self, machine_type: str) -> None:
        """The type is done (or failed): its epochs count as passed."""
        if self.epochs:
            self._advance(machine_type, self.epochs)
        elif self.done.get(machine_type) == 0:
            self.done[machine_type] = 1
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> TrainingProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def format_record(record: dict[str, Any]) -> str:
    """One line per type (status, last loss, epochs, model id or error) and the run's."""
    lines = []
    for mt, e in sorted(record["types"].items()):
        losses = e.get("losses") or []
        tail = (
            f"{f'loss {losses[-1]:.5f}, ' if losses else ''}{e.get('epochs')} epochs, {e.get('model_id')}"
            if e["status"] == "ok" else e.get("error")
        )
        lines.append(f"{mt:>16}  {e['status']:6}  {tail}")
    lines.append(f"run {record['run_id']}: {record['status']}; record {record['models_uri']}/{LATEST_RECORD}")
    return "\n".join(lines)


def hold_out(clips: list[ListedClip], data_loc: Location, cfg: ASDConfig) -> tuple[list[ListedClip], dict]:
    """Leave ``train.holdout_share`` of the normal clips whose split the archive does
    not say out of training; returns the clips to train on and the rule to record
    (``{}`` when nothing was held out)."""
    rule = HoldOut(cfg.train.holdout_share, cfg.train.seed)
    if rule.share <= 0 or all(c.split_known for c in clips):
        return clips, {}
    keep = [c for c in clips if c.split_known or c.label == "anomaly" or not rule.held_out(relative(c.path, data_loc.path))]
    log.info("%s: %d of %d normal clips held out for evaluation (no split in the archive; seed %d)",
             clips[0].machine_type if clips else "", len(clips) - len(keep), len(clips), rule.seed)
    return keep, {**rule.to_dict(), "n_held_out": len(clips) - len(keep)}


# ---------------------------------------------------------------- one type
# fit(rows, spec) -> (trained model on the CPU in eval mode, checkpoint state)
Fit = Callable[[np.ndarray, dict[str, Any]], tuple[torch.nn.Module, dict[str, Any]]]


def train_type_from_spec(spec: dict[str, Any], fit: Fit) -> dict[str, Any]:
    """Prepare data, train (``fit``), threshold and save one machine type; never raises.

    Returns the type's record entry: ``status`` ``ok``/``failed``, ``error``,
    ``epochs``, ``seconds``, ``model_id``, ``trial_name``, clip counts and losses.
    """
    mt = spec["machine_type"]
    t0 = time.perf_counter()
    entry: dict[str, Any] = {"status": "failed", "error": "", "trial_name": spec["trial_name"], "model_id": ""}
    try:
        cfg = ASDConfig.from_dict(spec["config"])
        data_loc: Location = spec["data_loc"]
        holdout: dict = {}
        if spec.get("clips") is not None:  # listed on the driver from a manifest or a template
            where = f"{data_loc.uri} ({spec['source']})"
            clips, holdout = hold_out(spec["clips"], data_loc, cfg)
            paths, skipped, domains = select_training_clips(clips, dcase_layout=False)
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
        rows = prep.prepared.train_data
        log.info("%s: %d clips usable, %d skipped, %d training rows (%.1f s)",
                 mt, prep.n_clips, len(prep.skipped), rows.shape[0], t_prep)
        kind = get_kind(cfg.model.kind)
        t1 = time.perf_counter()
        if kind.epochs(cfg) > 0:
            model, state = fit(rows, spec)
        else:  # nothing to train (knn): the artifact is the stored features
            model, state = None, new_state()
        t_train = time.perf_counter() - t1
        fitted = kind.finalize(model, prep.prepared, cfg)
        fitted.extras = {**fitted.extras, "level_db": prep.level_db}  # sensor check at scoring
        if holdout:  # scoring evaluates exactly the held-out normals
            fitted.extras["holdout"] = holdout
        threshold, scores = fitted.threshold, fitted.train_scores
        summary = {
            "model_kind": kind.name,
            "n_clips": prep.n_clips,
            "n_skipped": len(prep.skipped),
            "skipped": [{"path": p, "reason": r} for p, r in prep.skipped[:MAX_SKIPPED_LISTED]],
            "n_tiles": int(rows.shape[0]),
            "n_tiles_before_cap": prep.prepared.n_rows_total,
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
            "train_score_quantiles": score_quantiles(scores),
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
            n_held_out=holdout.get("n_held_out", 0),
        )
        log.info("%s: done, model %s, threshold %.4f (%.1f s)", mt, model_id, threshold, time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - a type fails alone, with its message
        entry["error"] = f"{type(e).__name__}: {e}"
        log.error("%s: FAILED: %s", mt, entry["error"])
    entry["seconds"] = round(time.perf_counter() - t0, 2)
    return entry
