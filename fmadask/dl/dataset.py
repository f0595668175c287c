"""Segments of log-mel spectrograms read from the featurize job's memory-mapped shards.

The featurize job writes ``RUN_DIR/spectrograms/part-XXXXX.npy`` (float16, ``[tracks, n_mels,
frames]``, each clip padded to a fixed number of frames) with an index
``spectrograms/index/part-XXXXX.parquet`` (``track_id, shard, row, frames, genre_top, split``) and
``spectrograms/params.json``. Nothing here loads a whole shard: each process opens the shards it
touches on first use and reads one clip's frames per item (``os.pread``), never mapping them: a
mapped page read stays in the process's resident memory, which a Dask nanny counts against the
worker's limit, so an epoch over an index larger than that limit got the workers restarted.

A run folder in object storage (``s3://...``) is read the same way: each shard is first fetched
into the host's :class:`~fmadask.shardcache.ShardCache` (downloaded once, verified against the
size and SHA-256 of its partition's completion record), and the local copy is mapped.

Training items are clips, each yielding one random fixed-length segment inside its valid frames
(a new segment every epoch, drawn from ``(seed, epoch, item)`` so any rank or loader process
draws the same one). Evaluation items are segments: consecutive segments covering each clip, the
last one aligned to the clip's end, so every valid frame is seen and the track id is kept for
voting.
"""
from __future__ import annotations

import json
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from fmadask import storage
from fmadask.errors import DataError
from fmadask.runfolder import (SPECTROGRAMS_DIR, PartitionFiles, read_job, read_mel_params,
                               read_spectrogram_index)
from fmadask.shardcache import ShardCache

T = TypeVar("T")


@dataclass(frozen=True)
class ShardFiles:
    """Where a process finds the local file of each spectrogram shard.

    Attributes
    ----------
    root : str or Path
        ``RUN_DIR/spectrograms``: a local folder (shards are read in place) or a URL.
    records : mapping
        URL only: ``{shard name: {"size": bytes, "sha256": hex}}`` from the completion records.
    storage_options : mapping, optional
        fsspec options of the URL (secrets: left out of the repr).
    cache : ShardCache, optional
        URL only: the host's cache the shards are fetched into.
    """

    root: str | Path
    records: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    storage_options: Mapping[str, Any] | None = field(default=None, repr=False)
    cache: ShardCache | None = None

    def path(self, shard: str) -> Path:
        """The local file of ``shard`` (a name in ``root``), fetched into the cache if remote."""
        if self.cache is None:
            return Path(self.root) / shard
        location = storage.join(self.root, shard)
        entry = self.records.get(shard)
        if entry is None:
            raise DataError(f"{storage.redact(location)} is listed in the spectrogram index but "
                            "in no completion record: re-run `fmadask featurize` for this run")
        return self.cache.fetch(location, entry["size"], entry["sha256"], self.storage_options)


@dataclass(frozen=True)
class Spectrograms:
    """The spectrogram shards of a run directory.

    Attributes
    ----------
    root : Path or str
        ``RUN_DIR/spectrograms`` (a URL string for a run folder in object storage).
    params : dict
        ``params.json``: the ``MelParams`` fields (``sr`` in Hz, ``hop_length`` in samples,
        ``n_mels`` ...), the fixed ``frames`` per clip, the ``pad`` policy and the decoder.
    index : pandas.DataFrame
        One row per clip: ``track_id`` (int64), ``shard`` (file name), ``row`` (int), ``frames``
        (valid, unpadded frames), ``genre_top`` (str), ``split`` (str), sorted by track id.
    shards : ShardFiles
        Where each process finds the shards' local files (what :class:`SegmentDataset` reads).
    """

    root: Path | str
    params: dict
    index: pd.DataFrame
    shards: ShardFiles

    @property
    def classes(self) -> list[str]:
        """The genres of the index, sorted: the net's output order (tracks without a
        ``genre_top``, featurized for ``genres_all``, have none)."""
        return sorted(self.index["genre_top"].dropna().unique().tolist())

    def tracks(self, split: str) -> pd.DataFrame:
        """Index rows of one split (``'training'``, ``'validation'`` or ``'test'``)."""
        return self.index[self.index["split"] == split].reset_index(drop=True)


def open_spectrograms(run_dir: str | Path, storage_options: Mapping[str, Any] | None = None,
                      cache: ShardCache | None = None) -> Spectrograms:
    """Read the index and parameters of ``RUN_DIR/spectrograms`` (the arrays stay where they are).

    Only complete partitions of a finished featurize run are read (the pipeline's readers).

    Parameters
    ----------
    run_dir : str or Path
        A local run folder, whose shards are read in place, or a URL (``s3://...``), whose
        shards each process fetches into ``cache`` on first use.
    storage_options : mapping, optional
        fsspec options of a URL run folder.
    cache : ShardCache, optional
        The host's shard cache for a URL run folder (default: ``ShardCache()``, see
        :mod:`fmadask.shardcache`); unused for a local one.

    Raises
    ------
    DataError
        When there is no run, no spectrograms in it, or unfinished partitions.
    """
    if storage.is_url(run_dir) and storage.local_path(run_dir) is not None:
        run_dir = storage.local_path(run_dir)        # file://: a local folder, read in place
    params = read_mel_params(run_dir, storage_options)
    index = read_spectrogram_index(run_dir, storage_options=storage_options).reset_index()
    if index.empty:
        raise DataError(f"the spectrogram index of {storage.redact(run_dir)} is empty: no track "
                        "was featurized")
    if not storage.is_url(run_dir):
        root = Path(run_dir) / SPECTROGRAMS_DIR
        return Spectrograms(root=root, params=params, index=index, shards=ShardFiles(root))
    root = storage.join(run_dir, SPECTROGRAMS_DIR)
    records = shard_records(run_dir, sorted(index["shard"].unique()), storage_options)
    return Spectrograms(root=root, params=params, index=index,
                        shards=ShardFiles(root, records, storage_options, cache or ShardCache()))


def shard_records(run_dir: str | Path, shards: list[str],
                  storage_options: Mapping[str, Any] | None = None) -> dict[str, dict]:
    """Size and SHA-256 of each of ``shards`` as its partition's completion record lists them.

    Returns
    -------
    dict
        ``{shard name: {"size": bytes, "sha256": hex}}``.

    Raises
    ------
    DataError
        A shard that is no partition's, or a record that does not list it.
    """
    plan = read_job(run_dir, storage_options)["plan"]["partitions"]
    parts = [PartitionFiles(run_dir, p, storage_options) for p in range(plan)]
    by_name = {storage.name(f.spectrograms): f for f in parts}

    def one(shard: str) -> tuple[str, dict]:
        files = by_name.get(shard)
        if files is None:
            raise DataError(f"the spectrogram index of {storage.redact(run_dir)} names {shard!r}, "
                            "which no partition writes: featurize again with overwrite")
        try:
            record = json.loads(storage.read_bytes(files.record, storage_options))
            entry = record["files"][files.name(files.spectrograms)]
            return shard, {"size": int(entry["size"]), "sha256": str(entry["sha256"])}
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            raise DataError(f"{storage.redact(files.record)} does not record {shard}: re-run the "
                            "same `fmadask featurize` command") from None

    with ThreadPoolExecutor(max_workers=16) as pool:     # round trips, not CPU
        return dict(pool.map(one, shards))


def segment_frames(seconds: float, params: dict) -> int:
    """Frames in a segment of ``seconds`` seconds: ``round(seconds * sr / hop_length)``, >= 1."""
    return max(1, int(round(seconds * params["sr"] / params["hop_length"])))


def eval_offsets(valid: int, seg: int) -> np.ndarray:
    """Start frames of the consecutive segments that cover ``valid`` frames.

    Segments are ``seg`` frames long and do not overlap, except the last, which is aligned to the
    end so no valid frame is left out. A clip shorter than a segment gets one segment at 0 (it
    then includes padding).

    Returns
    -------
    numpy.ndarray
        int64 offsets, ascending, at least one.
    """
    if valid <= seg:
        return np.zeros(1, dtype=np.int64)
    n = -(-valid // seg)  # ceil
    offsets = np.arange(n, dtype=np.int64) * seg
    offsets[-1] = valid - seg
    return offsets


def random_offsets(valid: np.ndarray, seg: int, seed: int, epoch: int) -> np.ndarray:
    """Uniformly drawn start frames of ``seg``-frame segments, one inside each clip's ``valid``
    frames (0 for a clip shorter than a segment).

    The draws of an epoch are made at once, for all clips, from ``(seed, epoch)``: item ``i`` gets
    the same offset on every rank and loader process, and a resumed run draws what the
    uninterrupted run would have. (One generator per item cost more than reading the segment.)

    Returns
    -------
    numpy.ndarray
        int64, the shape of ``valid``.
    """
    valid = np.asarray(valid, dtype=np.int64)
    rng = np.random.default_rng([seed, epoch])
    return rng.integers(0, np.maximum(valid - seg, 0) + 1, dtype=np.int64)


def normalisation(spec: Spectrograms, tracks: pd.DataFrame, max_tracks: int = 256,
                  seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation (the spectrogram's units, e.g. dB) of the valid frames.

    Estimated on at most ``max_tracks`` clips of ``tracks`` (a seeded choice), read through the
    memory map; used to standardise the net's input. Call it with the training tracks only.
    """
    if tracks.empty:
        raise DataError(f"no training tracks in {storage.redact(spec.root)}: the index has no "
                        "'training' rows")
    rng = np.random.default_rng(seed)
    chosen = tracks.iloc[np.sort(rng.permutation(len(tracks))[:max_tracks])]
    reader = ShardReader(spec.shards)
    total = total_sq = count = 0.0
    for row in chosen.itertuples(index=False):
        x = reader.read(row.shard, row.row, 0, max(1, row.frames)).astype(np.float64)
        total += x.sum()
        total_sq += np.square(x).sum()
        count += x.size
    mean = total / count
    std = float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))
    return float(mean), (std if std > 1e-6 else 1.0)


@dataclass(frozen=True)
class _OpenShard:
    """An open ``.npy`` shard: its file descriptor and the layout of its C-order array."""

    fd: int
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int        # bytes before the data: the .npy header

    def clip(self, row: int, offset: int, length: int) -> np.ndarray:
        """Frames ``[offset, offset + length)`` of every mel band of clip ``row`` (a copy, read
        from the page cache or the disk: nothing of the file stays mapped)."""
        _, n_mels, frames = self.shape
        length = max(0, min(length, frames - offset))
        if length == 0:
            return np.empty((n_mels, 0), self.dtype)
        size = self.dtype.itemsize
        # One read from the first band's segment to the last band's: the bands of a clip lie
        # one after another, ``frames`` apart.
        first = ((row * n_mels) * frames + offset) * size
        count = (n_mels - 1) * frames + length
        data = os.pread(self.fd, count * size, self.offset + first)
        if len(data) != count * size:
            raise DataError(f"spectrogram shard is shorter than its header says (clip {row})")
        flat = np.frombuffer(data, self.dtype)
        return np.lib.stride_tricks.as_strided(
            flat, (n_mels, length), (frames * size, size), writeable=False).copy()


def _open_npy(path: Path) -> _OpenShard:
    """Open a 3-d C-order ``.npy`` shard for reading (FileNotFoundError when it is not there)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        with os.fdopen(os.dup(fd), "rb") as fh:
            version = np.lib.format.read_magic(fh)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0(fh))
            offset = fh.tell()
        if fortran or len(shape) != 3 or dtype.hasobject:
            raise DataError(f"{path} is not a [tracks, n_mels, frames] spectrogram shard")
        return _OpenShard(fd, tuple(shape), dtype, offset)
    except BaseException:
        os.close(fd)
        raise


#: Shards a reader keeps open at once (the least recently used is closed): an index of
#: thousands of shards must not exhaust a process's file descriptors.
MAX_OPEN_SHARDS = 64


class ShardReader:
    """Reads segments out of ``.npy`` shards, opening each shard on first use in this process.

    Parameters
    ----------
    root : str, Path or ShardFiles
        A local ``RUN_DIR/spectrograms`` folder, or :attr:`Spectrograms.shards` (which also
        serves a run folder in object storage).

    The open files are not pickled: a copy sent to another process (a Dask worker, a DataLoader
    worker) opens its own lazily, and after a fork the child opens its own too.
    """

    def __init__(self, root: str | Path | ShardFiles):
        if not isinstance(root, ShardFiles):
            if storage.is_url(root):
                raise ValueError(f"{storage.redact(root)}: read the shards of a URL run folder "
                                 "through open_spectrograms(...).shards")
            root = ShardFiles(Path(root))
        self.files = root
        self._maps: OrderedDict[str, _OpenShard] = OrderedDict()   # least recently used first
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        return {"files": self.files}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["files"])

    def __del__(self) -> None:
        self._close_all()

    def _close_all(self) -> None:
        for opened in getattr(self, "_maps", {}).values():
            os.close(opened.fd)
        self._maps = OrderedDict()

    def _array(self, shard: str) -> _OpenShard:
        if self._pid != os.getpid():  # forked: the parent's files are not ours to share
            self._close_all()         # (our copies of its descriptors)
            self._pid = os.getpid()
        opened = self._maps.get(shard)
        if opened is None:
            if len(self._maps) >= MAX_OPEN_SHARDS:
                os.close(self._maps.popitem(last=False)[1].fd)
            opened = self._maps[shard] = self._open(shard)
        self._maps.move_to_end(shard)
        return opened

    def _open(self, shard: str) -> _OpenShard:
        for attempt in range(2):
            path = self.files.path(shard)
            try:
                # Open, the file stays readable if another process evicts it from the cache.
                return _open_npy(Path(path))
            except FileNotFoundError:
                # A cached copy another process evicted after it was fetched: fetch it again.
                if self.files.cache is None or attempt:
                    raise DataError(f"spectrogram shard {path} is missing: "
                                    "re-run `fmadask featurize` for this run directory") from None
        raise AssertionError("unreachable")

    def read(self, shard: str, row: int, offset: int, length: int) -> np.ndarray:
        """Frames ``[offset, offset + length)`` of clip ``row`` of ``shard``.

        Returns float16 ``(n_mels, length)``.

        A clip shorter than ``offset + length`` frames (in the padded array) is zero-padded.
        """
        out = self._array(shard).clip(row, offset, length)
        if out.shape[1] < length:
            out = np.pad(out, ((0, 0), (0, length - out.shape[1])))
        return out


class SegmentDataset(Dataset):
    """Fixed-length log-mel segments of the clips of one split.

    Parameters
    ----------
    root : str, Path or ShardFiles
        A local ``RUN_DIR/spectrograms`` folder, or :attr:`Spectrograms.shards` (any run folder,
        local or in object storage).
    tracks : pandas.DataFrame
        Index rows (``track_id, shard, row, frames, genre_top``) of the clips to serve.
    classes : list of str
        Genre names in the net's output order; ``genre_top`` is mapped to its position.
    seg : int
        Segment length in frames (see :func:`segment_frames`).
    train : bool
        True: ``crops`` items per clip, each a random segment drawn anew every epoch (call
        :meth:`set_epoch`). False: one item per segment, consecutive segments covering each clip.
    mean, std : float
        Standardisation of the input, ``(x - mean) / std``.
    seed : int
        Seed of the random segment offsets.
    crops : int
        Random segments per clip and epoch in training (more crops: more of each clip seen per
        epoch, at the cost of a longer epoch).
    targets : numpy.ndarray, optional
        Each clip's target, in the order of ``tracks`` (:meth:`fmadask.dl.task.Task.targets`:
        class indices, or float32 0/1 rows for the multi-label task); default: ``genre_top``
        mapped to its position in ``classes``.

    Items are ``(x, label, track_id)``: ``x`` float32 tensor ``(1, n_mels, seg)``, ``label`` int64
    (or a float32 tensor ``(k,)`` of 0/1 labels), ``track_id`` int64.
    """

    def __init__(self, root: str | Path | ShardFiles, tracks: pd.DataFrame, classes: list[str],
                 seg: int, train: bool, mean: float = 0.0, std: float = 1.0, seed: int = 0,
                 crops: int = 1, targets: np.ndarray | None = None):
        if targets is None:
            lookup = {c: i for i, c in enumerate(classes)}
            unknown = sorted(set(tracks["genre_top"]) - set(lookup))
            if unknown:
                raise DataError(f"genres {unknown} of the spectrogram index are not among the "
                                f"model's classes {classes}")
            targets = tracks["genre_top"].map(lookup).to_numpy(dtype=np.int64)
        self.reader = ShardReader(root)
        self.seg, self.train, self.seed = int(seg), bool(train), int(seed)
        self.mean, self.std = float(mean), float(std)
        self.epoch = 0
        self._shard = tracks["shard"].to_numpy(dtype=object)
        self._row = tracks["row"].to_numpy(dtype=np.int64)
        self._valid = tracks["frames"].to_numpy(dtype=np.int64)
        self._track_id = tracks["track_id"].to_numpy(dtype=np.int64)
        self._label = np.asarray(targets)
        if self.train:
            # Clip i's crops are items i, i + n, i + 2n ...: one crop keeps the items (and the
            # offsets drawn for them) of the one-crop dataset.
            self._clip = np.tile(np.arange(len(tracks), dtype=np.int64), int(crops))
            self._offset = random_offsets(self._valid[self._clip], self.seg, self.seed, self.epoch)
        else:
            per_clip = [eval_offsets(int(v), self.seg) for v in self._valid]
            self._clip = np.repeat(np.arange(len(tracks), dtype=np.int64),
                                   [len(o) for o in per_clip])
            self._offset = (np.concatenate(per_clip) if per_clip
                            else np.zeros(0, dtype=np.int64))

    def set_epoch(self, epoch: int) -> None:
        """Draw the training segments of ``epoch`` (no effect on evaluation items)."""
        self.epoch = int(epoch)
        if self.train:
            self._offset = random_offsets(self._valid[self._clip], self.seg, self.seed, self.epoch)

    def __len__(self) -> int:
        return len(self._clip)

    @property
    def track_ids(self) -> np.ndarray:
        """Track id of every item, int64 ``(len(self),)``."""
        return self._track_id[self._clip]

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int, int]:
        clip = int(self._clip[item])
        x = self.reader.read(self._shard[clip], int(self._row[clip]), int(self._offset[item]),
                             self.seg)
        x = np.subtract(x, self.mean, dtype=np.float32)
        x /= self.std
        # plain ints: the loader's collation makes int64 tensors of a batch at once
        label = self._label[clip]
        label = int(label) if label.ndim == 0 else torch.from_numpy(label)
        return torch.from_numpy(x).unsqueeze(0), label, int(self._track_id[clip])


def standardise_clip(spec: np.ndarray, valid: int, seg: int, mean: float, std: float) -> np.ndarray:
    """Evaluation segments of one clip as a batch, the same cut as :class:`SegmentDataset`.

    Parameters
    ----------
    spec : numpy.ndarray
        ``(n_mels, frames)`` log-mel spectrogram of one clip (padded).
    valid : int
        Its valid frames.

    Returns
    -------
    numpy.ndarray
        float32 ``(n_segments, 1, n_mels, seg)``.
    """
    segs = []
    for off in eval_offsets(valid, seg):
        x = np.asarray(spec[:, off:off + seg], dtype=np.float32)
        if x.shape[1] < seg:
            x = np.pad(x, ((0, 0), (0, seg - x.shape[1])))
        segs.append((x - mean) / std)
    return np.stack(segs)[:, None]


def prefetch(batches: Iterable[T], depth: int = 4) -> Iterator[T]:
    """Iterate ``batches`` in a background thread, up to ``depth`` items ahead.

    A GPU rank inside a Dask worker loads its batches in-process (a daemonic process may not start
    DataLoader processes), so without this the GPU waits for every batch to be read; with it, the
    next batches are read while the GPU computes. An exception of the loader is raised here, in
    the consumer; a consumer that stops early stops the thread.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in batches:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as exc:  # handed to the consumer
            put((end, exc))

    thread = threading.Thread(target=produce, name="fmadask-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = items.get()
            if exc is not None:
                raise exc
            if item is end:
                return
            yield item
    finally:
        stop.set()
        thread.join()
