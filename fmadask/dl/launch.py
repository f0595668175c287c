"""Run the DDP trainer on Dask workers: one rank per worker, torchrun's role played by Dask.

``run_cnn`` picks ``ranks`` workers (GPU workers on CUDA), asks rank 0's worker for a
free port, and submits :func:`fmadask.dl.trainer.train` to each worker, pinned there
(``workers=[addr], allow_other_workers=False``), with the rendezvous ``tcp://<rank 0 host>:<port>``
and the world size. It then watches the ranks: when one fails (or its worker leaves the cluster),
the job is torn down by ending the worker processes of all its ranks (their nannies start fresh
ones, as after any worker death), and the caller gets one error naming the rank and the cause. A
user-fixable error that every rank raised before training (missing data, an incompatible
checkpoint) is raised as itself, and no worker is touched.

Why end the processes rather than let the other ranks fail by themselves: a healthy rank waits in a
collective (gloo/NCCL, in C++) for the failed one and cannot be interrupted from Python; it would
only fail at the process group timeout. Tearing the failed rank's group down does not help with
DDP: with torch 2.13, once a ``DistributedDataParallel`` has been built on a gloo group,
``destroy_process_group`` no longer closes its connections (something in C++ keeps the group
alive), so the peers are never told. Ending the processes closes every connection, frees the
memory and leaves no thread behind.

The run directory is a path every worker sees (a shared file system), or a folder in object
storage (``s3://bucket/runs/r1``, with ``storage_options`` handed to the ranks as task arguments,
never printed or written): each host then reads the spectrogram shards through its shard cache
(:mod:`fmadask.shardcache`), and rank 0 writes ``RUN_DIR/cnn`` into a local folder whose files it
uploads (:mod:`fmadask.dl.outputs`); the run folder's lock is then a conditional PUT.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import os
import pickle
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cloudpickle
import pandas as pd
from distributed import Client, Future, wait
from distributed.comm import get_address_host

from fmadask import storage
from fmadask.cluster import gpu_workers, workers_info
from fmadask.dl.dataset import open_spectrograms
from fmadask.dl.outputs import (fetch_checkpoints, out_location,
                                remove_remote_outputs)
from fmadask.dl.callbacks import Callback
from fmadask.dl.checkpoint import check_resume, fresh_start, load_checkpoint
from fmadask.dl.ranks import DistSpec, RankFailure, free_port
from fmadask.dl.config import TrainConfig
from fmadask.dl.trainer import train
from fmadask.errors import ClusterError, ConfigError, FmadaskError, WorkersLeft
from fmadask.lock import hold
from fmadask.logs import show_progress
from fmadask.options import check, setting
from fmadask.runfolder import CHECKPOINTS, LAST_CHECKPOINT, METRICS_FILE, REPORT_FILE

log = logging.getLogger(__name__)

#: Seconds between checks of the ranks (and of new epochs in metrics.csv).
POLL_S = 1.0


class TrainingError(ClusterError):
    """A rank of a CNN training job failed; the other ranks were stopped."""




#: How long to wait for the workers ``--ranks`` needs: clusters grow (SLURM jobs starting, a
#: nanny restarting a worker that died) and a short wait beats failing the job.
WAIT_FOR_WORKERS_S = 60
#: ... and after a worker left mid-training: its replacement may be a new SLURM job in a queue.
RESTART_WAIT_S = 600


def pick_workers(client: Client, ranks: int | None, gpu: bool,
                 wait_s: float = WAIT_FOR_WORKERS_S) -> list[str]:
    """Addresses of the workers that will hold ranks 0..ranks-1 (sorted, so rank 0 is stable).

    Waits up to ``wait_s`` seconds for ``ranks`` workers to be there.

    Raises
    ------
    ClusterError
        When the cluster has fewer (GPU) workers than ``ranks``.
    """
    if ranks:
        try:
            client.wait_for_workers(ranks, timeout=wait_s)
        except TimeoutError:
            pass                        # reported below with the count there is
    workers = sorted(workers_info(client))
    if gpu:
        workers = gpu_workers(client, workers)
    kind = "GPU workers" if gpu else "workers"
    if not workers:
        raise ClusterError(f"the Dask cluster has no {kind}: start some, "
                           f"{'or train on the CPU' if gpu else 'or check the scheduler address'}")
    if ranks is None:
        ranks = len(workers)
    check("cnn.ranks", ranks)
    if ranks > len(workers):
        raise ClusterError(f"{ranks} ranks asked for but the cluster has {len(workers)} {kind}: "
                           f"start more workers or set {setting('cnn.ranks')} to {len(workers)}")
    return workers[:ranks]


def rank_specs(workers: list[str], port: int) -> list[DistSpec]:
    """The DistSpec of each rank: rendezvous at rank 0's host, local rank = index on its host."""
    hosts = [get_address_host(w) for w in workers]
    per_host = Counter(hosts)
    seen: Counter[str] = Counter()
    specs = []
    for rank, host in enumerate(hosts):
        specs.append(DistSpec(rank=rank, world_size=len(workers), local_rank=seen[host],
                              master_addr=hosts[0], master_port=port,
                              local_world_size=per_host[host]))
        seen[host] += 1
    return specs


def check_run_dir(run_dir: str | Path) -> None:
    """Refuse, in one line and before a cluster starts, a run folder the cnn stage cannot use:
    a URL whose fsspec driver is not installed, or a read-only one (``https://``), or a local
    folder that cannot be written (a read-only file system): the stage takes the run folder's
    lock and writes ``RUN_DIR/cnn`` (or ``--out``, checked the same way) there."""
    from fmadask.atomic import check_writable

    storage.require_driver(run_dir)
    if storage.is_read_only(run_dir):
        raise ConfigError(f"{storage.redact(run_dir)}: this URL is read-only, and the cnn "
                          "stage writes RUN_DIR/cnn and the run folder's lock: copy the run "
                          "folder to a bucket (s3://, gs://) or a disk the workers share")
    local = storage.local_path(run_dir)
    if local is not None:
        check_writable(local)


def run_cnn(run_dir: str | Path, config: TrainConfig | None = None,
            client: Client | None = None, *, ranks: int | None = None, resume: bool = False,
            progress: bool = True, callbacks: Sequence[Callback] = (),
            storage_options: Mapping[str, Any] | None = None) -> dict:
    """Train a CNN on ``RUN_DIR/spectrograms`` with one DDP rank per Dask worker.

    Parameters
    ----------
    run_dir : str or Path
        Run directory with ``spectrograms/``: on a file system all workers see, or a URL
        (``s3://bucket/runs/r1``) whose shards each host reads through its shard cache.
    config : TrainConfig, optional
        The training run (default ``TrainConfig()``): the net (``arch``), ``epochs``, the
        optimiser, schedule and augmentation, the output folder (``out_dir``, default
        ``RUN_DIR/cnn``), the shard cache ...; see :class:`~fmadask.options.CnnOptions` for each.
        Its ``device``: 'cuda' trains on CUDA with NCCL and mixed precision, only workers with
        a GPU holding ranks; 'auto' does so when the cluster has GPU workers; 'cpu' never.
    client : distributed.Client, optional
        Cluster to run on (default: a local cluster of ``ranks`` or 2 worker processes).
    ranks : int, optional
        Number of ranks (default: one per worker, or per GPU worker on CUDA).
    resume : bool
        Continue from ``checkpoints/last.pt`` of the output folder.
    progress : bool
        Report the placement of the ranks and each finished epoch (read from metrics.csv) as
        INFO lines of this module's logger (``fmadask cnn`` shows them on stderr).
    callbacks : sequence of fmadask.dl.callbacks.Callback
        Hooks into every rank's training loop; each rank runs a copy and reports its state in
        its result (``ranks[i]["callbacks"]``).
    storage_options : mapping, optional
        fsspec options of a URL run or output folder (credentials, endpoint): they travel to
        the ranks as task arguments and are never printed or written.

    Returns
    -------
    dict
        Rank 0's result (``out_dir``, ``best_epoch``, ``stopped_early``, ``scores`` per split
        ...) with ``ranks``: every rank's result, in rank order.

    Raises
    ------
    TrainingError
        When a rank failed (or its worker left); names the rank, its host and the cause.
    DataError, ConfigError
        For missing spectrograms or invalid options (raised before anything is submitted).
    """
    config = config or TrainConfig()
    config.validate()
    check_run_dir(run_dir)
    if config.out_dir:
        check_run_dir(config.out_dir)
    run_dir = storage.resolve(run_dir)
    # missing or unfinished data fails here, in one line
    open_spectrograms(run_dir, storage_options, config.shard_cache())
    if progress:
        show_progress(defer_to_root=True)
    # one writer per run folder and per output folder (two runs' cnn with one --out would
    # remove and overwrite each other's results)
    with hold([run_dir, out_location(run_dir, config.out_dir)], "fmadask cnn", storage_options):
        if client is None:
            from fmadask.cluster import get_client

            with get_client(workers=ranks, quiet=not progress) as local:
                return _launch(local, run_dir, on_device(config, local), ranks, resume,
                               progress, tuple(callbacks), storage_options)
        return _launch(client, run_dir, on_device(config, client), ranks, resume, progress,
                       tuple(callbacks), storage_options)


def on_device(config: TrainConfig, client: Client) -> TrainConfig:
    """``config`` with its device chosen: 'auto' becomes 'cuda' when the cluster has GPU
    workers, else 'cpu'."""
    if config.device != "auto":
        return config
    return dataclasses.replace(config, device="cuda" if gpu_workers(client) else "cpu")


def _check_resume(out_dir: str | Path, config: TrainConfig, world_size: int,
                  storage_options: Mapping[str, Any] | None) -> None:
    """Refuse an incompatible resume here, before any rank starts (a checkpoint in object
    storage is downloaded and verified first)."""
    if not storage.is_remote(out_dir):
        last = Path(out_dir) / CHECKPOINTS / LAST_CHECKPOINT
        if last.is_file():
            check_resume(load_checkpoint(last), config, world_size, last)
        return
    with tempfile.TemporaryDirectory(prefix="fmadask-cnn-") as tmp:
        if fetch_checkpoints(str(out_dir), Path(tmp), storage_options):
            check_resume(load_checkpoint(Path(tmp) / CHECKPOINTS / LAST_CHECKPOINT), config,
                         world_size, storage.redact(storage.join(out_dir, CHECKPOINTS,
                                                                  LAST_CHECKPOINT)))


def _launch(client: Client, run_dir: str | Path, config: TrainConfig, ranks: int | None,
            resume: bool, progress: bool, callbacks: tuple[Callback, ...],
            storage_options: Mapping[str, Any] | None) -> dict:
    """Train; when a rank's worker leaves the cluster, go on from the last checkpoint on the
    workers there are then (clusters replace workers: a SLURM job past its lifetime, a nanny),
    at most ``config.restarts`` times in a row without a new epoch."""
    metrics = _Metrics(storage.join(out_location(run_dir, config.out_dir), METRICS_FILE),
                       storage_options)
    failed = 0
    while True:
        before = _epochs_done(metrics) if resume else 0
        try:
            return _launch_once(client, run_dir, config, ranks, resume, progress, callbacks,
                                storage_options, wait_s=RESTART_WAIT_S if failed else
                                WAIT_FOR_WORKERS_S)
        except WorkersLeft as exc:
            failed = 1 if _epochs_done(metrics) > before else failed + 1
            if failed > config.restarts:
                raise TrainingError(f"{exc} (resumed {config.restarts} time(s) in a row without "
                                    "finishing an epoch)") from None
            log.warning("%s: resuming from the last checkpoint on the workers there are now "
                        "(restart %d of at most %d in a row)", str(exc).split(";")[0], failed,
                        config.restarts)
            resume = True


def _launch_once(client: Client, run_dir: str | Path, config: TrainConfig, ranks: int | None,
                 resume: bool, progress: bool, callbacks: tuple[Callback, ...],
                 storage_options: Mapping[str, Any] | None, wait_s: float) -> dict:
    workers = pick_workers(client, ranks, config.device == "cuda", wait_s)
    out_dir = out_location(run_dir, config.out_dir)
    if not resume:  # a fresh run: do not show (or resume from) an older run's epochs
        if storage.is_remote(out_dir):
            remove_remote_outputs(str(out_dir), storage_options)
        else:
            fresh_start(out_dir)
    else:
        _check_resume(out_dir, config, len(workers), storage_options)
    port = client.run(free_port, workers=[workers[0]])[workers[0]]
    specs = rank_specs(workers, port)
    token = uuid.uuid4().hex[:8]
    shipped = cloudpickle.dumps(callbacks)
    futures = [client.submit(_train_rank, str(run_dir), config, spec, resume, shipped,
                             storage_options, key=f"cnn-rank{spec.rank}-{token}", workers=[w],
                             allow_other_workers=False, pure=False, retries=0)
               for spec, w in zip(specs, workers)]
    if progress:
        log.info("CNN %s: %d rank(s) on %s, rendezvous tcp://%s:%d", config.arch, len(workers),
                 ", ".join(workers), specs[0].master_addr, port)
    metrics = _Metrics(storage.join(out_dir, METRICS_FILE), storage_options)
    try:
        failure = _watch(client, futures, workers, metrics, config.epochs,
                         progress, logged=_epochs_done(metrics) if resume else 0)
    except BaseException:  # interrupted (Ctrl-C) or the watch itself broke: stop the ranks
        _stop(client, futures, workers)
        raise
    if failure is not None:
        stuck = any(f.status == "pending" for f in futures)
        if stuck or isinstance(failure, (TrainingError, WorkersLeft)):
            _stop(client, futures, workers)
        raise failure
    results = [f.result() for f in futures]
    return {**results[0], "ranks": results}


def _train_rank(run_dir: str, config: TrainConfig, spec: DistSpec, resume: bool,
                callbacks: bytes, storage_options: Mapping[str, Any] | None) -> dict:
    """:func:`~fmadask.dl.trainer.train` on a worker, with the callbacks as cloudpickle wrote
    them.

    Dask pickles a task's arguments by reference unless the task's function itself needs
    cloudpickle, so a callback class the workers cannot import (defined in a notebook, a script or
    a module registered with ``cloudpickle.register_pickle_by_value``) would not reach them;
    cloudpickle writes such classes by value.
    """
    return train(run_dir, config, spec, resume, pickle.loads(callbacks), storage_options)


def _watch(client: Client, futures: list[Future], workers: list[str], metrics: _Metrics,
           epochs: int, progress: bool, logged: int) -> FmadaskError | None:
    """Wait for all ranks; return the error to raise when one fails or its worker leaves."""
    while True:
        pending = [f for f in futures if f.status == "pending"]
        if pending:
            try:
                wait(pending, timeout=POLL_S, return_when="FIRST_COMPLETED")
            except TimeoutError:
                pass
        if progress:
            logged = _log_epochs(metrics, logged, epochs)
        if any(f.status == "error" for f in futures):
            return _failure(client, futures, workers)
        if all(f.status == "finished" for f in futures):
            return None
        left = _left_worker(client, futures, workers, wait_s=0)
        if left is not None:
            return left


def _failure(client: Client, futures: list[Future], workers: list[str],
             settle_s: float = 2.0) -> FmadaskError:
    """The error naming the rank that failed first (not one that failed because it did); a
    :class:`WorkersLeft` when the ranks only failed because a rank's worker left the cluster (its
    peers see a connection reset before the scheduler sees the worker go)."""
    # let the other ranks' consequential errors arrive, so the cause can be told from them
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline and any(f.status == "pending" for f in futures):
        time.sleep(0.1)
    failures: list[tuple[int, BaseException]] = [
        (rank, f.exception()) for rank, f in enumerate(futures) if f.status == "error"]
    rank_failures = [(r, e) for r, e in failures if isinstance(e, RankFailure)]
    if rank_failures and all(e.peer for _, e in rank_failures):
        left = _left_worker(client, futures, workers, settle_s)
        if left is not None:
            return left
    if rank_failures:
        # a rank's own error beats a communication error; among equals, the earliest
        rank, exc = min(rank_failures, key=lambda re: (re[1].peer, re[1].when))
        if exc.user_error is not None:
            return exc.user_error
        return TrainingError(f"CNN training failed on rank {rank} of {len(futures)} "
                             f"({workers[rank]}): {exc.exc_type}: {exc.message}; the other ranks "
                             f"were stopped. Fix the cause and re-run with "
                             f"{setting('cnn.resume')} to continue from the last checkpoint")
    rank, exc = failures[0]
    return TrainingError(f"CNN training failed on rank {rank} ({workers[rank]}): "
                         f"{type(exc).__name__}: {exc}; the other ranks were stopped")


def _left_worker(client: Client, futures: list[Future], workers: list[str],
                 wait_s: float) -> WorkersLeft | None:
    """The WorkersLeft of the first rank whose worker is gone from the cluster (waiting up to
    ``wait_s`` for the scheduler to notice), or None."""
    deadline = time.monotonic() + wait_s
    while True:
        alive = set(workers_info(client))
        for rank, (f, w) in enumerate(zip(futures, workers)):
            if w not in alive and f.status != "finished":
                return WorkersLeft(f"CNN training failed: the worker {w} of rank {rank} left "
                                   "the cluster (killed, out of memory, lost or past its "
                                   "lifetime); the other ranks were stopped. Re-run with "
                                   f"{setting('cnn.resume')} to continue from the last "
                                   "checkpoint")
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


def _exit_process() -> None:
    os._exit(70)  # EX_SOFTWARE; no clean-up: a thread may be stuck in a collective


def _stop(client: Client, futures: list[Future], workers: list[str],
          timeout_s: float = 120.0) -> None:
    """End every rank of the job: cancel the tasks and end the ranks' worker processes.

    The processes are ended abruptly (``os._exit``), as an out-of-memory kill would: a graceful
    close waits for the task thread, which may be stuck in a collective. Their nannies start
    fresh worker processes, as after any worker death; this waits (up to ``timeout_s``) until the
    cluster has as many workers as before. Workers without a nanny are not ended (nothing would
    restart them): their ranks stop at the process group timeout.
    """
    client.cancel(futures)
    info = workers_info(client)
    targets = [w for w in workers if w in info and info[w].get("nanny")]
    orphans = [w for w in workers if w in info and not info[w].get("nanny")]
    if orphans:
        log.warning("fmadask: workers %s have no nanny and cannot be restarted; their ranks "
                    "stop at the process group timeout", orphans)
    if not targets:
        return
    client.run(_exit_process, workers=targets, on_error="ignore")  # the reply never comes
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = set(workers_info(client))
        if len(current) >= len(info) and not current & set(targets):
            return
        time.sleep(0.5)
    log.warning("fmadask: the restarted workers of %s have not come back within %.0f s; check "
                "the cluster", targets, timeout_s)


class _Metrics:
    """The run's metrics.csv, on disk or in object storage, as the launcher reads it."""

    def __init__(self, location: str | Path, storage_options: Mapping[str, Any] | None) -> None:
        self.location, self.storage_options = location, storage_options

    def read(self) -> pd.DataFrame:
        """The table (OSError or ValueError while there is none yet)."""
        if not storage.is_remote(self.location):
            return pd.read_csv(self.location)
        try:
            data = storage.read_bytes(self.location, self.storage_options)
        except FmadaskError as exc:    # a store that does not answer now: asked again later
            raise OSError(str(exc)) from None
        return pd.read_csv(io.BytesIO(data))


def _epochs_done(metrics: _Metrics) -> int:
    try:
        return len(metrics.read())
    except (OSError, ValueError):
        return 0


def _log_epochs(metrics: _Metrics, logged: int, epochs: int) -> int:
    """Log epochs of metrics.csv after the first ``logged``; return how many are logged now."""
    try:
        df = metrics.read()
    except (OSError, ValueError):  # not written yet
        return logged
    if len(df) < logged:  # a fresh run replaced an older metrics.csv
        logged = 0
    for row in df.iloc[logged:].itertuples(index=False):
        log.info("epoch %d/%d: train loss %.4f acc %.3f | val loss %.4f acc %.3f, tracks vote "
                 "%.3f mean %.3f | %.0f segments/s", row.epoch, epochs, row.train_loss,
                 row.train_acc, row.val_loss, row.val_acc, row.val_track_acc_vote,
                 row.val_track_acc_mean, row.segments_per_s)
    return len(df)


def format_result(result: dict) -> str:
    """A few lines summarising :func:`run_cnn`'s result: where the outputs are and the scores."""
    early = " (stopped early)" if result["stopped_early"] else ""
    lines = [f"CNN trained: best epoch {result['best_epoch']}{early}; "
             f"outputs in {storage.redact(result['out_dir'])}"]
    for split, s in result["scores"].items():
        lines.append(f"  {split:<10} segment acc {s['segment_acc']:.3f} | track acc: vote "
                     f"{s['track_acc_vote']:.3f}, mean prob {s['track_acc_mean']:.3f} "
                     f"({s['n_tracks']} tracks)")
    lines.append(f"  report: {storage.redact(storage.join(result['out_dir'], REPORT_FILE))}")
    return "\n".join(lines)
