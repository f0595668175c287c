"""An FMA-large-shaped data set of any size, cheap to write: for measuring how fmadask scales.

FMA large is 106,574 clips of 30 s (about 100 GB); whether a stage scales to it is a question of
track counts, labels and file layout more than of the music. :func:`make_large_sample` writes FMA
large's shape at any size with the sample's writers (:mod:`fmadask.fma.sample`):

- ``fma_metadata/tracks.csv`` (FMA's 52 columns) and ``genres.csv``: 161 genres under FMA's 16
  real top-level genres (their ids and titles; the 145 sub-genres are the sample's own, up to
  three levels deep);
- FMA's label shape (the counts of :data:`TOP_GENRES`, scaled to the size asked for): the small
  subset is FMA small's 8 genres in equal parts, medium and large add tracks in the
  proportions of their ``genre_top`` in FMA, and 53 % of the tracks have no ``genre_top``: they
  list genres under several top-level genres (2 to 4, so that every top-level genre appears in
  ``genres_all`` about as often as its ``#tracks`` in FMA's genres.csv says), or none at all;
- subsets nested small ⊂ medium ⊂ large, each with an 80/10/10 split stratified by genre (the
  ``('set', 'split')`` column; FMA's own is 79/10/11 on large);
- audio in ``fma_small/``, ``fma_medium/`` and ``fma_large/`` (FMA's layout, each holding its
  subset and the smaller ones): a pool of a few hundred distinct short clips, each hard-linked
  (copied where the file system refuses a link) under many track ids; a track of one of the
  sample's eight genres gets a clip of that genre, the others any clip;
- FMA's defects at their rates in FMA small (mdeff/fma#8, #41): 3 clips in 8,000 with no audio
  at all, 6 far shorter than the rest, plus one truncated file in 8,000 (at least one of each).
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fmadask.fma.layout import METADATA_DIR, SUBSETS, audio_dir, audio_relpath
from fmadask.fma.sample import (_ID3_ONLY, RECIPES, _Clip, _claim, _record, _split_of,
                                _start_replacing, _track_row, _write_clips, write_metadata)
from fmadask.lock import RunLock

#: Tracks of FMA large, medium and small.
LARGE_TRACKS, MEDIUM_TRACKS, SMALL_TRACKS = 106_574, 25_000, 8_000


@dataclass(frozen=True)
class TopGenre:
    """One of FMA's 16 top-level genres and its track counts in FMA."""

    genre_id: int
    title: str
    medium: int        # tracks with it as genre_top in fma_medium (small included)
    large: int         # ... in fma_large (medium included)
    tracks: int        # tracks with it in genres_all: its '#tracks' in FMA's genres.csv


#: FMA's top-level genres with their counts (FMA's genres.csv and tracks.csv).
TOP_GENRES: tuple[TopGenre, ...] = (
    TopGenre(38, "Experimental", 2251, 10608, 38154),
    TopGenre(15, "Electronic", 6314, 9372, 34413),
    TopGenre(12, "Rock", 7103, 14182, 32923),
    TopGenre(1235, "Instrumental", 1350, 2079, 14938),
    TopGenre(10, "Pop", 1186, 2332, 13845),
    TopGenre(17, "Folk", 1519, 2803, 12706),
    TopGenre(21, "Hip-Hop", 2201, 3552, 8389),
    TopGenre(2, "International", 1018, 1389, 5271),
    TopGenre(4, "Jazz", 384, 571, 4126),
    TopGenre(5, "Classical", 619, 1230, 4106),
    TopGenre(9, "Country", 178, 194, 1987),
    TopGenre(20, "Spoken", 118, 423, 1876),
    TopGenre(3, "Blues", 74, 110, 1752),
    TopGenre(14, "Soul-RnB", 154, 175, 1499),
    TopGenre(8, "Old-Time / Historic", 510, 554, 868),
    TopGenre(13, "Easy Listening", 21, 24, 730),
)
#: Genres of FMA's genres.csv, top-level ones included.
N_GENRES = 161
#: Tracks of FMA large that list no genre at all.
NO_GENRE_TRACKS = 2_231
#: How many top-level genres a track without a genre_top (and with some genre) lists: 2, 3 or 4
#: with these chances, so their top-level genres appear as often as FMA's genres.csv counts.
ROOTS_PER_MIXED_TRACK = {2: 0.72, 3: 0.22, 4: 0.06}
#: Defective files per 8,000 tracks: no audio (0 bytes or only an ID3 tag), far too short,
#: truncated.
DEFECTS_PER_8000 = {"empty": 3, "short": 6, "truncated": 1}
#: Length of a short defect, as fractions of the pool's clip length (FMA small's sample).
_SHORT_FRACTIONS = (0.25, 0.5, 0.8)


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split in proportion to ``weights`` by largest remainders (the parts sum to it).

    Examples
    --------
    >>> apportion(10, [1, 1, 1])
    [4, 3, 3]
    """
    w = np.asarray(weights, dtype=float)
    exact = total * w / w.sum()
    parts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - parts), kind="stable")[: total - int(parts.sum())]:
        parts[i] += 1
    return [int(p) for p in parts]


def genre_tree_table() -> pd.DataFrame:
    """genres.csv rows (``#tracks`` left 0): FMA's 16 top-level genres and 145 sub-genres.

    Each top-level genre gets sub-genres in proportion to the square root of its tracks (at least
    two); the first half of them are its children, each of the others a child of one of those,
    so the tree is three levels deep like FMA's (Rock > Metal > Black-Metal).
    """
    children = apportion(N_GENRES - len(TOP_GENRES), [np.sqrt(t.tracks) for t in TOP_GENRES])
    rows = []
    next_id = 5000
    for top, count in zip(TOP_GENRES, children):
        rows.append((top.genre_id, 0, top.title, top.genre_id))
        first = next_id
        direct = max(1, count // 2)
        for j in range(count):
            parent = top.genre_id if j < direct else first + (j - direct) % direct
            rows.append((next_id, parent, f"{top.title} {j + 1}", top.genre_id))
            next_id += 1
    table = pd.DataFrame(rows, columns=["genre_id", "parent", "title", "top_level"])
    table.insert(1, "#tracks", 0)
    return table.set_index("genre_id")


@dataclass(frozen=True)
class _Track:
    """A track of the data set before its row is written."""

    subset: str
    genre_top: TopGenre | None
    roots: tuple[TopGenre, ...]    # top-level genres its genres fall under


def _label_tracks(n: int, rng: np.random.Generator) -> list[_Track]:
    """The tracks of an ``n``-track data set: subsets and labels in FMA large's proportions."""
    scale = n / LARGE_TRACKS
    n_small = round(SMALL_TRACKS * scale)
    n_medium = max(n_small, round(MEDIUM_TRACKS * scale))
    n_top = max(n_medium, round(sum(t.large for t in TOP_GENRES) * scale))
    n_none = round(NO_GENRE_TRACKS * scale)
    small = {r.title for r in RECIPES}
    per_small = SMALL_TRACKS // len(small)
    tracks: list[_Track] = []

    def add(subset: str, count: int, weights: list[float]) -> None:
        for top, k in zip(TOP_GENRES, apportion(count, weights)):
            tracks.extend([_Track(subset, top, (top,))] * k)

    add("small", n_small, [1.0 if t.title in small else 0.0 for t in TOP_GENRES])
    add("medium", n_medium - n_small,
        [t.medium - (per_small if t.title in small else 0) for t in TOP_GENRES])
    add("large", n_top - n_medium, [t.large - t.medium for t in TOP_GENRES])
    # Tracks without a genre_top: their top-level genres drawn so that, with the tracks above,
    # each appears about as often as in FMA (what is left of its '#tracks' after its genre_top).
    left = np.array([t.tracks - t.large for t in TOP_GENRES], dtype=float)
    sizes = list(ROOTS_PER_MIXED_TRACK)
    chances = list(ROOTS_PER_MIXED_TRACK.values())
    for i in range(n - n_top):
        if i < n_none:
            tracks.append(_Track("large", None, ()))
            continue
        k = int(rng.choice(sizes, p=chances))
        picked = rng.choice(len(TOP_GENRES), size=k, replace=False, p=left / left.sum())
        tracks.append(_Track("large", None, tuple(TOP_GENRES[j] for j in sorted(picked))))
    return tracks


def _splits(tracks: list[_Track], rng: np.random.Generator) -> list[str]:
    """80/10/10 per subset and genre (tracks without a genre_top form one group per subset):
    each track keeps its split in the bigger subsets, as in FMA."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, t in enumerate(tracks):
        groups.setdefault((t.subset, t.genre_top.title if t.genre_top else ""), []).append(i)
    split = [""] * len(tracks)
    for members in groups.values():
        for rank, i in enumerate(rng.permutation(members)):
            split[i] = _split_of(rank, len(members))
    return split


def _link(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source``; a copy where the file system refuses links
    (another device, no link support, too many links to one file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)     # an earlier sample's file
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def make_large_sample(out_dir: str | Path, tracks: int = LARGE_TRACKS, clips: int = 300,
                      seconds: float = 2.0, seed: int = 0, force: bool = False,
                      processes: int = 0) -> Path:
    """Write an FMA-large-shaped data set of ``tracks`` tracks to ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Created if needed; receives ``fma_metadata/``, ``fma_small/``, ``fma_medium/`` and
        ``fma_large/``. Only a new, empty or earlier sample folder is used (unless ``force``).
    tracks : int
        Tracks in the large subset (FMA large: 106,574); at least 100.
    clips : int
        Distinct good clips in the audio pool (at most one per track).
    seconds : float
        Duration of a pool clip in seconds (at least 1, the shortest audio fmadask featurizes).
    seed : int
        The same seed writes the same data set.
    force : bool
        Write into a folder that holds other files (see :func:`fmadask.fma.sample.make_sample`).
    processes : int
        Processes synthesising the pool (0: one per core).

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    if tracks < 100:
        raise ValueError(f"tracks must be at least 100, not {tracks}")
    if not 1 <= clips <= tracks:
        raise ValueError(f"clips must be between 1 and tracks ({tracks}), not {clips}")
    if not seconds >= 1.0:
        raise ValueError(f"seconds must be at least 1, not {seconds}")
    out = Path(out_dir)
    with RunLock(out, "fmadask sample"):          # one writer per folder, as make_sample
        _write_large(out, _claim(out, force), tracks, clips, seconds, seed, processes)
    return out


def _write_large(out: Path, earlier: set[str], tracks: int, clips: int, seconds: float,
                 seed: int, processes: int) -> None:
    """Write the data set into ``out`` (claimed and locked), replacing the files ``earlier`` (an
    earlier sample's record) names."""
    rng = np.random.default_rng(seed)
    genres = genre_tree_table()
    parents = {int(g): int(p) for g, p in genres["parent"].items()}
    under = {int(t.genre_id): [g for g in genres.index[genres["top_level"] == t.genre_id]]
             for t in TOP_GENRES}
    labelled = _label_tracks(tracks, rng)
    order = rng.permutation(len(labelled))          # subsets spread over the id range, as in FMA
    labelled = [labelled[i] for i in order]
    splits = _splits(labelled, rng)
    # FMA's ids run from 2 to 155,320 with gaps: about 1.46 ids per track.
    ids = np.sort(rng.choice(np.arange(2, int(tracks * 1.46) + 2), size=tracks, replace=False))

    rows: dict[int, dict] = {}
    for tid, track, split in zip(ids.tolist(), labelled, splits):
        # A track of one top-level genre lists one of its genres (now and then two); a mixed
        # track one genre under each of its top-level genres.
        genre_ids = [int(rng.choice(under[r.genre_id])) for r in track.roots]
        if track.genre_top is not None and rng.random() < 0.3:
            genre_ids.append(int(rng.choice(under[track.genre_top.genre_id])))
        top = track.genre_top.title if track.genre_top else None
        rows[tid] = _track_row(tid, sorted(set(genre_ids)), top, track.subset, split,
                               30.0, parents, rng)

    # Audio: defective files first (each its own), then the pool, linked under every other id.
    n_defects = {kind: max(1, round(tracks * per / SMALL_TRACKS))
                 for kind, per in DEFECTS_PER_8000.items()}
    defective = rng.choice(tracks, size=sum(n_defects.values()), replace=False)
    kinds = [k for k, n in n_defects.items() for _ in range(n)]
    defect_of = {int(ids[i]): kind for i, kind in zip(defective, kinds)}
    folders = {subset: Path(audio_dir(out, subset)) for subset in SUBSETS}
    large = [folders["large"] / audio_relpath(tid) for tid in ids.tolist()]
    copies = [folders[subset] / audio_relpath(tid) for subset in SUBSETS[:-1]
              for tid, track in zip(ids.tolist(), labelled)
              if SUBSETS.index(track.subset) <= SUBSETS.index(subset)]
    written = {p.relative_to(out).as_posix() for p in [*large, *copies]}
    written |= {f"{METADATA_DIR}/tracks.csv", f"{METADATA_DIR}/genres.csv"}
    _start_replacing(out, earlier, written)
    by_genre = {r.title: [c for c in range(clips) if c % len(RECIPES) == j]
                for j, r in enumerate(RECIPES)}
    source_of: dict[int, int] = {}        # track (its position) -> pool clip
    first_use: dict[int, int] = {}        # pool clip -> the track whose file it is written to
    synth: list[_Clip] = []
    for n, (tid, track) in enumerate(zip(ids.tolist(), labelled)):
        kind = defect_of.get(tid)
        if kind == "empty":
            large[n].parent.mkdir(parents=True, exist_ok=True)
            large[n].write_bytes(b"" if n % 2 else _ID3_ONLY)
            continue
        recipe = RECIPES[n % len(RECIPES)]
        if kind is not None:
            length = seconds * (_SHORT_FRACTIONS[n % 3] if kind == "short" else 1.0)
            synth.append(_Clip(large[n], recipe, length, seed, tid, 0.0, kind == "truncated"))
            continue
        # The pool's first clips take the first tracks, so that every clip is used.
        pool = by_genre.get(track.genre_top.title if track.genre_top else "", [])
        clip = (len(first_use) if len(first_use) < clips
                else int(rng.choice(pool)) if pool and rng.random() < 0.9
                else int(rng.integers(0, clips)))
        source_of[n] = clip
        if clip not in first_use:
            first_use[clip] = n
            synth.append(_Clip(large[n], RECIPES[clip % len(RECIPES)], seconds, seed,
                               1_000_000 + clip, 0.0, False))
    _write_clips(synth, processes)
    for n, clip in source_of.items():
        if first_use[clip] != n:
            _link(large[first_use[clip]], large[n])
    # fma_medium and fma_small hold their subsets again, as FMA's archives do.
    for subset in SUBSETS[:-1]:
        for n, (tid, track) in enumerate(zip(ids.tolist(), labelled)):
            if SUBSETS.index(track.subset) <= SUBSETS.index(subset):
                _link(large[n], folders[subset] / audio_relpath(tid))
    write_metadata(out, rows, genres)
    _record(out, written)
