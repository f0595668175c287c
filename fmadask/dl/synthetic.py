"""A synthetic run directory of spectrogram shards in the featurize job's exact on-disk format.

For tests and benchmarks of the CNN stage that should not depend on decoding audio: each genre
gets a learnable pattern (a band of energy at a genre-specific height pulsing at a genre-specific
rate) buried in noise, and clips have varied valid lengths. The layout is the featurize job's
(:mod:`fmadask.runfolder`), written with its schemas and atomic writers, so the pipeline's
readers accept it: ``spectrograms/part-XXXXX.npy`` float16 ``[n, n_mels, frames]``,
``spectrograms/index/part-XXXXX.parquet``, ``spectrograms/params.json``, the (empty) errors parts
that mark partitions complete, and a ``featurize.json`` naming the plan.

:func:`write_synthetic_multilabel` writes the multi-label variant (``genres_all``): a small genre
tree, clips of one or two top-level genres, with or without a sub-genre, and the run's
``labels.parquet`` and ``genres.parquet``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from fmadask.atomic import atomic_path, write_json, write_parquet
from fmadask.runfolder import (JOB_FILE, MEL_PARAMS_FILE, PartitionFiles, errors_schema,
                               index_schema)
from fmadask.runlabels import write_labels

GENRES = ("Electronic", "Experimental", "Folk", "Hip-Hop", "Instrumental", "International",
          "Pop", "Rock")


def synthetic_clip(genre: int, n_mels: int, frames: int, valid: int,
                   rng: np.random.Generator, noise: float = 6.0) -> np.ndarray:
    """One synthetic log-mel clip in dB, float16 ``(n_mels, frames)``, padded with -80 dB."""
    n_genres = len(GENRES)
    spec = np.full((n_mels, frames), -80.0, dtype=np.float32)
    mel = np.arange(n_mels)[:, None]
    t = np.arange(valid)[None, :]
    centre = (genre + 0.5) / n_genres * n_mels + rng.normal(0, n_mels / (8 * n_genres))
    band = np.exp(-0.5 * ((mel - centre) / max(1.0, n_mels / 24)) ** 2)
    period = 4 + 2 * genre  # frames
    pulse = 0.5 + 0.5 * np.cos(2 * np.pi * (t + rng.integers(period)) / period)
    clip = -60.0 + 40.0 * band * pulse + rng.normal(0, noise, size=(n_mels, valid))
    spec[:, :valid] = np.clip(clip, -80.0, 0.0)
    return spec.astype(np.float16)


#: The multi-label set's genre tree: (genre id, title, parent id); a sub-genre pulses faster
#: than its parent.
GENRE_TREE = ((1, "Electronic", 0), (2, "Folk", 0), (3, "Rock", 0), (4, "Hip-Hop", 0),
              (11, "Techno", 1), (12, "Freak-Folk", 2), (13, "Punk", 3))


def multilabel_clip(tops: list[int], sub: bool, n_mels: int, frames: int, valid: int,
                    rng: np.random.Generator, noise: float = 6.0) -> np.ndarray:
    """A clip of the multi-label set, float16 ``(n_mels, frames)`` in dB, padded with -80 dB.

    Each top-level genre of ``tops`` (indices 0-3) is a band at its own height; the first's
    band pulses every 3 frames with its sub-genre (``sub``), else every 9.
    """
    spec = np.full((n_mels, frames), -80.0, dtype=np.float32)
    mel = np.arange(n_mels)[:, None]
    t = np.arange(valid)[None, :]
    clip = -60.0 + rng.normal(0, noise, size=(n_mels, valid))
    for i, top in enumerate(tops):
        centre = (top + 0.5) / 4 * n_mels + rng.normal(0, n_mels / 32)
        band = np.exp(-0.5 * ((mel - centre) / max(1.0, n_mels / 20)) ** 2)
        period = 3 if sub and i == 0 else 9
        clip += 40.0 * band * (0.5 + 0.5 * np.cos(2 * np.pi * (t + rng.integers(period))
                                                  / period))
    spec[:, :valid] = np.clip(clip, -80.0, 0.0)
    return spec.astype(np.float16)


def write_synthetic_multilabel(run_dir: str | Path, tracks_per_genre: int = 24,
                               n_mels: int = 32, seconds: float = 4.0, sr: int = 22050,
                               hop_length: int = 512, tracks_per_shard: int = 16,
                               seed: int = 0) -> Path:
    """Write a learnable multi-label spectrogram set into ``RUN_DIR``.

    Per top-level genre of :data:`GENRE_TREE`, ``tracks_per_genre`` clips: half with its
    sub-genre (Hip-Hop has none), and one in four also carries the next top-level genre (and
    so no ``genre_top``, as half of FMA large). Splits 60/20/20 per genre. Writes the spectrogram
    shards and index as :func:`write_synthetic_spectrograms` does, and the run's labels and
    genre tree (:func:`fmadask.runlabels.write_labels`).

    Returns
    -------
    Path
        ``RUN_DIR/spectrograms``.
    """
    run_dir = Path(run_dir)
    rng = np.random.default_rng(seed)
    frames = 1 + int(seconds * sr // hop_length)
    titles = {g: title for g, title, _ in GENRE_TREE}
    subs = {parent: g for g, _, parent in GENRE_TREE if parent}
    tops = [g for g, _, parent in GENRE_TREE if not parent]
    rows = []
    for i, top in enumerate(tops):
        for k in range(tracks_per_genre):
            split = ("training" if k < 0.6 * tracks_per_genre else
                     "validation" if k < 0.8 * tracks_per_genre else "test")
            chosen = [i] + ([(i + 1) % len(tops)] if k % 4 == 3 else [])
            sub = top in subs and k % 2 == 0
            ids = sorted({tops[j] for j in chosen} | ({subs[top]} if sub else set()))
            genre_top = titles[top] if len(chosen) == 1 else None
            rows.append((1000 * (i + 1) + k, chosen, sub, ids, genre_top, split))
    shards = [_Row(r[0], r[4], r[5], lambda v, g, r=r: multilabel_clip(r[1], r[2], n_mels, frames,
                                                                       v, g)) for r in rows]
    partitions = _write_shards(run_dir, shards, tracks_per_shard, frames, 0.5, rng)
    write_labels(run_dir, [(r[0], r[4], r[3]) for r in sorted(rows)],
                 [(g, title, parent, parent or g) for g, title, parent in GENRE_TREE])
    _write_records(run_dir, partitions, (sr, hop_length, n_mels, seconds, frames),
                   target="genres_all")
    return run_dir / "spectrograms"


def write_synthetic_spectrograms(run_dir: str | Path, tracks_per_genre: int = 8,
                                 n_mels: int = 32, seconds: float = 6.0, sr: int = 22050,
                                 hop_length: int = 512, tracks_per_shard: int = 16,
                                 splits: tuple[float, float, float] = (0.6, 0.2, 0.2),
                                 seed: int = 0) -> Path:
    """Write a learnable spectrogram set of 8 genres into ``RUN_DIR/spectrograms``.

    Parameters
    ----------
    run_dir : str or Path
        Run directory (created).
    tracks_per_genre : int
        Clips per genre; each genre is split into training/validation/test by ``splits``.
    n_mels : int
        Mel bands.
    seconds : float
        Fixed clip length; ``frames = 1 + floor(seconds * sr / hop_length)`` as a centred STFT
        gives. About one clip in five is shorter (40-90 % valid frames).
    sr, hop_length : int
        Sample rate (Hz) and hop (samples) recorded in ``params.json``.
    tracks_per_shard : int
        Clips per ``part-XXXXX.npy`` shard.

    Returns
    -------
    Path
        ``RUN_DIR/spectrograms``.
    """
    run_dir = Path(run_dir)
    rng = np.random.default_rng(seed)
    frames = 1 + int(seconds * sr // hop_length)
    n_train = max(1, int(round(splits[0] * tracks_per_genre)))
    n_val = max(1, int(round(splits[1] * tracks_per_genre)))
    rows = []
    for g, genre in enumerate(GENRES):
        for k in range(tracks_per_genre):
            split = "training" if k < n_train else "validation" if k < n_train + n_val else "test"
            rows.append((1000 * (g + 1) + k, g, genre, split))
    shards = [_Row(tid, genre, split, lambda v, r, g=g: synthetic_clip(g, n_mels, frames, v, r))
              for tid, g, genre, split in rows]
    partitions = _write_shards(run_dir, shards, tracks_per_shard, frames, 0.4, rng)
    _write_records(run_dir, partitions, (sr, hop_length, n_mels, seconds, frames))
    return run_dir / "spectrograms"


@dataclass(frozen=True)
class _Row:
    """One synthetic track: its id, ``genre_top`` (None: none), split, and how its log-mel is
    drawn (``clip(valid_frames, rng)``)."""

    track_id: int
    genre_top: str | None
    split: str
    clip: Callable[[int, np.random.Generator], np.ndarray]


def _write_shards(run_dir: Path, rows: list[_Row], tracks_per_shard: int, frames: int,
                  shortest: float, rng: np.random.Generator) -> int:
    """Write ``rows`` as the featurize job would (shards, index and errors parts, each
    partition's completion record), in a random order so that partitions mix genres and splits;
    about one clip in five keeps only ``shortest``-90 % of its frames. Returns the number of
    partitions."""
    order = rng.permutation(len(rows))
    starts = range(0, len(rows), tracks_per_shard)
    for part, start in enumerate(starts):
        files = PartitionFiles(run_dir, part)
        chosen = [rows[i] for i in order[start:start + tracks_per_shard]]
        valids = [frames if rng.random() > 0.2 else int(frames * rng.uniform(shortest, 0.9))
                  for _ in chosen]
        arr = np.stack([r.clip(v, rng) for r, v in zip(chosen, valids)])
        with atomic_path(files.spectrograms) as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr)
        write_parquet(pa.table({"track_id": [r.track_id for r in chosen],
                                "shard": [files.spectrograms.name] * len(chosen),
                                "row": list(range(len(chosen))), "frames": valids,
                                "genre_top": [r.genre_top for r in chosen],
                                "split": [r.split for r in chosen]}, schema=index_schema()),
                      files.index)
        write_parquet(errors_schema().empty_table(), files.errors)
        files.write_record(("spectrograms",))       # complete, as the featurize job marks it
    return len(starts)


def _write_records(run_dir: Path, partitions: int, mel: tuple[int, int, int, float, int],
                   **job: str) -> None:
    """``spectrograms/params.json`` and ``featurize.json`` of a synthetic run; ``mel`` is
    (sr, hop_length, n_mels, seconds, frames), ``job`` extra parameters (``target``)."""
    sr, hop_length, n_mels, seconds, frames = mel
    write_json({"sr": sr, "n_fft": 4 * hop_length, "hop_length": hop_length, "n_mels": n_mels,
                "seconds": seconds, "top_db": 80.0, "frames": frames, "dtype": "float16",
                "decode_sr": sr, "decoders": ["synthetic"]}, run_dir / MEL_PARAMS_FILE)
    write_json({"params": {"what": ["spectrograms"], "synthetic": True, **job},
                "plan": {"partitions": partitions}}, run_dir / JOB_FILE)
