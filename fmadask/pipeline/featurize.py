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

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow as pa
from distributed.diagnostics.plugin import WorkerPlugin

from fmadask.cluster import (WORKER_TIMEOUT_S, gpu_workers, lost_scheduler_error, scheduler_lost,
                             workers_info)
from fmadask.errors import ConfigError, DataError, FmadaskError
from fmadask.atomic import NpyShard, remove_temp_files, write_parquet
from fmadask.lock import RunLock
from fmadask import storage
from fmadask.storage import StoreUnavailable, redact, resolve
from fmadask.options import (FeaturizeOptions, OptionError, default, option_values, same_as,
                             setting)
from fmadask.records import describe_change, package_versions
from fmadask.runfolder import (ERRORS_SCHEMA, FEATURES_DIR, INDEX_DIR, INDEX_SCHEMA, JOB_FILE,
                               MAX_PARTITIONS, MEL_PARAMS_FILE, OUTPUTS, PART_DIRS, RECORDS_DIR,
                               SPECTROGRAMS_DIR, ERRORS_DIR, PartitionFiles, complete_partitions,
                               complete_records, features_schema, foreign_entries, parquet_source,
                               read_job, write_json)

if TYPE_CHECKING:
    import pandas as pd
    from distributed import Client

    from fmadask.features import MelParams

logger = logging.getLogger(__name__)

#: Tracks per partition: ~15-30 s of work per task on 30 s clips, 1,666 partitions for FMA large.
DEFAULT_PARTITION_SIZE = default("featurize.partition_size")
#: Longest track featurized, in seconds (FMA's clips are 30 s; FMA full has tracks of hours).
DEFAULT_MAX_SECONDS = default("featurize.max_seconds")
#: Length of an error message kept in the errors table.
MAX_MESSAGE = 500
#: Name under which the warm-up worker plugin is registered.
WARM_UP_PLUGIN = "fmadask-warm-up"
#: Measured memory of a warm worker process, and the peak added per second of 44.1 kHz audio.
WORKER_BASE_MIB = 400.0
MIB_PER_AUDIO_SECOND = 1.6
#: Length of FMA's clips (subsets small, medium, large); ``full`` has untrimmed tracks.
CLIP_SECONDS = 30.0
#: Headroom over the estimate: Dask's nanny restarts a worker at 95 % of its memory limit.
MEMORY_HEADROOM = 1.25


class Track(NamedTuple):
    """One element of the job's bag: a track and the partition it belongs to."""

    partition: int
    track_id: int
    path: str
    genre_top: str
    split: str


@dataclass(frozen=True)
class JobParams:
    """What a partition task computes (shipped to the workers with each task)."""

    sr: int | None
    what: tuple[str, ...]
    max_seconds: float | None
    mel: MelParams | None = None
    fma_compat: bool = True
    #: Where log-mels are computed: ``cpu`` (librosa) or ``cuda`` (torch, :mod:`fmadask.torchmel`).
    mel_device: str = "cpu"


def _mel_function(job: JobParams):
    """``(y, sr) -> (spectrogram, valid_frames)`` for the job's mel device."""
    if job.mel_device == "cuda":
        from fmadask.torchmel import log_mel_on

        return log_mel_on("cuda", job.mel)
    from fmadask.features import log_mel

    return functools.partial(log_mel, params=job.mel)


# ------------------------------------------------------------------------------ per partition


def _error_row(track: Track, stage: str, exc: BaseException) -> tuple[int, str, str, str]:
    from fmadask.audio import AudioError

    kind = exc.kind if isinstance(exc, AudioError) else type(exc).__name__
    message = " ".join(str(exc).split()) or type(exc).__name__   # one line
    return track.track_id, stage, kind, message[:MAX_MESSAGE]


def _table(schema: pa.Schema, columns: dict[str, Sequence | np.ndarray]) -> pa.Table:
    return pa.table({name: pa.array(columns[name], type=schema.field(name).type)
                     for name in schema.names}, schema=schema)


def _features_table(tracks: list[Track], values: np.ndarray) -> pa.Table:
    from fmadask.features import FEATURE_COLUMNS

    columns: dict[str, Sequence | np.ndarray] = {
        "track_id": [t.track_id for t in tracks], "split": [t.split for t in tracks],
        "genre_top": [t.genre_top for t in tracks]}
    columns.update({name: values[:, j] for j, name in enumerate(FEATURE_COLUMNS)})
    return _table(features_schema(), columns)


def _index_table(tracks: list[Track], frames: list[int], shard: str) -> pa.Table:
    return _table(INDEX_SCHEMA, {
        "track_id": [t.track_id for t in tracks], "shard": [shard] * len(tracks),
        "row": list(range(len(tracks))), "frames": frames,
        "genre_top": [t.genre_top for t in tracks], "split": [t.split for t in tracks]})


def _errors_table(rows: list[tuple[int, str, str, str]]) -> pa.Table:
    # A track's message may name its URL: stored without the URL's password.
    rows = [(track, stage, kind, redact(message)) for track, stage, kind, message in rows]
    names = ERRORS_SCHEMA.names
    return _table(ERRORS_SCHEMA, {name: [row[j] for row in rows] for j, name in enumerate(names)})


def _write_partition(tracks: list[Track], files: PartitionFiles, job: JobParams,
                     storage_options: Mapping[str, Any] | None = None) -> int:
    """Featurize ``tracks`` and write the partition's files; return the number of failed tracks.

    ``storage_options`` are the fsspec options of the data folder when it is a URL."""
    from fmadask.audio import load_audio
    from fmadask.features import FEATURE_COLUMNS, fma_features

    want_features = "features" in job.what
    shard: NpyShard | None = None
    if "spectrograms" in job.what:
        assert job.mel is not None
        shard = NpyShard(files.spectrograms, (len(tracks), job.mel.n_mels, job.mel.frames),
                         np.float16)
        to_mel = _mel_function(job)
    values = np.empty((len(tracks) if want_features else 0, len(FEATURE_COLUMNS)), np.float32)
    featurized: list[Track] = []
    spectrogram_tracks: list[Track] = []
    spectrogram_frames: list[int] = []
    errors: list[tuple[int, str, str, str]] = []
    try:
        for track in tracks:
            try:
                y, sr = load_audio(track.path, sr=job.sr, max_seconds=job.max_seconds,
                                   storage_options=storage_options)
            except StoreUnavailable:  # not the track's fault: the partition is redone later
                raise
            except Exception as exc:  # every bad track is recorded, none stops the job
                errors.append(_error_row(track, "decode", exc))
                continue
            if want_features:
                try:
                    values[len(featurized)] = fma_features(y, sr, fma_compat=job.fma_compat)
                    featurized.append(track)
                except Exception as exc:
                    errors.append(_error_row(track, "features", exc))
            if shard is not None:
                try:
                    mel, frames = to_mel(y, sr)
                    shard[len(spectrogram_tracks)] = mel
                    spectrogram_tracks.append(track)
                    spectrogram_frames.append(int(frames))
                except Exception as exc:
                    errors.append(_error_row(track, "spectrogram", exc))
            del y
        if want_features:
            write_parquet(_features_table(featurized, values[:len(featurized)]), files.features)
        if shard is not None:
            shard.close(len(spectrogram_tracks))
            write_parquet(_index_table(spectrogram_tracks, spectrogram_frames,
                                       files.spectrograms.name), files.index)
        write_parquet(_errors_table(errors), files.errors)
        # Written last: sizes and checksums of the files above; the partition is now complete.
        files.write_record(job.what, partition_counts(
            len(featurized) if want_features else None,
            len(spectrogram_tracks) if shard is not None else None,
            [(row[0], row[2]) for row in errors]))
    except BaseException:
        if shard is not None:
            shard.discard()
        raise
    return len({row[0] for row in errors})


def featurize_partition(tracks: list[Track], run_dir: str, job: JobParams,
                        storage_options: Mapping[str, Any] | None = None) -> list[dict]:
    """The task of one partition: featurize its tracks unless its files are already complete.

    Parameters
    ----------
    tracks : list of Track
        One bag partition, all with the same ``partition`` number.
    run_dir : str
        The run directory.
    job : JobParams
        What to compute.
    storage_options : mapping, optional
        fsspec options of the data folder and the run directory when they are URLs (a task
        argument, so workers need no shared config; never written anywhere).

    Returns
    -------
    list of dict
        One dict (a bag partition of one element): ``partition``, ``tracks``, ``failed``,
        ``seconds`` (wall time of the task) and ``skipped`` (files were already complete); with
        ``error`` when its files could not be written (a full disk), ``store_error`` when a
        store could not be reached (the job stops).
    """
    partitions = {t.partition for t in tracks}
    if len(partitions) != 1:
        raise RuntimeError(f"a bag partition holds tracks of partitions {sorted(partitions)}")
    url = storage.is_url(run_dir)
    files = PartitionFiles(run_dir if url else Path(run_dir), partitions.pop(), storage_options)
    stats = {"partition": files.partition, "tracks": len(tracks), "failed": 0, "seconds": 0.0,
             "skipped": True}
    start = time.perf_counter()
    try:
        if files.complete(job.what):
            return [stats]
        if url:
            # Written and recorded in a private local folder, then uploaded file by file with
            # the completion record last (the same order as the renames on disk).
            with tempfile.TemporaryDirectory(prefix="fmadask-part-") as stage:
                staged = PartitionFiles(Path(stage), files.partition)
                stats["failed"] = _write_partition(tracks, staged, job, storage_options)
                files.publish(staged, job.what)
        else:
            stats["failed"] = _write_partition(tracks, files, job, storage_options)
    except StoreUnavailable as exc:
        # The store is gone (after this access's retries): the job stops on the first such
        # result rather than every partition retrying it (returned, so Dask neither logs a
        # traceback nor runs the task again).
        return [{**stats, "skipped": False, "store_error": str(exc)}]
    except OSError as exc:
        # The disk is full or the folder unwritable: the partition failed, say why (retrying
        # elsewhere would fail the same way, and the worker need not log a traceback).
        where = f" ({exc.filename})" if exc.filename else ""
        return [{**stats, "skipped": False,
                 "error": f"{type(exc).__name__}: {exc.strerror or exc}{where}"}]
    stats.update(seconds=time.perf_counter() - start, skipped=False)
    return [stats]


# ----------------------------------------------------------------------------------- warm-up

_warmed: set[JobParams] = set()


def warm_up(job: JobParams) -> float:
    """Run the job's computations once on 2 s of noise, so that librosa's numba code is compiled
    before the timed work; return the seconds it took (0 when this process is already warm).

    Errors are logged, not raised: a worker that cannot warm up still records each track's error.
    """
    if job in _warmed:
        return 0.0
    from fmadask.features import fma_features

    start = time.perf_counter()
    sr = job.sr or 44100
    y = np.random.default_rng(0).uniform(-0.5, 0.5, 2 * sr).astype(np.float32)
    try:
        if "features" in job.what:
            fma_features(y, sr, fma_compat=job.fma_compat)
        if "spectrograms" in job.what:
            _mel_function(job)(y, sr)
    except Exception:
        logger.exception("fmadask warm-up failed")
        return time.perf_counter() - start
    _warmed.add(job)
    return time.perf_counter() - start


class WarmUp(WorkerPlugin):
    """Worker plugin that runs :func:`warm_up` on every worker, including workers that join or
    restart later. Registering it returns once every current worker is warm."""

    name = WARM_UP_PLUGIN

    def __init__(self, job: JobParams) -> None:
        self.job = job

    async def setup(self, worker) -> None:
        # In a thread: compiling takes seconds and must not block the worker's event loop.
        await asyncio.get_running_loop().run_in_executor(None, warm_up, self.job)



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
        command line's) and the ``others`` (``subset``, ``split``, ``seed``, ``overwrite``)."""
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


def _tracks_digest(table: pd.DataFrame) -> str:
    """SHA-256 of the selected tracks with their labels: a changed selection changes it."""
    text = "\n".join(f"{tid},{row.genre_top},{row.split}"
                     for tid, row in zip(table.index, table.itertuples()))
    return hashlib.sha256(text.encode()).hexdigest()


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
        raise DataError(f"{redact(data_dir)}: no track of subset {config.subset!r} has a top-level "
                        f"genre: check the data folder and {setting('data.subset')}")
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
        "tracks_sha256": _tracks_digest(table)}
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
    #: Files that earlier featurize runs wrote (names relative to the folder): what an
    #: overwrite deletes.
    written: tuple[str, ...] = ()


def read_featurize_state(run_dir: str | Path, record: Mapping[str, Any], overwrite: bool,
                         storage_options: Mapping[str, Any] | None = None) -> FeaturizeState:
    """Read what :func:`plan_featurize` needs to know of ``run_dir``.

    Only what can matter is read: with ``overwrite``, the files earlier runs wrote; else the
    folder's ``featurize.json`` and, when its parameters are ``record``'s, which partitions are
    complete (checksums read every byte on disk, and in a bucket only the objects whose entity
    tag changed since upload: a run with other parameters is refused without them).

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
        complete = (complete_partitions(run_dir, dict(record), checksums=True, storage_options=so)
                    if job["params"] == record["params"] else [])
        return FeaturizeState(job=job, complete=tuple(complete))
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
    names = {JOB_FILE, MEL_PARAMS_FILE}
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
                         removes=state.written if config.overwrite else ())


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


def partition_counts(features: int | None, spectrograms: int | None,
                     errors: Iterable[tuple[int, str]]) -> dict:
    """What a partition's completion record counts for the run's summary.

    Parameters
    ----------
    features, spectrograms : int or None
        Rows written (None: that output is not made).
    errors : iterable of (int, str)
        ``(track_id, error_type)`` of each errors row.

    Returns
    -------
    dict
        ``features``, ``spectrograms``, ``failed`` (tracks with an errors row) and
        ``failed_by_type`` ({error_type: tracks}).
    """
    pairs = set(errors)
    by_type: dict[str, int] = {}
    for _, error_type in pairs:
        by_type[error_type] = by_type.get(error_type, 0) + 1
    return {"features": features, "spectrograms": spectrograms,
            "failed": len({tid for tid, _ in pairs}),
            "failed_by_type": dict(sorted(by_type.items()))}


def _recorded_counts(record: Mapping[str, Any], what: Sequence[str]) -> dict | None:
    """The counts a completion record keeps, or None (a record of an older fmadask)."""
    counts = record.get("counts")
    try:
        numbers = [counts["failed"], *counts["failed_by_type"].values(),
                   *(counts[o] for o in OUTPUTS if o in what)]
    except (KeyError, TypeError, AttributeError):
        return None
    return counts if all(isinstance(n, int) for n in numbers) else None


def _counts_from_files(files: PartitionFiles, what: Sequence[str],
                       storage_options: Mapping[str, Any] | None = None) -> dict:
    """:func:`partition_counts` of a complete partition, read from its files."""
    import pyarrow.parquet as pq

    def rows(path: str | Path) -> int:
        return pq.read_metadata(parquet_source(path, storage_options)).num_rows

    errors = pq.read_table(parquet_source(files.errors, storage_options),
                           columns=["track_id", "error_type"]).to_pydict()
    return partition_counts(rows(files.features) if "features" in what else None,
                            rows(files.index) if "spectrograms" in what else None,
                            zip(errors["track_id"], errors["error_type"]))


def summarize(run_dir: str | Path, storage_options: Mapping[str, Any] | None = None) -> dict:
    """Count what a run directory holds: tracks, failures by type, features and spectrograms.

    Returns
    -------
    dict
        ``tracks`` (selected), ``ok`` (no error), ``failed`` (tracks with an errors row),
        ``pending`` (tracks of partitions not complete yet),
        ``failed_by_type`` ({error_type: tracks}), ``features`` and ``spectrograms`` (rows
        written), ``partitions`` and ``partitions_complete``.
    """
    run_dir = run_dir if storage.is_url(run_dir) else Path(run_dir)
    job = read_job(run_dir, storage_options)
    what = job["params"]["what"]
    # Counted from the completion records: a summary reads no data file (in a bucket, a
    # resume's summary would otherwise download part of every complete partition).
    records = complete_records(run_dir, job, storage_options=storage_options)
    done = sorted(records)
    counts = [_recorded_counts(records[p], what)
              or _counts_from_files(PartitionFiles(run_dir, p), what, storage_options)
              for p in done]
    by_type: dict[str, int] = {}
    for c in counts:
        for error_type, n in c["failed_by_type"].items():
            by_type[error_type] = by_type.get(error_type, 0) + n
    failed = sum(c["failed"] for c in counts)
    tracks, size = job["plan"]["tracks"], job["params"]["partition_size"]
    finished = sum(min(size, tracks - p * size) for p in done)
    return {
        "tracks": tracks,
        "ok": finished - failed,
        "failed": failed,
        "pending": tracks - finished,
        "failed_by_type": dict(sorted(by_type.items())),
        "features": sum(c["features"] for c in counts) if "features" in what else None,
        "spectrograms": (sum(c["spectrograms"] for c in counts)
                         if "spectrograms" in what else None),
        "partitions": job["plan"]["partitions"],
        "partitions_complete": len(done),
    }



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

        summary = summarize(run_dir, so)
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
                        storage_options=storage_options)
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


def print_summary(summary: dict, file: IO[str] | None = None) -> None:
    """Print a run's summary in a few lines (see :func:`run_featurize` for its keys)."""
    file = file or sys.stdout
    failed = ", ".join(f"{k} {v}" for k, v in summary["failed_by_type"].items())
    rate = (f"{summary['tracks_per_s']:.2f} tracks/s" if summary.get("tracks_per_s")
            else "nothing to do")
    print(f"featurized {summary['tracks']} tracks in {summary['partitions']} partitions "
          f"({summary.get('partitions_run', 0)} run, {summary.get('partitions_skipped', 0)} "
          f"already complete)", file=file)
    print(f"  ok {summary['ok']}, failed {summary['failed']}" + (f" ({failed})" if failed else "")
          + (f", not done yet {summary['pending']}" if summary.get("pending") else ""), file=file)
    if summary.get("tracks_run"):
        print(f"  {summary['tracks_run']} tracks in {summary['seconds']:.1f} s on "
              f"{summary['workers']} worker(s): {rate} (warm-up {summary['warm_up_s']:.1f} s, "
              "not counted)", file=file)
