"""The work of one featurize partition task, run on the workers: decode each track once, compute
its FMA features and/or log-mel spectrogram, and write the partition's files (see
:mod:`fmadask.runfolder`), the completion record last. A bad track becomes an errors row and
never stops the job; a task is idempotent (:mod:`fmadask.pipeline.featurize` plans and runs
the tasks). The worker plugin :class:`WarmUp` compiles librosa's numba code before the timed
work.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow as pa
from distributed.diagnostics.plugin import WorkerPlugin

from fmadask import storage
from fmadask.atomic import NpyShard, write_parquet
from fmadask.runfolder import PartitionFiles, errors_schema, features_schema, index_schema
from fmadask.storage import StoreUnavailable, redact

if TYPE_CHECKING:
    from fmadask.features import MelParams

logger = logging.getLogger(__name__)

#: Length of an error message kept in the errors table.
MAX_MESSAGE = 500
#: Name under which the warm-up worker plugin is registered.
WARM_UP_PLUGIN = "fmadask-warm-up"


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
    return _table(index_schema(), {
        "track_id": [t.track_id for t in tracks], "shard": [shard] * len(tracks),
        "row": list(range(len(tracks))), "frames": frames,
        "genre_top": [t.genre_top for t in tracks], "split": [t.split for t in tracks]})


def _errors_table(rows: list[tuple[int, str, str, str]]) -> pa.Table:
    # A track's message may name its URL: stored without the URL's password.
    rows = [(track, stage, kind, redact(message)) for track, stage, kind, message in rows]
    schema = errors_schema()
    return _table(schema, {name: [row[j] for row in rows] for j, name in enumerate(schema.names)})


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
