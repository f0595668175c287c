"""The DDP trainer: one function that every rank runs, under Dask (``launch.run_cnn``) or torchrun.

Each rank trains a replica on its part of the training clips (``DistributedSampler``: disjoint
parts, reshuffled per epoch from the seed), gradients are averaged by DDP (gloo on CPU, NCCL on
GPU, where the forward pass runs in float16 autocast with a ``GradScaler``). After every epoch all
ranks score the validation segments (each rank a disjoint slice; the predictions are gathered so
every rank takes the same early-stopping decision), and rank 0 writes the checkpoint, metrics.csv
and curves.png (a run folder in object storage: into a local folder, each file then uploaded
whole, see :mod:`fmadask.dl.outputs`). At the end the best weights (lowest validation loss) score validation and test by
segment, by majority vote and by mean probability per track, and rank 0 writes the model, the
predictions, confusion matrices and a report into ``RUN_DIR/cnn``.

The shape is torchvision's ``references/classification``: a setup (data, net, loaders,
optimiser, schedule), a plan of what remains (a resumed run's epochs and state), and
``train_one_epoch`` / ``evaluate`` outside the main body. :class:`Callback` objects hook into the
training loop (the tests' probes of DDP's synchronisation and their failure injection).

Run under torchrun (it reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)::

    torchrun --nproc-per-node 2 -m fmadask.dl.trainer RUN_DIR --arch naive --epochs 20
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import logging
import multiprocessing
import os
import socket
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler

from fmadask.dl.augment import Augmentation, augment_batch, batch_generator
from fmadask.dl.callbacks import Callback, Step, digest
from fmadask.dl.checkpoint import (check_resume, fresh_start, load_checkpoint, rng_state,
                                   set_rng_state, to_plain)
from fmadask.dl.config import TrainConfig, add_config_arguments, config_options
from fmadask.dl.dataset import (SegmentDataset, Spectrograms, normalisation, open_spectrograms,
                                prefetch, segment_frames)
from fmadask.dl.evaluate import score_segments, score_segments_multilabel
from fmadask.dl.nets import build_net
from fmadask.dl.outputs import OutputFolder, out_location, output_folder
from fmadask.dl.task import Task, open_task
from fmadask.dl.ranks import (DistSpec, RankFailure, backend_for, gather_all, is_peer_failure,
                              select_device, teardown)
from fmadask.runfolder import (BEST_CHECKPOINT, CHECKPOINTS, CURVES_FILE, LAST_CHECKPOINT,
                               METRICS_FILE, PREDICTIONS_FILE, REPORT_FILE, confusion_file)
from fmadask import storage
from fmadask.errors import ConfigError, DataError, FmadaskError
from fmadask.atomic import atomic_path
from fmadask.flags import resolve_options
from fmadask.report.tables import markdown_table

log = logging.getLogger(__name__)


def _atomic_write(path: Path, write) -> None:
    """Write through ``write(binary_file)`` to a temporary name, then rename into place."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)


def loader_workers(requested: int) -> int:
    """DataLoader processes to use: ``requested``, or 0 inside a daemonic process.

    Dask's worker processes are daemonic, and a daemonic process may not have children
    (multiprocessing refuses): there the ranks load data in-process.
    """
    if requested and multiprocessing.current_process().daemon:
        log.warning("num_workers=%d ignored inside a daemonic process (a Dask worker): "
                    "loading data in-process", requested)
        return 0
    return requested


def _make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def _make_scheduler(config: TrainConfig, optimizer, total_steps: int):
    if config.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr,
                                                   total_steps=max(total_steps, 2))
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


@dataclass
class _Run:
    """Everything a rank holds while training."""

    config: TrainConfig
    spec: DistSpec
    device: torch.device
    data: Spectrograms
    outputs: OutputFolder
    task: Task
    seg: int
    mean: float
    std: float
    model: nn.Module
    ddp: DistributedDataParallel
    amp: bool
    augmentation: Augmentation = field(default_factory=Augmentation)
    loader_workers: int = 0
    callbacks: tuple[Callback, ...] = ()
    ema: AveragedModel | None = None

    @property
    def is_main(self) -> bool:
        return self.spec.rank == 0

    @property
    def classes(self) -> list[str]:
        """The net's outputs in order (genre titles)."""
        return list(self.task.classes)

    def tracks(self, split: str) -> pd.DataFrame:
        """The index rows of ``split`` the task learns from (see :meth:`Task.usable`)."""
        return self.task.usable(self.data.tracks(split))

    @property
    def net(self) -> nn.Module:
        """The net that is evaluated, kept as best and saved: the moving average of the
        weights when ``config.ema`` is on, else the trained module itself."""
        return self.model if self.ema is None else self.ema.module

    @property
    def out_dir(self) -> Path:
        """The folder this rank writes into (for object storage, a local one uploaded from)."""
        return self.outputs.local

    def loader(self, split: str,
               train: bool) -> tuple[DataLoader, SegmentDataset, DistributedSampler | None]:
        """Loader of ``split``: this rank's part, random segments (train) or all segments."""
        tracks = self.tracks(split)
        ds = SegmentDataset(self.data.shards, tracks, self.classes, self.seg,
                            train=train, mean=self.mean, std=self.std, seed=self.config.seed,
                            crops=self.config.crops, targets=self.task.targets(tracks))
        common = {"num_workers": self.loader_workers, "pin_memory": self.device.type == "cuda"}
        if train:
            sampler = DistributedSampler(ds, num_replicas=self.spec.world_size, rank=self.spec.rank,
                                         shuffle=True, seed=self.config.seed, drop_last=False)
            loader = DataLoader(ds, batch_size=self.config.batch_size, sampler=sampler, **common)
            return loader, ds, sampler
        # evaluation: a disjoint slice per rank, no padding (results are gathered, not averaged)
        part = list(range(self.spec.rank, len(ds), self.spec.world_size))
        loader = DataLoader(ds, batch_size=2 * self.config.batch_size, sampler=part, **common)
        return loader, ds, None


@dataclass
class _Loop:
    """What the training loop steps: this rank's loaders, the optimiser, its learning-rate
    schedule and the mixed-precision gradient scaler."""

    train_loader: DataLoader
    train_set: SegmentDataset
    sampler: DistributedSampler
    val_loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


def epoch_steps(epochs: int, steps_per_epoch: int, max_steps: int | None) -> list[int]:
    """Training steps of each epoch of a run: ``epochs`` of ``steps_per_epoch``, or the first
    ``max_steps`` of them (the last epoch cut short, the later ones not run).

    >>> epoch_steps(3, 4, None), epoch_steps(3, 4, 6), epoch_steps(3, 4, 100)
    ([4, 4, 4], [4, 2], [4, 4, 4])
    """
    total = epochs * steps_per_epoch if max_steps is None else \
        min(epochs * steps_per_epoch, max_steps)
    return [min(steps_per_epoch, total - start) for start in range(0, total, steps_per_epoch)]


@dataclass
class _Plan:
    """What remains of the run: its epochs (:func:`epoch_steps` of ``steps_per_epoch``) from
    ``start`` (counted from 0), and the early-stopping state and metrics history carried over
    (from a checkpoint when resuming)."""

    start: int
    steps_per_epoch: int
    state: dict
    history: list[dict]


def train_one_epoch(run: _Run, loop: _Loop, epoch: int, steps_per_epoch: int,
                    steps: int | None = None) -> dict:
    """One pass over this rank's training clips (its first ``steps`` batches when given);
    returns the all-ranks loss and accuracy."""
    run.ddp.train()
    # loss sum, the training score's numerator and denominator (Task.hits), segments
    totals = torch.zeros(4, dtype=torch.float64, device=run.device)
    loader = loop.train_loader
    # On a GPU, batches are read in a thread while the GPU computes (see prefetch).
    batches = prefetch(loader) if run.device.type == "cuda" and not run.loader_workers else loader
    for index, (x, y, tid) in enumerate(batches):
        if index == steps:        # max_steps reached (every rank has as many batches)
            break
        x = x.to(run.device, non_blocking=True)
        y = y.to(run.device, non_blocking=True)
        step = Step(run.spec.rank, epoch, index, epoch * steps_per_epoch + index, steps_per_epoch,
                    run.model, run.ddp, loop.optimizer, x, y, tid)
        for cb in run.callbacks:
            cb.on_batch_start(step)
        target = y
        if run.augmentation.active:  # the study's recipe trains on the plain batch
            x, target = augment_batch(x, y, len(run.classes), run.augmentation,
                                      batch_generator(run.config.seed, epoch, index, run.spec.rank))
        with torch.autocast(run.device.type, dtype=torch.float16, enabled=run.amp):
            logits = run.ddp(x)
            loss = run.task.loss(logits, target)
        loop.optimizer.zero_grad(set_to_none=True)
        loop.scaler.scale(loss).backward()  # DDP all-reduces (averages) the gradients here
        for cb in run.callbacks:
            cb.on_after_backward(step)
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
        loop.scheduler.step()
        if run.ema is not None:
            run.ema.update_parameters(run.model)
        for cb in run.callbacks:
            cb.on_step_end(step)
        with torch.no_grad():
            n = torch.tensor(float(len(y)), device=run.device, dtype=torch.float64)
            totals += torch.stack([loss.detach().double() * n, *run.task.hits(logits, y), n])
    # DDP hands rank 0's buffers to the others before each forward, so after the last step every
    # rank's batch-norm statistics have moved with its own batch: give all ranks rank 0's, so
    # they evaluate (and keep as best) the very net rank 0 saves
    for buffer in run.model.buffers():
        dist.broadcast(buffer, src=0)
    if run.ema is not None:     # its averaged batch-norm statistics too
        for buffer in run.ema.buffers():
            dist.broadcast(buffer, src=0)
    dist.all_reduce(totals)
    loss_sum, hits, out_of, count = totals.tolist()
    return {"train_loss": loss_sum / max(count, 1),
            f"train_{run.task.score_name}": hits / max(out_of, 1), "train_segments": int(count)}


@torch.no_grad()
def evaluate(run: _Run, loader: DataLoader) -> dict:
    """Segment probabilities of this rank's slice, gathered from all ranks.

    Uses the bare module, not the DDP wrapper: ranks hold different numbers of evaluation
    batches, and DDP's forward would start collectives (buffer broadcast) they cannot match.
    """
    net = run.net.eval()
    tids, labels, probs, losses = [], [], [], []
    for x, y, tid in loader:
        x = x.to(run.device, non_blocking=True)
        with torch.autocast(run.device.type, dtype=torch.float16, enabled=run.amp):
            logits = net(x)
        logits = logits.float().cpu()
        losses.append(run.task.loss(logits, y, reduction="none").numpy())
        probs.append(run.task.probabilities(logits).numpy())
        tids.append(tid.numpy())
        labels.append(y.numpy())
    n_classes = len(run.classes)
    mine = {"track_id": np.concatenate(tids) if tids else np.zeros(0, np.int64),
            "label": np.concatenate(labels) if labels else np.zeros(
                (0, n_classes) if run.task.multilabel else 0,
                np.float32 if run.task.multilabel else np.int64),
            "probs": np.concatenate(probs) if probs else np.zeros((0, n_classes), np.float32),
            "loss": np.concatenate(losses) if losses else np.zeros(0, np.float32)}
    parts = gather_all(mine)
    return {k: np.concatenate([p[k] for p in parts]) for k in mine}


def _score(run: _Run, seg_out: dict) -> tuple[dict, pd.DataFrame]:
    score = score_segments_multilabel if run.task.multilabel else score_segments
    scores, tracks = score(seg_out["track_id"], seg_out["label"], seg_out["probs"])
    scores["loss"] = float(seg_out["loss"].mean()) if len(seg_out["loss"]) else float("nan")
    return scores, tracks


def _write_outputs_epoch(run: _Run, history: list[dict]) -> None:
    """metrics.csv and curves.png of the epochs so far (rank 0)."""
    from fmadask.report.curves import plot_curves

    df = pd.DataFrame(history)
    _atomic_write(run.out_dir / METRICS_FILE, lambda fh: fh.write(df.to_csv(index=False).encode()))
    plot_curves(df, run.out_dir / CURVES_FILE, title=f"{run.config.arch} on mel-spectrograms")


def train(run_dir: str | Path, config: TrainConfig, dist_spec: DistSpec | None = None,
          resume: bool = False, callbacks: Sequence[Callback] = (),
          storage_options: Mapping[str, Any] | None = None) -> dict:
    """Train a CNN on ``RUN_DIR/spectrograms`` as one rank of a DDP job, and score it.

    Every rank of the job calls this with the same ``run_dir`` (a folder all ranks see, or a
    URL in object storage) and ``config``. Outputs (rank 0) go to ``config.out_dir`` or
    ``RUN_DIR/cnn``: ``checkpoints/last.pt`` (every epoch) and ``best.pt``, ``metrics.csv``,
    ``curves.png``, ``model.pt`` + ``model.json``, ``predictions.parquet``,
    ``confusion_<split>.png`` and ``report.md``; a URL output folder gets them uploaded from a
    local temporary folder (:mod:`fmadask.dl.outputs`).

    Parameters
    ----------
    run_dir : str or Path
        Run directory holding ``spectrograms/``: a path, or a URL whose shards each host reads
        through its shard cache (``config.cache_dir``, ``config.cache_size``).
    config : TrainConfig
        Training parameters.
    dist_spec : DistSpec, optional
        This rank's place; default from torchrun's environment (or a lone rank).
    resume : bool
        Continue from ``checkpoints/last.pt`` when it exists: next epoch, same weights, optimiser,
        scheduler, scaler and RNG states.
    callbacks : sequence of Callback
        Hooks into this rank's training loop (see :class:`Callback`).
    storage_options : mapping, optional
        fsspec options of a URL run or output folder (never written anywhere).

    Returns
    -------
    dict
        ``rank``, ``world_size``, ``pid``, ``host``, ``device``, ``backend``, ``epochs`` (epochs
        this call ran, counted from 1), ``params_digest`` (SHA-1 of the final weights),
        ``callbacks`` (each callback's :meth:`Callback.state` by its name); on rank 0 also
        ``out_dir``, ``best_epoch``, ``stopped_early`` and ``scores`` per split.

    Raises
    ------
    RankFailure
        Wrapping whatever stopped this rank, after it left the process group; a user-fixable
        cause (:class:`fmadask.errors.FmadaskError`) rides along as ``user_error``.
    """
    spec = dist_spec or DistSpec.from_env()
    config.validate()
    try:
        device = select_device(config, spec.local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            backend_for(device, spec.local_world_size),
            init_method=f"tcp://{spec.master_addr}:{spec.master_port}", rank=spec.rank,
            world_size=spec.world_size, timeout=datetime.timedelta(seconds=config.dist_timeout_s))
        return _train(run_dir if storage.is_url(run_dir) else Path(run_dir), config, spec,
                      device, resume, tuple(callbacks), storage_options)
    except BaseException as exc:
        # a user-fixable cause (missing data, bad option) is shown as itself, not as a crash
        failure = RankFailure(spec.rank, socket.gethostname(), type(exc).__name__,
                              str(exc).strip().splitlines()[0] if str(exc).strip() else "",
                              time.time(), is_peer_failure(exc),
                              exc if isinstance(exc, FmadaskError) else None)
        # The traceback's frames hold the net, its optimiser state and the batch (GPU memory):
        # release them, the exception travels to the launcher without them. Then leave the
        # group. Peers blocked in a collective with this rank are not freed by that once DDP has
        # been built (see fmadask.dl.launch): the launcher (or torchrun's agent) ends them.
        traceback.clear_frames(exc.__traceback__)
        gc.collect()
        teardown(abort=True)
        raise failure from exc
    finally:
        teardown(abort=False)


def _augmentation(config: TrainConfig, std: float) -> Augmentation:
    """The training augmentation of ``config``, for inputs standardised by ``std`` dB."""
    return Augmentation(gain_db=config.gain_db, masks=config.masks, mixup=config.mixup,
                        label_smoothing=config.label_smoothing, db_per_unit=std)


def _train(run_dir: str | Path, config: TrainConfig, spec: DistSpec, device: torch.device,
           resume: bool, callbacks: tuple[Callback, ...],
           storage_options: Mapping[str, Any] | None) -> dict:
    location = out_location(run_dir, config.out_dir)
    with output_folder(location, storage_options, resume) as outputs:
        return _train_into(run_dir, config, spec, device, resume, callbacks, storage_options,
                           outputs)


def _train_into(run_dir: str | Path, config: TrainConfig, spec: DistSpec, device: torch.device,
                resume: bool, callbacks: tuple[Callback, ...],
                storage_options: Mapping[str, Any] | None, outputs: OutputFolder) -> dict:
    run, loop = _setup(run_dir, config, spec, device, callbacks, outputs, storage_options)
    plan = _plan(run, loop, resume)
    ran, best_weights = _fit(run, loop, plan)
    result = {"rank": spec.rank, "world_size": spec.world_size, "pid": os.getpid(),
              "host": socket.gethostname(), "device": str(device),
              "backend": dist.get_backend(), "epochs": ran,
              "params_digest": digest(run.model.parameters()),
              "callbacks": {cb.name: cb.state() for cb in callbacks}}
    # the final scores use the best weights: this call's, or those a previous call saved
    if best_weights is None:
        best_weights = load_checkpoint(run.out_dir / CHECKPOINTS / BEST_CHECKPOINT)["model"]
    run.net.load_state_dict(best_weights)
    scores, predictions = _final_scores(run)
    if run.is_main:
        scores = _write_final(run, plan.state, plan.history, scores, predictions)
        result.update({"out_dir": str(outputs.location), "best_epoch": plan.state["best_epoch"],
                       "stopped_early": plan.state["stopped"], "scores": scores})
    dist.barrier()  # no rank leaves (and tears the group down) before rank 0 has written
    return result


def _setup(run_dir: str | Path, config: TrainConfig, spec: DistSpec, device: torch.device,
           callbacks: tuple[Callback, ...], outputs: OutputFolder,
           storage_options: Mapping[str, Any] | None) -> tuple[_Run, _Loop]:
    """Open the data (a URL run folder's shards through the host's cache), build the net, its
    DDP wrapper, the loaders, optimiser and schedule."""
    task, data = open_task(config.target, open_spectrograms(run_dir, storage_options,
                                                            config.shard_cache()),
                           run_dir, storage_options)
    for split in ("training", "validation"):
        if task.usable(data.tracks(split)).empty:
            raise DataError(f"no {split} clips in {data.root}: the CNN needs training and "
                            "validation spectrograms")
    seg = segment_frames(config.segment_seconds, data.params)
    mean, std = normalisation(data, task.usable(data.tracks("training")), seed=config.seed)
    torch.manual_seed(config.seed)  # identical initial weights (DDP also broadcasts rank 0's)
    model = build_net(config.arch, len(task.classes), int(data.params["n_mels"]), seg,
                      config.width).to(device)
    ddp = DistributedDataParallel(model,
                                  device_ids=[device.index] if device.type == "cuda" else None)
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
           if config.ema else None)
    run = _Run(config, spec, device, data, outputs, task, seg, mean, std, model, ddp,
               amp=device.type == "cuda" and config.amp,
               augmentation=_augmentation(config, std),
               loader_workers=loader_workers(config.num_workers), callbacks=callbacks, ema=ema)
    train_loader, train_set, sampler = run.loader("training", train=True)
    optimizer = _make_optimizer(config, model.parameters())
    loop = _Loop(train_loader, train_set, sampler, run.loader("validation", train=False)[0],
                 optimizer, _make_scheduler(config, optimizer, sum(epoch_steps(
                     config.epochs, len(train_loader), config.max_steps))),
                 torch.amp.GradScaler(device.type, enabled=run.amp))
    return run, loop


def _plan(run: _Run, loop: _Loop, resume: bool) -> _Plan:
    """What remains to run: everything, or (``resume`` with a checkpoint) the epochs after the
    checkpoint's, with its weights, optimiser, scheduler, scaler and RNG states restored."""
    last = run.out_dir / CHECKPOINTS / LAST_CHECKPOINT
    shown = storage.redact(storage.join(run.outputs.location, CHECKPOINTS, LAST_CHECKPOINT))
    steps_per_epoch = len(loop.train_loader)
    if resume and last.is_file():
        ckpt = load_checkpoint(last)
        check_resume(ckpt, run.config, run.spec.world_size, last)
        run.model.load_state_dict(ckpt["model"])
        if run.ema is not None:
            run.ema.load_state_dict(ckpt["ema"])
        loop.optimizer.load_state_dict(ckpt["optimizer"])
        loop.scheduler.load_state_dict(ckpt["scheduler"])
        loop.scaler.load_state_dict(ckpt["scaler"])
        if ckpt["world_size"] == run.spec.world_size:
            set_rng_state(ckpt["rng"][run.spec.rank])
        if run.is_main:
            log.info("resuming from %s at epoch %d", shown, ckpt["epochs_done"] + 1)
        return _Plan(ckpt["epochs_done"], steps_per_epoch, ckpt["state"], ckpt["history"])
    if run.is_main:
        if resume:
            log.warning("no checkpoint at %s: starting from epoch 1", shown)
        fresh_start(run.out_dir)
    # epochs are counted from 1 in everything a user reads (metrics.csv, results, report)
    state = {"best_loss": float("inf"), "best_epoch": 0, "bad_epochs": 0, "stopped": False}
    return _Plan(0, steps_per_epoch, state, [])


def _fit(run: _Run, loop: _Loop, plan: _Plan) -> tuple[list[int], dict | None]:
    """Train and validate the epochs of ``plan`` until early stopping; checkpoint each (rank 0).

    Returns the epochs run (counted from 1) and the best weights among them (None when none of
    them beat a resumed run's best).
    """
    state, history = plan.state, plan.history
    ran = []
    best_weights = None  # every rank keeps its own copy (identical across ranks)
    steps = epoch_steps(run.config.epochs, plan.steps_per_epoch, run.config.max_steps)
    for epoch in range(plan.start, len(steps)):
        if state["stopped"]:
            break
        t0 = time.perf_counter()
        loop.sampler.set_epoch(epoch)
        loop.train_set.set_epoch(epoch)
        row = {"epoch": epoch + 1,
               **train_one_epoch(run, loop, epoch, plan.steps_per_epoch, steps[epoch])}
        train_s = time.perf_counter() - t0
        val, _ = _score(run, evaluate(run, loop.val_loader))
        row.update({"val_loss": val["loss"],
                    **{column: val[key] for column, key in run.task.epoch_columns.items()},
                    "lr": loop.optimizer.param_groups[0]["lr"], "train_seconds": train_s,
                    "segments_per_s": row["train_segments"] / train_s})
        history.append(row)
        ran.append(epoch + 1)
        if val["loss"] < state["best_loss"]:
            state.update(best_loss=val["loss"], best_epoch=epoch + 1, bad_epochs=0)
            best_weights = {k: v.detach().to("cpu", copy=True)
                            for k, v in run.net.state_dict().items()}
            if run.is_main:
                _atomic_write(run.out_dir / CHECKPOINTS / BEST_CHECKPOINT,
                              lambda fh: torch.save({"epoch": epoch + 1,
                                                     "model": run.net.state_dict()}, fh))
        else:
            state["bad_epochs"] += 1
        state["stopped"] = state["bad_epochs"] >= run.config.patience
        _checkpoint(run, loop, epoch + 1, state, history)
        for cb in run.callbacks:
            cb.on_epoch_end(row)
        if state["stopped"]:
            break
    return ran, best_weights


def _checkpoint(run: _Run, loop: _Loop, epochs_done: int, state: dict,
                history: list[dict]) -> None:
    """``checkpoints/last.pt`` with every rank's RNG states, metrics.csv and curves.png (written
    by rank 0), and the epoch's line in the log."""
    rngs = gather_all(rng_state())
    if not run.is_main:
        return
    ckpt = {"format": 1, "epochs_done": epochs_done, "config": dataclasses.asdict(run.config),
            "world_size": run.spec.world_size, "classes": run.classes, "seg": to_plain(run.seg),
            "norm": to_plain([run.mean, run.std]), "model": run.model.state_dict(),
            "optimizer": loop.optimizer.state_dict(), "scheduler": loop.scheduler.state_dict(),
            "scaler": loop.scaler.state_dict(), "rng": rngs, "state": to_plain(dict(state)),
            "history": to_plain(history)}
    if run.ema is not None:
        ckpt["ema"] = run.ema.state_dict()
    _atomic_write(run.out_dir / CHECKPOINTS / LAST_CHECKPOINT, lambda fh: torch.save(ckpt, fh))
    _write_outputs_epoch(run, history)
    run.outputs.publish_epoch()
    row, score = history[-1], run.task.score_name
    segments, *_, track = run.task.epoch_columns
    log.info("epoch %d: train loss %.4f %s %.3f, val loss %.4f %s %.3f (%s %.3f)",
             epochs_done, row["train_loss"], score, row[f"train_{score}"], row["val_loss"],
             score, row[segments], track[len("val_"):], row[track])


def _final_scores(run: _Run) -> tuple[dict, pd.DataFrame]:
    """Scores of the net as it is now on validation and test (those present), and the track
    predictions with their ``split``."""
    scores, predictions = {}, []
    for split in ("validation", "test"):
        if run.tracks(split).empty:
            continue
        sc, tracks = _score(run, evaluate(run, run.loader(split, train=False)[0]))
        scores[split] = sc
        tracks["split"] = split
        predictions.append(tracks)
    return scores, pd.concat(predictions)


def _write_final(run: _Run, state: dict, history: list[dict], scores: dict,
                 predictions: pd.DataFrame) -> dict:
    """model.pt/model.json, predictions.parquet, confusion matrices and report.md (rank 0); the
    final scores of each split."""
    from fmadask.dl.predict import save_model
    from fmadask.report.metrics import normalized_confusion
    from fmadask.report.plots import confusion_figure

    out = run.out_dir
    if run.task.multilabel:
        return _write_final_multilabel(run, state, history, predictions)
    save_model(out, run.net, arch=run.config.arch, width=run.config.width, classes=run.classes,
               params=run.data.params, segment_seconds=run.config.segment_seconds, seg=run.seg,
               norm=(run.mean, run.std),
               extra={"training": {"best_epoch": state["best_epoch"], "scores": scores}})
    preds = pd.DataFrame({
        "track_id": predictions.index.to_numpy(dtype=np.int64),
        "split": predictions["split"].to_numpy(),
        "genre_top": [run.classes[i] for i in predictions["label"]],
        "pred_vote": [run.classes[i] for i in predictions["vote"]],
        "pred_mean": [run.classes[i] for i in predictions["mean"]],
        "n_segments": predictions["n_segments"].to_numpy(dtype=np.int64)})
    probs = np.stack(predictions["probs"].to_numpy())
    for i, c in enumerate(run.classes):
        preds[f"p_{c}"] = probs[:, i]
    _atomic_write(out / PREDICTIONS_FILE, lambda fh: preds.to_parquet(fh, index=False))
    for split in scores:
        part = predictions[predictions["split"] == split]
        share = normalized_confusion(part["label"], part["mean"],
                                     labels=list(range(len(run.classes))))
        confusion_figure(share, run.classes, out / confusion_file(split),
                         title=f"{run.config.arch}, {split}, track level (mean probability)")
    _write_outputs_epoch(run, history)
    _atomic_write(out / REPORT_FILE,
                  lambda fh: fh.write(_report(run, state, scores).encode()))
    run.outputs.publish_final()
    return scores


def _write_final_multilabel(run: _Run, state: dict, history: list[dict],
                            predictions: pd.DataFrame) -> dict:
    """The multi-label run's model (with its thresholds, chosen on validation),
    predictions.parquet, per-label picture and report.md (rank 0); the final scores."""
    from fmadask.dl import multilabel
    from fmadask.dl.predict import save_model

    task, out = run.task, run.out_dir
    done = multilabel.finish(run.classes, list(task.labels), task.genres, predictions,
                             run.data.index)
    scores = {split: {**s, "n_tracks": done.evaluation.n_tracks[split]}
              for split, s in done.evaluation.scores.items()}
    save_model(out, run.net, arch=run.config.arch, width=run.config.width, classes=run.classes,
               params=run.data.params, segment_seconds=run.config.segment_seconds, seg=run.seg,
               norm=(run.mean, run.std),
               extra={"training": {"best_epoch": state["best_epoch"], "scores": scores},
                      **multilabel.card_fields(list(task.labels), task.genres, done)})
    _atomic_write(out / PREDICTIONS_FILE, lambda fh: done.predictions.to_parquet(fh, index=False))
    _write_outputs_epoch(run, history)
    section = multilabel.report_section(out, run.config.arch, done)
    _atomic_write(out / REPORT_FILE,
                  lambda fh: fh.write((_report(run, state, {}) + section).encode()))
    run.outputs.publish_final()
    return scores


def _report(run: _Run, state: dict, scores: dict) -> str:
    c = run.config
    smoothing = ("off (multi-label targets are not smoothed)" if run.task.multilabel
                 else f"{c.label_smoothing:g}")
    lines = [f"# CNN `{c.arch}` on mel-spectrograms"
             + (" (multi-label, `genres_all`)" if run.task.multilabel else ""), "",
             f"- segments of {c.segment_seconds:g} s ({run.seg} frames x "
             f"{run.data.params['n_mels']} mel bands), batch {c.batch_size} x "
             f"{run.spec.world_size} ranks, {c.optimizer} lr {c.lr:g} ({c.lr_schedule}), "
             f"device {run.device} ({dist.get_backend()}){' with AMP' if run.amp else ''}",
             f"- training augmentation: gain +-{c.gain_db:g} dB, {c.masks} frequency + "
             f"{c.masks} time masks, mixup {c.mixup:g}, label smoothing {smoothing} "
             "(none at evaluation)"
             + (f"; evaluated and saved: moving average of the weights (decay {c.ema:g})"
                if c.ema else ""),
             f"- best epoch {state['best_epoch']} (lowest validation loss)"
             f"{', stopped early' if state['stopped'] else ''}"
             f"{f', training stopped at {c.max_steps} steps' if c.max_steps else ''}", ""]
    if run.task.multilabel:     # the scores follow (fmadask.dl.multilabel.report_section)
        return "\n".join(lines + ["![curves](curves.png)", "", ""])
    lines += [markdown_table(pd.DataFrame([{"split": split, **s} for split, s in scores.items()]),
                            ["split", "segment_acc", "track_acc_vote", "track_acc_mean",
                             "track_f1_mean", "n_tracks"],
                            ["split", "segment acc", "track acc (vote)", "track acc (mean prob)",
                             "track F1 (mean prob)", "tracks"]),
             f"![curves]({CURVES_FILE})", ""]
    lines += [f"![confusion {split}]({confusion_file(split)})" for split in scores]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ torchrun entry


def main(argv: list[str] | None = None) -> int:
    """``python -m fmadask.dl.trainer RUN_DIR [options]``, one rank per process (torchrun)."""
    parser = argparse.ArgumentParser(prog="python -m fmadask.dl.trainer",
                                     description="Train a CNN on RUN_DIR/spectrograms as one rank "
                                                 "of a DDP job (torchrun sets the rank variables).")
    parser.add_argument("run_dir", metavar="RUN_DIR")
    add_config_arguments(parser)
    parser.add_argument("--num-workers", dest="num_workers", type=int, default=2,
                        help="DataLoader processes per rank (default 2)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        resolve_options(args)
        result = train(args.run_dir, TrainConfig(**config_options(args)), resume=args.resume)
    except ConfigError as exc:
        print(f"fmadask: {exc}", file=sys.stderr)
        return 2
    except RankFailure as exc:
        print(f"fmadask: {exc.user_error if exc.user_error is not None else exc}",
              file=sys.stderr)
        return 2
    if result["rank"] == 0:
        print(json.dumps({k: result[k] for k in ("out_dir", "best_epoch", "scores")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
