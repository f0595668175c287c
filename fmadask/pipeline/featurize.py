"""The featurize job: a Dask bag of tracks, one task per partition, writing Parquet and npy shards.

Each partition task decodes each of its tracks once, computes the 518 FMA features and/or the
log-mel spectrogram, and writes the partition's files (see :mod:`fmadask.runfolder`), the
errors file last. A bad track becomes an errors row and never stops the job.

Resuming and retries
    The partition -> track assignment is fixed by the sorted track ids and the partition size,
    and recorded in ``featurize.json`` with the parameters. A re-run with the same parameters
    skips complete partitions (their errors file exists) and computes the rest; because every
    partition's output depends only on its tracks and the parameters, the result is identical to
    a clean run. A re-run with other parameters is refused (``overwrite=True`` starts afresh).
    A task is idempotent: when a worker dies (SIGKILL, out of memory), Dask re-runs its
    partition elsewhere; the dead worker's half-written files have private temporary names
    (:mod:`fmadask.atomic`), are never read, and are removed by the next run.

Scale and worker memory
    Measured on 44.1 kHz mp3: a worker process holds about 330 MiB once librosa is imported and
    warm; featurizing one track adds about 1.6 MiB per second of audio at its peak (the decoded
    signal, its STFT and CQT and what is derived from them: +48 MiB for a 30 s clip, +0.5 GiB
    for 5 minutes, +1.9 GiB for 20 minutes). Partition state is small: 2 KiB of features per
    track, and spectrogram rows (128 x 1292 float16 = 323 KiB per track) go to a memory-mapped
    temporary ``.npy`` file as they are made, not held in memory. So memory per worker is
    bounded by the longest track, not by the partition size: about
    ``0.4 GiB + 1.6 MiB x seconds`` (:func:`worker_memory_needed`). FMA small/medium/large
    (30 s clips): 1 GiB per worker is plenty. FMA full has tracks of hours: ``max_seconds``
    (default :data:`DEFAULT_MAX_SECONDS`, 20 minutes, 2.3 GiB) refuses longer tracks up front,
    from the file's header, with an errors row ``too_long``; give workers a Dask memory limit of
    at least 1.25x the estimate (the nanny restarts a worker at 95 % of its limit). The job
    warns when the workers' limits are below it.
    Partition size sets the task length (64 clips of 30 s: 10-30 s of work on one core), the
    number of files (FMA large: 106,574 tracks -> 1,666 partitions, FMA small 125), the work
    lost when a worker dies, and the tail at the end of the job (at most one partition per
    worker); it does not change the memory bound. Keep at least ~4 partitions per worker.

Plan and execution
    :func:`run_featurize` is :func:`plan_featurize` (pure: the job's parameters and record, which
    partitions remain and which are complete, what an overwrite removes; from a
    :class:`FeaturizeConfig`, the track table and :func:`read_featurize_state`) followed by
    :func:`execute_featurize` (the lock, the writes, the cluster's work, the summary record).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from fmadask.cluster import (WORKER_TIMEOUT_S, gpu_workers, lost_scheduler_error, scheduler_lost,
                             workers_info)
from fmadask.errors import ConfigError, DataError, FmadaskError
from fmadask.atomic import remove_temp_files
from fmadask.lock import RunLock
from fmadask import storage
from fmadask.storage import StoreUnavailable, redact, resolve
from fmadask.options import (FeaturizeOptions, OptionError, default, option_values, same_as,
                             setting)
from fmadask.pipeline.partition import (WARM_UP_PLUGIN, JobParams, Track, WarmUp,
                                        featurize_partition)
from fmadask.fma.tracks import genre_rows, label_rows, tracks_digest
from fmadask.pipeline.summary import print_summary, summarize
from fmadask.records import describe_change, package_versions
from fmadask.runfolder import (FEATURES_DIR, GENRES_FILE, INDEX_DIR, JOB_FILE, LABELS_FILE,
                               MAX_PARTITIONS, MEL_PARAMS_FILE, OUTPUTS, PART_DIRS, RECORDS_DIR,
                               SPECTROGRAMS_DIR, ERRORS_DIR, PartitionFiles, complete_records,
                               foreign_entries, read_job, write_json)
from fmadask.runlabels import write_labels

if TYPE_CHECKING:
    import pandas as pd
    from distributed import Client

    from fmadask.features import MelParams

logger = logging.getLogger(__name__)

#: Tracks per partition: ~15-30 s of work per task on 30 s clips, 1,666 partitions for FMA large.
DEFAULT_PARTITION_SIZE = default("featurize.partition_size")
#: Longest track featurized, in seconds (FMA's clips are 30 s; FMA full has tracks of hours).
DEFAULT_MAX_SECONDS = default("featurize.max_seconds")
#: Measured memory of a warm worker process, and the peak added per second of 44.1 kHz audio.
WORKER_BASE_MIB = 400.0
MIB_PER_AUDIO_SECOND = 1.6
#: Length of FMA's clips (subsets small, medium, large); ``full`` has untrimmed tracks.
CLIP_SECONDS = 30.0
#: Headroom over the estimate: Dask's nanny restarts a worker at 95 % of its memory limit.
MEMORY_HEADROOM = 1.25


# ------------------------------------------------------------------- the job: config and plan


@dataclass(frozen=True, kw_only=True)
class FeaturizeConfig(FeaturizeOptions):
    """The settings of a featurize job: the options of
    :class:`~fmadask.options.FeaturizeOptions` (defaults, rules and help there) and the data
    and output options it reads, validated when made (the parameters of :func:`run_featurize`).

    The job's values are kept as it uses them: ``sr`` an int, or None for each file's native
    rate (option 'native'); ``max_seconds`` None for no limit ('none'); ``what`` a tuple in
    canonical order (features before spectrograms).
    """

    subset: str = same_as("data.subset")
    split: str = same_as("data.split")
    seed: int = same_as("data.seed")
    target: str = same_as("data.target")
    overwrite: bool = same_as("output.overwrite")

    def __post_init__(self) -> None:
        unset = {"sr": "native", "max_seconds": "none"}     # None: the option's word
        for name, word in unset.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, word)
        object.__setattr__(self, "what", list(self.what))
        super().__post_init__()
        if not self.what:
            raise OptionError("featurize.what", "is empty: choose one or both of "
                              + ", ".join(OUTPUTS))
        for name, word in unset.items():
            if getattr(self, name) == word:
                object.__setattr__(self, name, None)
        object.__setattr__(self, "sr", None if self.sr is None else int(self.sr))
        object.__setattr__(self, "what", tuple(w for w in OUTPUTS if w in self.what))

    @classmethod
    def of(cls, options: FeaturizeOptions, **others: Any) -> FeaturizeConfig:
        """The config of a job with the stage's ``options`` (a job spec's ``[featurize]``, the
        command line's) and the ``others`` (``subset``, ``split``, ``seed``, ``target``,
        ``overwrite``)."""
        return cls(**option_values(options, FeaturizeOptions), **others)

    @property
    def job(self) -> JobParams:
        """What each partition task computes."""
        from fmadask.features import MelParams

        mel = MelParams() if "spectrograms" in self.what else None
        return JobParams(sr=self.sr, what=self.what, max_seconds=self.max_seconds, mel=mel,
                         mel_device=self.mel_device if mel else "cpu")


#: Packages whose versions featurize.json records (they decide the numbers).
VERSIONED = ("fmadask", "librosa", "numpy", "scipy", "soundfile", "soxr", "dask", "distributed",
             "pyarrow")


def run_folder(out: str | Path) -> str | Path:
    """The run folder ``out`` as the job uses it: a URL string, or a local Path (``file://``
    URLs included)."""
    return storage.location(out)


def featurize_record(config: FeaturizeConfig, table: pd.DataFrame,
                     data_dir: str | Path) -> dict:
    """The ``featurize.json`` of a job before it runs: parameters, data folder, partition plan
    and package versions (``decoders`` and ``summary`` are filled in by the run).

    Parameters
    ----------
    config : FeaturizeConfig
    table : pandas.DataFrame
        The selected tracks (:func:`fmadask.fma.tracks.track_table`): indexed by track id,
        sorted, with ``path``, ``genre_top`` and ``split``.
    data_dir : str or Path
        The data folder, recorded absolute and without credentials.

    Raises
    ------
    DataError
        No track was selected.
    OptionError
        The partition size makes more partitions than file names allow.
    """
    if table.empty:
        what = "a top-level genre" if config.target == "genre_top" else "any genre"
        raise DataError(f"{redact(data_dir)}: no track of subset {config.subset!r} has {what}: "
                        f"check the data folder and {setting('data.subset')}")
    size = config.partition_size
    n_partitions = max(1, math.ceil(len(table) / size))
    if n_partitions > MAX_PARTITIONS:
        raise OptionError("featurize.partition_size",
                          f"{{option}} {size} makes {n_partitions} partitions: use at "
                          f"least {math.ceil(len(table) / MAX_PARTITIONS)}")
    job = config.job
    params = {
        "subset": config.subset, "split": config.split,
        "seed": config.seed if config.split == "stratified" else None,
        "sr": config.sr, "what": list(config.what), "partition_size": int(size),
        "max_seconds": config.max_seconds, "fma_compat": job.fma_compat,
        "mel": asdict(job.mel) if job.mel else None,
        "mel_device": job.mel_device if job.mel else None,
        "tracks_sha256": tracks_digest(table, config.target),
        # Recorded for the multi-label target only: a genre_top run's record is unchanged.
        **({"target": config.target} if config.target != "genre_top" else {})}
    ids = table.index.to_numpy()
    return {
        "params": json.loads(json.dumps(params)),
        "data_dir": redact(resolve(data_dir)),
        "plan": {"tracks": len(table), "partitions": n_partitions,
                 "first_track_ids": [int(t) for t in ids[::size]]},
        "versions": package_versions(VERSIONED), "decoders": None, "summary": None}


@dataclass(frozen=True)
class FeaturizeState:
    """What a run folder holds, as far as planning a featurize job in it needs
    (:func:`read_featurize_state`)."""

    #: The folder's ``featurize.json``; None when there is none (or it is overwritten).
    job: dict | None = None
    #: Part files lie in the output folders (without a ``featurize.json``).
    part_files: bool = False
    #: Names in the folder when it is neither empty nor a run folder.
    foreign: tuple[str, ...] = ()
    #: Partitions complete for the planned job: files match their records, checksums included.
    complete: tuple[int, ...] = ()
    #: Their completion records, by partition, as read (None: not read).
    records: Mapping[int, dict] | None = None
    #: Files that earlier featurize runs wrote (names relative to the folder): what an
    #: overwrite deletes.
    written: tuple[str, ...] = ()


def read_featurize_state(run_dir: str | Path, record: Mapping[str, Any], overwrite: bool,
                         storage_options: Mapping[str, Any] | None = None) -> FeaturizeState:
    """Read what :func:`plan_featurize` needs to know of ``run_dir``.

    Only what can matter is read: with ``overwrite``, the files earlier runs wrote; else the
    folder's ``featurize.json`` and, when its parameters are ``record``'s, which partitions are
    complete (checksums of the files whose tag, on disk their times and in a bucket their
    entity tag, changed since their record: a run with other parameters is refused without
    them).

    Parameters
    ----------
    run_dir : str or Path
        The run folder (:func:`run_folder`); read under its lock for a plan that holds.
    record : mapping
        The planned job's :func:`featurize_record`.
    overwrite : bool
        Whether the job starts afresh.
    storage_options : mapping, optional
        fsspec options when ``run_dir`` is a URL.

    Raises
    ------
    DataError
        The folder's ``featurize.json`` is damaged (without ``overwrite``).
    """
    so = storage_options
    if overwrite:
        return FeaturizeState(written=tuple(_written_files(run_dir, so)))
    if storage.isfile(storage.join(run_dir, JOB_FILE), so):
        job = read_job(run_dir, so)
        records = (complete_records(run_dir, dict(record), checksums=True, storage_options=so)
                   if job["params"] == record["params"] else {})
        return FeaturizeState(job=job, complete=tuple(sorted(records)), records=records)
    if any(n.startswith("part-") for d in PART_DIRS
           for n in storage.listdir(storage.join(run_dir, *d.split("/")), so)):
        return FeaturizeState(part_files=True)
    return FeaturizeState(foreign=tuple(foreign_entries(run_dir, so)))


def _written_files(run_dir: str | Path, storage_options: Mapping[str, Any] | None) -> list[str]:
    """The files earlier featurize runs wrote into ``run_dir`` that are there, by name.

    Known from the run's manifest: the file names its ``featurize.json`` planned (partitions x
    outputs), the files its completion records list, and the parameter files. A user's file in
    ``features/`` or ``errors/`` is not among them.
    """
    url = storage.is_url(run_dir)
    names = {JOB_FILE, MEL_PARAMS_FILE, LABELS_FILE, GENRES_FILE}
    try:
        old = read_job(run_dir, storage_options)
    except DataError:
        old = None
    for p in range(int(old["plan"]["partitions"]) if old is not None else 0):
        files = PartitionFiles(run_dir, p)
        names.update(files.name(f) for f in [*files.outputs(OUTPUTS), files.record])
    records = storage.join(run_dir, RECORDS_DIR)
    for rec in storage.listdir(records, storage_options):
        if not (rec.startswith("part-") and rec.endswith(".json")):
            continue
        names.add(f"{RECORDS_DIR}/{rec}")
        try:
            listed = json.loads(storage.read_bytes(storage.join(records, rec), storage_options))
            names.update(n for n in listed["files"]
                         if isinstance(n, str) and not n.startswith("/")
                         and ".." not in n.split("/"))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            pass
        except OSError:
            if url:
                raise       # a store that cannot be reached must not look like "nothing there"
    return [n for n in sorted(names)
            if storage.isfile(storage.join(run_dir, *n.split("/")), storage_options)]


@dataclass(frozen=True)
class FeaturizePlan:
    """What a featurize job will do in its run folder: a value (:func:`plan_featurize`), run by
    :func:`execute_featurize`."""

    #: The run folder (:func:`run_folder`).
    run_dir: str | Path
    config: FeaturizeConfig
    #: What each partition task computes.
    job: JobParams
    #: The ``featurize.json`` to write: the job's own, or the folder's when nothing is left.
    record: dict
    #: Partitions already complete (skipped), and those to compute.
    complete: tuple[int, ...]
    remaining: tuple[int, ...]
    #: The tracks of the remaining partitions, in partition order.
    todo: tuple[Track, ...]
    #: Files an overwrite deletes first (names relative to the run folder).
    removes: tuple[str, ...] = ()
    #: The run's label records, written by every execution (:func:`fmadask.fma.tracks.label_rows`).
    labels: tuple[tuple[int, str | None, tuple[int, ...]], ...] = ()
    genres: tuple[tuple[int, str, int, int], ...] = ()
    #: The completion records of the complete partitions as planning read them (None: not
    #: read); with nothing remaining (nothing written under the lock) the summary counts them.
    records: Mapping[int, dict] | None = None

    @property
    def partitions(self) -> int:
        """Partitions of the whole job."""
        return int(self.record["plan"]["partitions"])


def plan_featurize(config: FeaturizeConfig, table: pd.DataFrame, state: FeaturizeState,
                   out: str | Path, data_dir: str | Path) -> FeaturizePlan:
    """Plan a featurize job: which partitions remain, what is written and removed.

    Pure: the same inputs give an equal plan, and nothing is read or written.

    Parameters
    ----------
    config : FeaturizeConfig
    table : pandas.DataFrame
        The selected tracks (:func:`fmadask.fma.tracks.track_table`).
    state : FeaturizeState
        What the run folder holds (:func:`read_featurize_state`).
    out : str or Path
        The run folder.
    data_dir : str or Path
        The data folder (recorded).

    Raises
    ------
    DataError, OptionError
        See :func:`featurize_record`.
    OptionError
        Without ``overwrite``: the folder holds a run with other parameters, featurize outputs
        without a ``featurize.json``, or files that fmadask did not write.
    """
    run_dir = run_folder(out)
    record = featurize_record(config, table, data_dir)
    if not config.overwrite:
        _check_folder(run_dir, record, state)
    # Partitions count as complete only for the same parameters (checked just above).
    done = () if config.overwrite or state.job is None else tuple(sorted(state.complete))
    size = config.partition_size
    remaining = tuple(p for p in range(record["plan"]["partitions"]) if p not in done)
    todo = tuple(Track(i // size, int(tid), row.path, row.genre_top, row.split)
                 for i, (tid, row) in enumerate(zip(table.index.to_numpy(), table.itertuples()))
                 if i // size not in done)
    if not remaining and state.job is not None:
        record = state.job                  # nothing to do: the run's record stays
    return FeaturizePlan(run_dir=run_dir, config=config, job=config.job, record=record,
                         complete=done, remaining=remaining, todo=todo,
                         removes=state.written if config.overwrite else (),
                         labels=label_rows(table), genres=genre_rows(table.attrs["genres"]),
                         records=state.records if done else None)


def _check_folder(run_dir: str | Path, record: Mapping[str, Any], state: FeaturizeState) -> None:
    """Refuse a folder that holds another run, or files fmadask did not write (no overwrite)."""
    if state.job is not None:
        old = state.job["params"]
        if old != record["params"]:
            raise OptionError("output.overwrite",
                              f"{run_dir} was featurized with other parameters: "
                              f"{describe_change(old, record['params'])}; set {{option}} to "
                              "start afresh or choose another output folder")
        return
    if state.part_files:
        raise OptionError("output.overwrite",
                          f"{run_dir} holds featurize outputs but no {JOB_FILE}: set {{option}} "
                          "to start afresh or choose another output folder")
    if state.foreign:
        shown = ", ".join(state.foreign[:3]) + (", ..." if len(state.foreign) > 3 else "")
        raise OptionError("output.overwrite",
                          f"{run_dir} is not empty and not an fmadask run folder (it holds "
                          f"{shown}): choose a new or empty output folder, or set {{option}} to "
                          "use it anyway (fmadask never deletes files it did not write)")


# ------------------------------------------------------------------------- executing a plan


def worker_memory_needed(seconds: float) -> int:
    """Estimated peak memory in bytes of a worker featurizing a track of ``seconds`` seconds
    (measured at 44.1 kHz; includes the ~0.4 GiB of a warm worker process)."""
    return int((WORKER_BASE_MIB + MIB_PER_AUDIO_SECOND * seconds) * 2**20)


def _check_worker_memory(client: Client, subset: str, max_seconds: float | None) -> None:
    """Warn when the workers' memory limits are below what the longest track may need."""
    longest = CLIP_SECONDS if subset != "full" else max_seconds
    if longest is None:
        logger.warning(f"warning: no {setting('featurize.max_seconds')} on FMA full: a track of "
                       "hours can exhaust a worker's memory")
        return
    need = MEMORY_HEADROOM * worker_memory_needed(longest)
    limits = [w.get("memory_limit") or 0 for w in
              workers_info(client).values()]
    low = [limit for limit in limits if 0 < limit < need]
    if low:
        logger.warning(f"warning: {len(low)} worker(s) have a memory limit of "
                       f"{min(low) / 2**30:.1f} GiB; tracks of up to {longest:g} s need about "
                       f"{need / 2**30:.1f} GiB: lower {setting('featurize.max_seconds')} or give "
                       "workers more memory")


def _worker_decoders(client: Client) -> list[str]:
    def decoder() -> str:
        from fmadask.audio import DECODER

        return DECODER

    return sorted(set(client.run(decoder).values()))


@dataclass
class _RunStats:
    partitions_run: int = 0
    tracks_run: int = 0
    seconds: float = 0.0
    warm_up_s: float = 0.0
    workers: int = 0
    failures: list[str] = field(default_factory=list)


def _compute(client: Client, todo: list[Track], partition_size: int, run_dir: Path,
             job: JobParams, progress: bool, stats: _RunStats,
             storage_options: Mapping[str, Any] | None = None) -> None:
    """Warm the workers, run the bag of ``todo`` tracks, collect per-partition results."""
    import dask.bag as db
    from distributed import as_completed
    from tqdm.auto import tqdm

    # Log-mels on the GPU: only workers that see one take partitions.
    workers = gpu_workers(client) if job.mel_device == "cuda" else None
    if workers == []:
        raise ConfigError("mel_device='cuda' but no Dask worker sees a CUDA device: start GPU "
                          "workers or compute log-mels on the CPU")
    stats.workers = len(workers) if workers is not None else len(workers_info(client))
    start = time.perf_counter()
    client.register_plugin(WarmUp(job), name=WARM_UP_PLUGIN)
    stats.warm_up_s = time.perf_counter() - start
    # ``todo`` holds whole partitions in order (only the last partition can be short), so
    # chunks of ``partition_size`` are exactly the planned partitions; the task checks it.
    bag = db.from_sequence(todo, partition_size=partition_size)
    tasks = bag.map_partitions(featurize_partition, str(run_dir), job,
                               dict(storage_options or {})).to_delayed()
    start = time.perf_counter()
    futures = client.compute(tasks, retries=1, workers=workers)
    with tqdm(total=len(todo), unit="track", desc="featurize", disable=not progress,
              file=sys.stderr) as bar:
        for future in as_completed(futures):
            try:
                results = future.result()
            except Exception as exc:  # a whole partition failed: disk, permissions, a dead worker
                if isinstance(exc, StoreUnavailable):
                    client.cancel(futures)
                    raise
                if scheduler_lost(exc):   # every other future fails the same way: stop here
                    raise lost_scheduler_error(getattr(client.scheduler, "address", None)
                                               ) from None
                hint = (" - workers died running it: out of memory? lower "
                        f"{setting('featurize.max_seconds')} or give workers more memory"
                        if type(exc).__name__ == "KilledWorker" else "")
                stats.failures.append(f"{type(exc).__name__}: {' '.join(str(exc).split())}{hint}")
                continue
            for result in results:
                if result.get("store_error"):   # gone for every partition: stop the job now
                    client.cancel(futures)
                    raise StoreUnavailable(result["store_error"])
                if result.get("error"):
                    stats.failures.append(result["error"])
                    continue
                stats.partitions_run += 1
                stats.tracks_run += result["tracks"]
                bar.update(result["tracks"])
    stats.seconds = time.perf_counter() - start


def _remove_written(run_dir: str | Path, names: Iterable[str],
                    storage_options: Mapping[str, Any] | None) -> None:
    """Delete the files ``names`` of an earlier run (:attr:`FeaturizePlan.removes`), then on
    disk fmadask's temporary files and the output folders left empty (a folder that still holds
    files that are not ours stays). Object storage has no folders and no temporary objects
    (partitions are staged on the worker's disk)."""
    for name in names:
        storage.remove(storage.join(run_dir, *name.split("/")), storage_options)
    if storage.is_url(run_dir):
        return
    for folder in (*PART_DIRS, RECORDS_DIR):
        remove_temp_files(run_dir / folder)
    for folder in (INDEX_DIR, SPECTROGRAMS_DIR, FEATURES_DIR, ERRORS_DIR, RECORDS_DIR):
        with contextlib.suppress(OSError):      # not empty: it holds files that are not ours
            (run_dir / folder).rmdir()


class FeaturizeResult(NamedTuple):
    """What :func:`execute_featurize` did."""

    #: The summary written into ``featurize.json`` (see :func:`run_featurize`).
    summary: dict
    #: One line per partition that could not be written (its tracks are not counted).
    failures: tuple[str, ...]


def execute_featurize(plan: FeaturizePlan, client: Client | None = None, *,
                      scheduler: str | None = None, workers: int | None = None,
                      worker_timeout: float = WORKER_TIMEOUT_S, progress: bool = True,
                      storage_options: Mapping[str, Any] | None = None) -> FeaturizeResult:
    """Run a :class:`FeaturizePlan`: under the run folder's lock, remove what an overwrite
    removes, compute the remaining partitions and record the summary in ``featurize.json``.

    Plan under the same lock (as :func:`run_featurize` does: the lock is re-entrant) for a plan
    that still holds when it runs. Prints nothing but the progress bar and warnings.

    Parameters
    ----------
    plan : FeaturizePlan
    client : distributed.Client, optional
        Cluster to run on; without one, :func:`fmadask.cluster.get_client` (``scheduler``,
        ``workers``) is opened when there is work to do and closed at the end.
    scheduler, workers, worker_timeout : optional
        See ``client``.
    progress : bool
        Show a progress bar.
    storage_options : mapping, optional
        fsspec options of the data folder and the run folder when they are URLs.

    Returns
    -------
    FeaturizeResult
    """
    run_dir, job, so = plan.run_dir, plan.job, storage_options
    record = dict(plan.record)
    job_file = storage.join(run_dir, JOB_FILE)
    with RunLock(run_dir, "fmadask featurize", storage_options=so):
        if plan.config.overwrite:
            _remove_written(run_dir, plan.removes, so)
        # Safe under the lock: no other writer uses this folder now.
        for folder in (*PART_DIRS, RECORDS_DIR) if not storage.is_url(run_dir) else ():
            remove_temp_files(run_dir / folder)   # left by workers that died in an earlier run
        for p in plan.remaining:   # damaged or half-written: the task must not skip it
            storage.remove(PartitionFiles(run_dir, p).record, so)

        stats = _RunStats()
        if plan.todo:
            with contextlib.ExitStack() as stack:
                if client is None:
                    from fmadask.cluster import get_client

                    client = stack.enter_context(get_client(scheduler=scheduler,
                                                            workers=workers,
                                                            worker_timeout=worker_timeout))
                _check_worker_memory(client, plan.config.subset, job.max_seconds)
                record["decoders"] = _worker_decoders(client)
                # The record first: it makes the folder a run folder, so a job cut off after it
                # (a full disk) is resumed by a re-run instead of refused as someone else's.
                write_json(record, job_file, so)
                if job.mel is not None:
                    write_json(_mel_record(job.mel, job.sr, record["decoders"], job.mel_device),
                               storage.join(run_dir, *MEL_PARAMS_FILE.split("/")), so)
                _compute(client, list(plan.todo), plan.config.partition_size, run_dir, job,
                         progress, stats, so)
        elif not storage.isfile(job_file, so):
            write_json(record, job_file, so)     # summarize reads it
        # After the record, which makes the folder a run folder; an earlier run's (none before
        # fmadask wrote them) are replaced by the same tracks' current ones.
        write_labels(run_dir, plan.labels, plan.genres, so)

        summary = summarize(run_dir, so, None if plan.remaining else plan.records)
        summary.update(partitions_run=stats.partitions_run,
                       partitions_skipped=len(plan.complete), tracks_run=stats.tracks_run,
                       seconds=round(stats.seconds, 3),
                       tracks_per_s=(round(stats.tracks_run / stats.seconds, 3) if stats.seconds
                                     else None),
                       warm_up_s=round(stats.warm_up_s, 3), workers=stats.workers)
        record["summary"] = summary
        write_json(record, job_file, so)
        return FeaturizeResult(summary, tuple(stats.failures))


def run_featurize(data_dir: str | Path, out: str | Path = "run",
                  config: FeaturizeConfig | None = None, client: Client | None = None, *,
                  progress: bool = True, scheduler: str | None = None,
                  workers: int | None = None, worker_timeout: float = WORKER_TIMEOUT_S,
                  storage_options: Mapping[str, Any] | None = None) -> dict:
    """Featurize the tracks of an FMA subset on a Dask cluster into ``out``.

    Parameters
    ----------
    data_dir : str or Path
        FMA data folder (``fma_metadata/``, ``fma_<subset>/``): a path the workers can read at
        the same place, or an fsspec URL (``s3://``, ``gs://``, ``https://``) that each worker
        reads itself.
    out : str or Path
        Run directory; created if needed.
    config : FeaturizeConfig, optional
        The job's settings (default ``FeaturizeConfig()``): the subset, the split, the sample
        rate (``sr`` None keeps each file's native rate as FMA did), the outputs (``what``),
        ``partition_size``, ``max_seconds``, ``mel_device`` and ``overwrite`` (delete the
        previous featurize outputs in ``out`` and start afresh); see
        :class:`~fmadask.options.FeaturizeOptions` for each.
    client : distributed.Client, optional
        Cluster to run on. Without one, ``get_client(scheduler, workers)`` from
        :mod:`fmadask.cluster` is opened when there is work to do (a local cluster of 2 worker
        processes by default) and closed at the end.
    progress : bool
        Show a progress bar and print the closing summary (on standard output).
    scheduler : str, optional
        Address of an existing scheduler, used when no ``client`` is given.
    workers : int, optional
        Local worker processes to start, when neither ``client`` nor ``scheduler`` is given.
    worker_timeout : float
        Seconds to wait for a first worker of a cluster that has none, when no ``client`` is
        given (:func:`fmadask.cluster.await_workers`).
    storage_options : mapping, optional
        fsspec options of a URL ``data_dir`` (credentials, endpoint); besides them the standard
        environment (``AWS_*``) applies. Never printed or recorded.

    Returns
    -------
    dict
        The summary (also stored in ``out/featurize.json``): what :func:`summarize` counts,
        plus ``partitions_run``, ``partitions_skipped``, ``tracks_run``, ``seconds`` (timed
        work, warm-up excluded), ``tracks_per_s``, ``warm_up_s`` and ``workers``.

    Raises
    ------
    ConfigError
        ``out`` holds a run made with other parameters.
    DataError
        ``data_dir`` is not an FMA folder.
    FmadaskError
        Some partitions could not be written (their tracks are then not counted); re-running
        resumes.
    """
    from fmadask.fma.tracks import track_table

    config = config or FeaturizeConfig()
    table = track_table(data_dir, subset=config.subset, split=config.split, seed=config.seed,
                        storage_options=storage_options, target=config.target)
    # The data's and the partitioning's errors come before anything is written.
    record = featurize_record(config, table, data_dir)
    run_dir = run_folder(out)
    with RunLock(run_dir, "fmadask featurize", storage_options=storage_options):
        # Read and planned under the lock that execute_featurize takes again: no other writer
        # changes the folder between the plan and its execution.
        state = read_featurize_state(run_dir, record, config.overwrite, storage_options)
        plan = plan_featurize(config, table, state, out=run_dir, data_dir=data_dir)
        summary, failures = execute_featurize(plan, client, scheduler=scheduler,
                                              workers=workers, worker_timeout=worker_timeout,
                                              progress=progress,
                                              storage_options=storage_options)
    return report(FeaturizeResult(summary, failures), progress)


def report(result: FeaturizeResult, progress: bool = True, file: IO[str] | None = None) -> dict:
    """Print a finished job's summary (with ``progress``) and return it; raise
    :class:`FmadaskError` when partitions failed (a re-run resumes them)."""
    if progress:
        print_summary(result.summary, file=file)
    if result.failures:
        raise FmadaskError(f"{len(result.failures)} partition(s) failed ({result.failures[0]}): "
                           "fix the cause and re-run the same command to finish them")
    return result.summary


def _mel_record(mel: MelParams, sr: int | None, decoders: list[str], device: str) -> dict:
    """``spectrograms/params.json``: how the shards were made."""
    return {**mel.to_dict(), "decode_sr": sr if sr is not None else "native",
            "decoders": decoders, "computed_with": "torch" if device == "cuda" else "librosa",
            "layout": "[tracks, n_mels, frames] per shard; row and valid frames in index/"}
