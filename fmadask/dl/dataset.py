"""Segments of log-mel spectrograms read from the featurize job's memory-mapped shards.

The featurize job writes ``RUN_DIR/spectrograms/part-XXXXX.npy`` (float16, ``[tracks, n_mels,
frames]``, each clip padded to a fixed number of frames) with an index
``spectrograms/index/part-XXXXX.parquet`` (``track_id, shard, row, frames, genre_top, split``) and
``spectrograms/params.json``. Nothing here loads a whole shard: each process maps the shards it
touches (``np.load(mmap_mode='r')``) on first use and copies one segment per item.

Training items are clips, each yielding one random fixed-length segment inside its valid frames
(a new segment every epoch, drawn from ``(seed, epoch, item)`` so any rank or loader process
draws the same one). Evaluation items are segments: consecutive segments covering each clip, the
last one aligned to the clip's end, so every valid frame is seen and the track id is kept for
voting.
"""
from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from fmadask.errors import DataError

T = TypeVar("T")
from fmadask.pipeline.rundir import SPECTROGRAMS_DIR, read_mel_params, read_spectrogram_index


@dataclass(frozen=True)
class Spectrograms:
    """The spectrogram shards of a run directory.

    Attributes
    ----------
    root : Path
        ``RUN_DIR/spectrograms``.
    params : dict
        ``params.json``: the ``MelParams`` fields (``sr`` in Hz, ``hop_length`` in samples,
        ``n_mels`` ...), the fixed ``frames`` per clip, the ``pad`` policy and the decoder.
    index : pandas.DataFrame
        One row per clip: ``track_id`` (int64), ``shard`` (file name), ``row`` (int), ``frames``
        (valid, unpadded frames), ``genre_top`` (str), ``split`` (str), sorted by track id.
    """

    root: Path
    params: dict
    index: pd.DataFrame

    @property
    def classes(self) -> list[str]:
        """The genres of the index, sorted: the net's output order."""
        return sorted(self.index["genre_top"].unique().tolist())

    def tracks(self, split: str) -> pd.DataFrame:
        """Index rows of one split (``'training'``, ``'validation'`` or ``'test'``)."""
        return self.index[self.index["split"] == split].reset_index(drop=True)


def open_spectrograms(run_dir: str | Path) -> Spectrograms:
    """Read the index and parameters of ``RUN_DIR/spectrograms`` (the arrays stay on disk).

    Only complete partitions of a finished featurize run are read (the pipeline's readers).

    Raises
    ------
    DataError
        When there is no run, no spectrograms in it, or unfinished partitions.
    """
    params = read_mel_params(run_dir)
    index = read_spectrogram_index(run_dir).reset_index()
    if index.empty:
        raise DataError(f"the spectrogram index of {run_dir} is empty: no track was featurized")
    return Spectrograms(root=Path(run_dir) / SPECTROGRAMS_DIR, params=params, index=index)


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
        raise DataError(f"no training tracks in {spec.root}: the index has no 'training' rows")
    rng = np.random.default_rng(seed)
    chosen = tracks.iloc[np.sort(rng.permutation(len(tracks))[:max_tracks])]
    reader = ShardReader(spec.root)
    total = total_sq = count = 0.0
    for row in chosen.itertuples(index=False):
        x = reader.read(row.shard, row.row, 0, max(1, row.frames)).astype(np.float64)
        total += x.sum()
        total_sq += np.square(x).sum()
        count += x.size
    mean = total / count
    std = float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))
    return float(mean), (std if std > 1e-6 else 1.0)


class ShardReader:
    """Reads segments out of ``.npy`` shards, mapping each shard on first use in this process.

    The maps are not pickled: a copy sent to another process (a Dask worker, a DataLoader worker)
    opens its own maps lazily, and after a fork the child re-opens them.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._maps: dict[str, np.ndarray] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        return {"root": self.root}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"])

    def _array(self, shard: str) -> np.ndarray:
        if self._pid != os.getpid():  # forked: maps of the parent are not ours to share
            self._maps, self._pid = {}, os.getpid()
        arr = self._maps.get(shard)
        if arr is None:
            path = self.root / shard
            try:
                arr = np.load(path, mmap_mode="r")
            except FileNotFoundError:
                raise DataError(f"spectrogram shard {path} is missing: "
                                "re-run `fmadask featurize` for this run directory") from None
            self._maps[shard] = arr
        return arr

    def read(self, shard: str, row: int, offset: int, length: int) -> np.ndarray:
        """Frames ``[offset, offset + length)`` of clip ``row`` of ``shard``.

        Returns float16 ``(n_mels, length)``.

        A clip shorter than ``offset + length`` frames (in the padded array) is zero-padded.
        """
        arr = self._array(shard)
        out = np.asarray(arr[row, :, offset:offset + length])
        if out.shape[1] < length:
            out = np.pad(out, ((0, 0), (0, length - out.shape[1])))
        return out


class SegmentDataset(Dataset):
    """Fixed-length log-mel segments of the clips of one split.

    Parameters
    ----------
    root : str or Path
        ``RUN_DIR/spectrograms``.
    tracks : pandas.DataFrame
        Index rows (``track_id, shard, row, frames, genre_top``) of the clips to serve.
    classes : list of str
        Genre names in the net's output order; ``genre_top`` is mapped to its position.
    seg : int
        Segment length in frames (see :func:`segment_frames`).
    train : bool
        True: one item per clip, a random segment per epoch (call :meth:`set_epoch`).
        False: one item per segment, consecutive segments covering each clip.
    mean, std : float
        Standardisation of the input, ``(x - mean) / std``.
    seed : int
        Seed of the random segment offsets.

    Items are ``(x, label, track_id)``: ``x`` float32 tensor ``(1, n_mels, seg)``, ``label`` int64,
    ``track_id`` int64.
    """

    def __init__(self, root: str | Path, tracks: pd.DataFrame, classes: list[str], seg: int,
                 train: bool, mean: float = 0.0, std: float = 1.0, seed: int = 0):
        lookup = {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(tracks["genre_top"]) - set(lookup))
        if unknown:
            raise DataError(f"genres {unknown} of the spectrogram index are not among the "
                            f"model's classes {classes}")
        self.reader = ShardReader(root)
        self.seg, self.train, self.seed = int(seg), bool(train), int(seed)
        self.mean, self.std = float(mean), float(std)
        self.epoch = 0
        self._shard = tracks["shard"].to_numpy(dtype=object)
        self._row = tracks["row"].to_numpy(dtype=np.int64)
        self._valid = tracks["frames"].to_numpy(dtype=np.int64)
        self._track_id = tracks["track_id"].to_numpy(dtype=np.int64)
        self._label = tracks["genre_top"].map(lookup).to_numpy(dtype=np.int64)
        if self.train:
            self._clip = np.arange(len(tracks), dtype=np.int64)
            self._offset = random_offsets(self._valid, self.seg, self.seed, self.epoch)
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
            self._offset = random_offsets(self._valid, self.seg, self.seed, self.epoch)

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
        return torch.from_numpy(x).unsqueeze(0), int(self._label[clip]), int(self._track_id[clip])


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
