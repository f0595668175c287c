"""An FMA-shaped sample: FMA's metadata formats and folder layout, with synthetic real mp3 audio.

The real FMA archives are large and not always reachable, so the demo and the tests run on a
sample this module generates. A later stage cannot tell it from FMA by its layout:

- ``fma_metadata/tracks.csv`` with FMA's 52 columns and two header rows, ``genres.csv`` with FMA's
  eight top-level genres of FMA small (their real ids) and a few child genres each (ids of the
  sample's own), so that ``genres_all`` carries the hierarchy; besides the clips of one genre,
  some carry two top-level genres (and so no ``genre_top``, as half of FMA large does);
- ``fma_small/AAA/AAABBB.mp3``: 44.1 kHz stereo MP3 files (encoded by libsndfile/LAME);
- FMA's known defects: three clips with no audio at all, three far shorter than 30 s, one
  truncated file; plus metadata-only tracks of the medium and large subsets (some without a
  ``genre_top``, as in FMA large) so subset nesting and label derivation have work to do.

Each genre has a recipe (tempo, drum pattern, scale, timbre, noise) and each of its child genres
changes a few of its parent's ingredients (:data:`SUBGENRES`: a tempo band, a brighter or darker
timbre, register, noise), so the sub-genres of ``genres_all`` are heard, not only listed; a clip of
two genres takes some of its parts from the second one's recipe. Every track draws its own key,
tempo, mix and, now and then, borrows an element from another genre, so a classifier can learn
the genres but not perfectly.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import json
import multiprocessing
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import soundfile as sf

from fmadask.atomic import atomic_path, write_text
from fmadask.errors import DataError
from fmadask.fma.layout import METADATA_DIR, audio_path
from fmadask.fma.metadata import parse_list
from fmadask.lock import LOCK_NAME, RunLock
from fmadask.options import OptionError, check

SAMPLE_RATE = 44100


@dataclass(frozen=True)
class GenreRecipe:
    """How the sample synthesises one top-level genre."""

    genre_id: int
    title: str
    tempo: tuple[float, float]      # beats per minute, drawn uniformly
    kick: tuple[int, ...]           # sixteenth-note steps of a bar that carry a kick drum
    snare: tuple[int, ...]
    hat: tuple[int, ...]
    scale: tuple[int, ...]          # semitones above the key
    harmonics: int                  # partials of the chord voices
    brightness: float               # decay exponent of the partials (smaller = brighter)
    pluck: float                    # note decay time constant in seconds (large = pad)
    drive: float                    # tanh distortion gain (0 = clean)
    noise: float                    # broadband noise level
    bass: float                     # bass level
    register: int                   # MIDI note of the key's lowest octave
    children: tuple[str, ...]       # child genre titles


_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)
_PHRYGIAN_DOMINANT = (0, 1, 4, 5, 7, 8, 10)
_PENTATONIC = (0, 2, 4, 7, 9)
_CHROMATIC = tuple(range(12))
_FOUR = (0, 4, 8, 12)

#: FMA small's eight top-level genres, with their FMA genre ids.
RECIPES: tuple[GenreRecipe, ...] = (
    GenreRecipe(21, "Hip-Hop", (82, 98), (0, 7, 10), (4, 12), (0, 2, 4, 6, 8, 10, 12, 14),
                _MINOR, 3, 1.8, 0.25, 0.0, 0.01, 0.9, 45, ("Rap", "Alternative Hip-Hop", "Trip-Hop")),
    GenreRecipe(10, "Pop", (100, 124), (0, 8), (4, 12), (2, 6, 10, 14),
                _MAJOR, 5, 1.2, 0.6, 0.2, 0.01, 0.5, 60, ("Synth-Pop", "Experimental Pop")),
    GenreRecipe(17, "Folk", (76, 108), (), (), (),
                _MAJOR, 7, 1.0, 0.35, 0.0, 0.005, 0.2, 55, ("Free-Folk", "Singer-Songwriter")),
    GenreRecipe(38, "Experimental", (60, 160), (0, 5, 11), (7,), (3, 9, 13),
                _CHROMATIC, 4, 0.6, 0.15, 0.8, 0.12, 0.2, 48, ("Noise", "Sound Art", "Drone")),
    GenreRecipe(12, "Rock", (112, 150), (0, 8, 10), (4, 12), (0, 2, 4, 6, 8, 10, 12, 14),
                _MINOR, 6, 0.8, 0.5, 3.0, 0.02, 0.7, 52, ("Punk", "Indie-Rock", "Post-Rock")),
    GenreRecipe(2, "International", (90, 130), (0, 6, 10), (3, 11), (2, 5, 9, 13),
                _PHRYGIAN_DOMINANT, 5, 1.4, 0.3, 0.1, 0.01, 0.4, 57, ("Latin", "African", "Balkan")),
    GenreRecipe(15, "Electronic", (120, 136), _FOUR, (4, 12), (2, 6, 10, 14),
                _MINOR, 8, 0.5, 1.2, 0.4, 0.015, 0.8, 50, ("Techno", "House", "Ambient Electronic")),
    GenreRecipe(1235, "Instrumental", (56, 84), (), (), (),
                _PENTATONIC, 4, 2.2, 2.5, 0.0, 0.003, 0.3, 62, ("Soundtrack", "Piano")),
)

#: How each child genre changes its parent's recipe (:func:`subgenre`): a few ingredients each,
#: chosen to be heard in the 518 features (timbre, register, noise) as well as the tempo; never
#: the scale, which the chroma features read as the parent's, nor the drums: a drum pattern cannot
#: move part of the way, and a sibling genre's pattern left the top-level genre unlearnable by the
#: CNN on a small sample (the child clips of a genre are in different splits).
SUBGENRES: dict[str, dict[str, object]] = {
    "Rap": {"tempo": (88, 98), "brightness": 1.3, "bass": 1.2},
    "Alternative Hip-Hop": {"harmonics": 7, "brightness": 0.9, "register": 52, "pluck": 0.6},
    "Trip-Hop": {"tempo": (66, 80), "pluck": 1.2, "noise": 0.04, "drive": 0.8},
    "Synth-Pop": {"harmonics": 12, "brightness": 0.45, "drive": 1.0},
    "Experimental Pop": {"noise": 0.05, "pluck": 0.2, "register": 48, "drive": 0.8},
    "Free-Folk": {"noise": 0.03, "pluck": 1.0, "register": 46},
    "Singer-Songwriter": {"harmonics": 3, "brightness": 1.8, "register": 62, "bass": 0.5},
    "Noise": {"noise": 0.35, "drive": 4.0},
    "Sound Art": {"pluck": 1.5, "noise": 0.04, "harmonics": 8, "register": 60},
    "Drone": {"pluck": 3.0, "tempo": (50, 70), "register": 36},
    "Punk": {"tempo": (155, 185), "drive": 6.0, "noise": 0.05},
    "Indie-Rock": {"drive": 1.0, "brightness": 1.2, "register": 57},
    "Post-Rock": {"pluck": 1.6, "tempo": (90, 112), "drive": 0.8},
    "Latin": {"tempo": (112, 130), "harmonics": 3, "brightness": 1.0},
    "African": {"harmonics": 3, "brightness": 2.2, "register": 48},
    "Balkan": {"tempo": (132, 152), "pluck": 0.15, "harmonics": 9},
    "Techno": {"tempo": (130, 142), "drive": 1.5, "brightness": 0.3, "pluck": 0.4},
    "House": {"tempo": (118, 126), "harmonics": 4, "brightness": 1.0, "register": 57},
    "Ambient Electronic": {"pluck": 3.0, "tempo": (70, 90), "noise": 0.03},
    "Soundtrack": {"harmonics": 9, "brightness": 1.1, "register": 48, "bass": 0.8},
    "Piano": {"pluck": 0.5, "harmonics": 6, "brightness": 1.5, "register": 66, "bass": 0.1},
}


#: How far a child genre moves its parent's numeric ingredients toward :data:`SUBGENRES`' values
#: (1: all the way): half keeps the parent recognisable, so the single-label task stays near
#: what it was, while the child is still heard.
SUBGENRE_STRENGTH = 0.5


def subgenre(recipe: GenreRecipe, child: str) -> GenreRecipe:
    """The recipe of ``recipe``'s child genre ``child`` (one of its ``children``): the parent's
    with the changes :data:`SUBGENRES` lists (numbers moved :data:`SUBGENRE_STRENGTH` of the
    way, the tempo band's ends too)."""
    if child not in recipe.children:
        raise ValueError(f"{child!r} is not a child genre of {recipe.title}")
    changes = {}
    for name, value in SUBGENRES[child].items():
        old = getattr(recipe, name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            moved = old + SUBGENRE_STRENGTH * (value - old)
            value = round(moved) if isinstance(old, int) else float(moved)
        elif name == "tempo":       # a band: both ends move part of the way too
            value = tuple(a + SUBGENRE_STRENGTH * (b - a) for a, b in zip(old, value))
        changes[name] = value
    return dataclasses.replace(recipe, **changes)


#: The 52 columns of FMA's tracks.csv, in FMA's order.
TRACK_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    [("album", c) for c in ("comments", "date_created", "date_released", "engineer", "favorites",
                            "id", "information", "listens", "producer", "tags", "title", "tracks",
                            "type")]
    + [("artist", c) for c in ("active_year_begin", "active_year_end", "associated_labels", "bio",
                               "comments", "date_created", "favorites", "id", "latitude",
                               "location", "longitude", "members", "name", "related_projects",
                               "tags", "website", "wikipedia_page")]
    + [("set", "split"), ("set", "subset")]
    + [("track", c) for c in ("bit_rate", "comments", "composer", "date_created", "date_recorded",
                              "duration", "favorites", "genre_top", "genres", "genres_all",
                              "information", "interest", "language_code", "license", "listens",
                              "lyricist", "number", "publisher", "tags", "title")]
)


# --------------------------------------------------------------------------------------------
# audio synthesis


def _midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12)


def _add(buffer: np.ndarray, start: int, sound: np.ndarray) -> None:
    """Mix ``sound`` into ``buffer`` from sample ``start``, clipped at the buffer's end."""
    end = min(len(buffer), start + len(sound))
    if start < end:
        buffer[start:end] += sound[: end - start]


@functools.lru_cache(maxsize=512)
def _tone(freq: float, seconds: float, harmonics: int, brightness: float, decay: float,
          sr: int) -> np.ndarray:
    # Cached: chords, bass and melody reuse a few dozen notes per track, and synthesis is most of
    # the sample's cost. Callers only read the returned array.
    t = np.arange(int(seconds * sr)) / sr
    partials = np.arange(1, harmonics + 1)
    partials = partials[partials * freq < sr / 2.2]
    amps = partials ** -brightness
    wave = np.sin(2 * np.pi * freq * np.outer(t, partials)) @ amps
    envelope = np.minimum(1.0, t / 0.005) * np.exp(-t / decay)
    return (wave * envelope / amps.sum()).astype(np.float32)


def _drum(kind: str, sr: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "kick":
        t = np.arange(int(0.25 * sr)) / sr
        phase = 2 * np.pi * np.cumsum(50 + 110 * np.exp(-t / 0.03)) / sr
        return (np.sin(phase) * np.exp(-t / 0.08)).astype(np.float32)
    if kind == "snare":
        t = np.arange(int(0.18 * sr)) / sr
        body = 0.4 * np.sin(2 * np.pi * 190 * t)
        return ((rng.standard_normal(len(t)) * 0.6 + body) * np.exp(-t / 0.05)).astype(np.float32)
    t = np.arange(int(0.05 * sr)) / sr
    return (np.diff(rng.standard_normal(len(t) + 1)) * 0.25 * np.exp(-t / 0.012)).astype(np.float32)


#: The parts of a recipe a clip may take from another genre (:func:`blend`).
PARTS: dict[str, tuple[str, ...]] = {
    "rhythm": ("tempo", "kick", "snare", "hat"),
    "harmony": ("scale", "register"),
    "timbre": ("harmonics", "brightness", "pluck", "drive"),
    "mix": ("noise", "bass"),
}


def blend(recipe: GenreRecipe, others: Mapping[str, GenreRecipe]) -> GenreRecipe:
    """``recipe`` with each part named in ``others`` (a key of :data:`PARTS`) taken from that
    genre's recipe; the title, id and children stay ``recipe``'s."""
    fields = {f: getattr(other, f) for part, other in others.items() for f in PARTS[part]}
    return dataclasses.replace(recipe, **fields)


def borrowed_parts(overlap: float, rng: np.random.Generator, track_rng: np.random.Generator
                   ) -> dict[str, GenreRecipe]:
    """The parts a clip takes from random genres (any of the eight, its own included).

    Its rhythm comes from one with chance ``max(0.25, overlap)``, drawn from ``track_rng`` as the
    sample always did (so ``overlap=0`` writes the sample it always wrote); harmony, timbre and
    mix each with chance ``overlap``, drawn from ``rng``.
    """
    parts = {}
    if track_rng.random() < max(0.25, overlap):
        parts["rhythm"] = RECIPES[int(track_rng.integers(0, len(RECIPES)))]
    if overlap > 0:
        for part in (p for p in PARTS if p != "rhythm"):
            if rng.random() < overlap:
                parts[part] = RECIPES[int(rng.integers(0, len(RECIPES)))]
    return parts


def synthesize(recipe: GenreRecipe, seconds: float, rng: np.random.Generator,
               sr: int = SAMPLE_RATE) -> np.ndarray:
    """Synthesise a clip of one genre.

    Parameters
    ----------
    recipe : GenreRecipe
        The genre (possibly with parts of others: :func:`blend`).
    seconds : float
        Duration in seconds.
    rng : numpy.random.Generator
        Source of the track's own variation (key, tempo, mix, melody).
    sr : int
        Sample rate in Hz.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(n_samples, 2)``, peak 0.8.
    """
    n = int(seconds * sr)
    mix = np.zeros(n, dtype=np.float32)
    bpm = rng.uniform(*recipe.tempo)
    step = int(sr * 60 / bpm / 4)                      # one sixteenth note
    key = recipe.register + int(rng.integers(0, 12))
    drums = {k: _drum(k, sr, rng) for k in ("kick", "snare", "hat")}
    drum_gain = rng.uniform(0.5, 1.0)
    swing = rng.uniform(0, 0.2) * step
    # Chords change every bar; a melody note every few steps.
    degrees = [int(rng.integers(0, len(recipe.scale))) for _ in range(4)]
    for bar, bar_start in enumerate(range(0, n, 16 * step)):
        for pattern, kind in ((recipe.kick, "kick"), (recipe.snare, "snare"), (recipe.hat, "hat")):
            for s in pattern:
                offset = int(swing) if s % 2 else 0
                _add(mix, bar_start + s * step + offset, drum_gain * drums[kind])
        root = degrees[bar % 4]
        chord_length = 16 * step / sr
        for voice in (0, 2, 4):
            degree = root + voice
            note = key + 12 + recipe.scale[degree % len(recipe.scale)] + 12 * (degree // len(recipe.scale))
            _add(mix, bar_start, 0.25 * _tone(_midi_hz(note), chord_length, recipe.harmonics,
                                              recipe.brightness, recipe.pluck, sr))
        bass_note = key - 12 + recipe.scale[root % len(recipe.scale)]
        for s in range(0, 16, 4):
            _add(mix, bar_start + s * step, recipe.bass * _tone(_midi_hz(bass_note), 4 * step / sr,
                                                                2, 2.0, 0.2, sr))
        for s in range(0, 16, int(rng.choice([2, 4, 8]))):
            degree = int(rng.integers(0, 2 * len(recipe.scale)))
            note = key + 24 + recipe.scale[degree % len(recipe.scale)] + 12 * (degree // len(recipe.scale))
            _add(mix, bar_start + s * step, 0.3 * _tone(_midi_hz(note), 2 * step / sr,
                                                        recipe.harmonics, recipe.brightness,
                                                        recipe.pluck / 2, sr))
    if recipe.drive:
        mix = np.tanh(recipe.drive * mix / (np.abs(mix).max() + 1e-9))
    mix += recipe.noise * rng.uniform(0.5, 2.0) * rng.standard_normal(n).astype(np.float32)
    # A little stereo: the right channel is slightly delayed and differently weighted.
    delay = int(rng.integers(1, 40))
    right = np.concatenate([np.zeros(delay, np.float32), mix[:-delay]]) if n > delay else mix
    stereo = np.stack([mix, rng.uniform(0.7, 1.0) * right], axis=1)
    return (0.8 * stereo / (np.abs(stereo).max() + 1e-9)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# metadata


def _genres_table() -> pd.DataFrame:
    """genres.csv rows: the eight real top-level genres plus the sample's own children."""
    rows = []
    next_id = 5000
    for recipe in RECIPES:
        rows.append((recipe.genre_id, recipe.title, 0, recipe.genre_id))
        for child in recipe.children:
            rows.append((next_id, child, recipe.genre_id, recipe.genre_id))
            next_id += 1
    table = pd.DataFrame(rows, columns=["genre_id", "title", "parent", "top_level"])
    table.insert(1, "#tracks", 0)
    return table.set_index("genre_id")[["#tracks", "parent", "title", "top_level"]]


def _ancestors(genre_id: int, parents: Mapping[int, int]) -> list[int]:
    """``genre_id`` and the genres above it (``parents``: genre id -> parent id, 0 at the top)."""
    chain = [genre_id]
    while parents[chain[-1]] != 0:
        chain.append(parents[chain[-1]])
    return chain


def _split_of(rank: int, count: int) -> str:
    """FMA-like 80/10/10 split of the ``rank``-th of ``count`` tracks of a genre."""
    n_test = max(1, round(count * 0.1)) if count >= 3 else 0
    n_val = max(1, round(count * 0.1)) if count >= 3 else 0
    if rank < n_test:
        return "test"
    if rank < n_test + n_val:
        return "validation"
    return "training"


def _track_row(track_id: int, genre_ids: list[int], genre_top: str | None, subset: str,
               split: str, duration: float, parents: Mapping[int, int],
               rng: np.random.Generator) -> dict:
    genres_all = sorted({a for g in genre_ids for a in _ancestors(g, parents)})
    created = pd.Timestamp("2008-11-26") + pd.Timedelta(seconds=int(rng.integers(0, 2.5e8)))
    artist = int(rng.integers(1, 20000))
    values = {
        ("album", "comments"): 0, ("album", "date_created"): str(created),
        ("album", "date_released"): str(created.normalize()), ("album", "engineer"): None,
        ("album", "favorites"): int(rng.integers(0, 10)), ("album", "id"): int(rng.integers(1, 20000)),
        ("album", "information"): None, ("album", "listens"): int(rng.integers(0, 50000)),
        ("album", "producer"): None, ("album", "tags"): "[]", ("album", "title"): f"Album {track_id}",
        ("album", "tracks"): int(rng.integers(1, 20)), ("album", "type"): "Album",
        ("artist", "active_year_begin"): None, ("artist", "active_year_end"): None,
        ("artist", "associated_labels"): None, ("artist", "bio"): None, ("artist", "comments"): 0,
        ("artist", "date_created"): str(created - pd.Timedelta(days=30)),
        ("artist", "favorites"): int(rng.integers(0, 50)), ("artist", "id"): artist,
        ("artist", "latitude"): None, ("artist", "location"): None, ("artist", "longitude"): None,
        ("artist", "members"): None, ("artist", "name"): f"Artist {artist}",
        ("artist", "related_projects"): None, ("artist", "tags"): "[]", ("artist", "website"): None,
        ("artist", "wikipedia_page"): None,
        ("set", "split"): split, ("set", "subset"): subset,
        ("track", "bit_rate"): 320000, ("track", "comments"): 0, ("track", "composer"): None,
        ("track", "date_created"): str(created), ("track", "date_recorded"): None,
        ("track", "duration"): int(round(duration)), ("track", "favorites"): int(rng.integers(0, 5)),
        ("track", "genre_top"): genre_top, ("track", "genres"): str(genre_ids),
        ("track", "genres_all"): str(genres_all), ("track", "information"): None,
        ("track", "interest"): int(rng.integers(0, 5000)), ("track", "language_code"): "en",
        ("track", "license"): "Attribution-NonCommercial-ShareAlike 3.0 International",
        ("track", "listens"): int(rng.integers(0, 3000)), ("track", "lyricist"): None,
        ("track", "number"): int(rng.integers(1, 12)), ("track", "publisher"): None,
        ("track", "tags"): "[]", ("track", "title"): f"Track {track_id}",
    }
    return values


def _write_mp3(path: Path, audio: np.ndarray, sr: int) -> None:
    with atomic_path(path) as tmp:
        sf.write(tmp, audio, sr, format="MP3")


@dataclass(frozen=True)
class _Clip:
    """One audio file of the sample, all that is needed to write it in any process."""

    path: Path
    recipe: GenreRecipe
    seconds: float
    seed: int
    track_id: int
    overlap: float
    truncated: bool       # FMA's cut-off file: only the first half of the mp3 is kept
    #: A clip of two genres: the parts (keys of PARTS) it takes from the second genre's recipe.
    second: tuple[tuple[str, GenreRecipe], ...] = ()


def _write_clip(clip: _Clip) -> None:
    track_rng = np.random.default_rng([clip.seed, clip.track_id])
    parts = borrowed_parts(clip.overlap, np.random.default_rng([clip.seed, clip.track_id, 1]),
                           track_rng)
    parts.update(clip.second)          # the second genre is always heard
    audio = synthesize(blend(clip.recipe, parts), clip.seconds, track_rng)
    _write_mp3(clip.path, audio, SAMPLE_RATE)
    if clip.truncated:
        data = clip.path.read_bytes()
        clip.path.write_bytes(data[: len(data) // 2])


def _write_clips(clips: list[_Clip], processes: int) -> None:
    """Synthesise and encode ``clips`` (about 0.5 s of CPU a 10 s clip) on ``processes`` cores."""
    processes = processes or len(os.sched_getaffinity(0))
    if processes == 1 or len(clips) < 2:
        for clip in clips:
            _write_clip(clip)
        return
    # spawn, not fork: `fmadask run` makes a sample in a process that may already run threads
    with ProcessPoolExecutor(min(processes, len(clips)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        for _ in pool.map(_write_clip, clips, chunksize=max(1, len(clips) // (8 * processes))):
            pass


# An ID3v2.3 header announcing an empty tag of 0x100 padded bytes: a file with metadata and no
# MPEG audio frame at all, like FMA's empty clips.
_ID3_ONLY = b"ID3\x03\x00\x00\x00\x00\x02\x00" + b"\x00" * 256


#: The record of a sample folder, written before anything else: the files the sample wrote
#: (JSON, ``{"written_by": "fmadask sample", "files": [relative paths]}``). A folder holding it
#: is a sample fmadask may write over; those files, and only those, are replaced.
SAMPLE_MARKER = ".fmadask-sample"


def make_sample(out_dir: str | Path, tracks_per_genre: int = 10, seconds: float = 30.0,
                seed: int = 0, overlap: float = 0.0, force: bool = False,
                processes: int = 0) -> Path:
    """Write an FMA-shaped sample to ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Created if needed; receives ``fma_metadata/`` and ``fma_small/``.
    tracks_per_genre : int
        Good clips per genre in the small subset (at least 3, so each genre has all three splits).
    seconds : float
        Duration of a good clip in seconds (FMA's clips are 30 s).
    seed : int
        The same seed writes the same metadata and the same audio.
    overlap : float
        Chance that each of a clip's harmony, timbre and mix comes from a random genre, and at
        least the chance (1 in 4) that its rhythm does (:func:`borrowed_parts`): 0 keeps the
        genres apart as far as the recipes do; 0.25-0.3 brings the 518-feature logistic
        regression down to 0.71-0.78, near where it is on real music (README, "The CNN recipe
        and the fusion").

    Besides the ``tracks_per_genre`` clips of each genre (one child genre each, in turn, its
    audio :func:`subgenre`'s), ``max(1, tracks_per_genre // 4)`` clips per genre carry a child
    of it and a child of another top-level genre, take two of their four parts from the second
    and have no ``genre_top`` (left out of the single-label task, used by ``genres_all``).
    force : bool
        Write into a folder that holds other files (an existing data set's files of the same
        names are then replaced). By default only a new, empty or earlier sample folder is used:
        the files an earlier sample recorded writing (:data:`SAMPLE_MARKER`) are replaced, so
        none of its clips is left beside the new ``tracks.csv``; others are never touched.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    check("data.sample_tracks_per_genre", tracks_per_genre)   # at least 3: one clip per split
    check("data.sample_seconds", seconds)
    check("data.sample_seed", seed)
    check("data.sample_overlap", overlap)
    check("sample.processes", processes)
    out = Path(out_dir)
    with RunLock(out, "fmadask sample"):          # one writer per folder
        _write_sample(out, _claim(out, force), tracks_per_genre, seconds, seed, overlap,
                      processes)
    return out


def _write_sample(out: Path, earlier: set[str], tracks_per_genre: int, seconds: float, seed: int,
                  overlap: float, processes: int) -> None:
    """Write the sample into ``out`` (claimed and locked), replacing the files ``earlier`` (an
    earlier sample's record) names."""
    rng = np.random.default_rng(seed)
    genres = _genres_table()
    children = {r.genre_id: list(genres.index[genres["parent"] == r.genre_id]) for r in RECIPES}
    parents = {int(g): int(p) for g, p in genres["parent"].items()}
    rows: dict[int, dict] = {}
    track_id = 1
    defects = ["empty", "empty", "empty", "short:0.25", "short:0.5", "short:0.8", "truncated"]
    clips: list[_Clip] = []
    empties: dict[Path, bytes] = {}

    def next_id() -> int:
        nonlocal track_id
        track_id += int(rng.integers(1, 40))
        return track_id

    for g, recipe in enumerate(RECIPES):
        count = tracks_per_genre + (1 if g < len(defects) else 0)
        for rank in range(count):
            tid = next_id()
            # Each child in turn (from a genre's own offset): every child has clips in every
            # split once a genre has a few per split.
            child = recipe.children[(rank + g) % len(recipe.children)]
            genre_ids = [int(children[recipe.genre_id][recipe.children.index(child)])]
            if rng.random() < 0.3:
                genre_ids.append(recipe.genre_id)
            split = _split_of(rank, count)
            rows[tid] = _track_row(tid, sorted(genre_ids), recipe.title, "small", split, seconds,
                                   parents, rng)
            path = audio_path(out, tid, "small")
            defect = defects[g] if rank == count - 1 and g < len(defects) else None
            if defect == "empty":
                empties[path] = b"" if g == 0 else _ID3_ONLY
                continue
            length = float(defect.split(":")[1]) if defect and defect.startswith("short") else seconds
            clips.append(_Clip(path, subgenre(recipe, child), length, seed, tid, overlap,
                               defect == "truncated"))
    clips.extend(_two_genre_clips(out, rows, rng, next_id, max(1, tracks_per_genre // 4),
                                  seconds, seed, overlap, children, parents))
    written = {p.relative_to(out).as_posix() for p in [*empties, *(c.path for c in clips)]}
    written |= {f"{METADATA_DIR}/tracks.csv", f"{METADATA_DIR}/genres.csv"}
    _start_replacing(out, earlier, written)
    for path, content in empties.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    _write_clips(clips, processes)
    # Metadata-only tracks of the bigger subsets (their audio is in fma_medium / fma_large, which the
    # sample does not ship). Half of the large ones have no genre_top: two of them are derivable
    # from a single root, the others span two roots and stay unlabelled, as in FMA large.
    for i in range(2 * len(RECIPES)):
        recipe = RECIPES[i % len(RECIPES)]
        tid = next_id()
        subset = "medium" if i < len(RECIPES) else "large"
        genre_ids = [int(rng.choice(children[recipe.genre_id]))]
        genre_top: str | None = recipe.title
        if subset == "large" and i % 2:
            genre_top = None
            if i % 4 == 3:
                genre_ids.append(RECIPES[(i + 1) % len(RECIPES)].genre_id)
        rows[tid] = _track_row(tid, genre_ids, genre_top, subset, "training", seconds, parents,
                               rng)
    write_metadata(out, rows, genres)
    _record(out, written)


def _two_genre_clips(out: Path, rows: dict[int, dict], rng: np.random.Generator,
                     next_id: Callable[[], int], per_genre: int, seconds: float, seed: int, overlap: float,
                     children: Mapping[int, list[int]], parents: Mapping[int, int]
                     ) -> list[_Clip]:
    """``per_genre`` clips of each genre with a child of another top-level genre besides one of
    its own: two of the clip's four parts come from the second (its rows added to ``rows``,
    without a ``genre_top``, split 80/10/10 over all of them)."""
    pairs = []
    for g, recipe in enumerate(RECIPES):
        for k in range(per_genre):
            other = RECIPES[(g + 1 + int(rng.integers(0, len(RECIPES) - 1))) % len(RECIPES)]
            pairs.append((recipe, recipe.children[(k + g) % len(recipe.children)], other,
                          other.children[int(rng.integers(0, len(other.children)))]))
    clips = []
    ranks = rng.permutation(len(pairs))        # which pairs fall in test and validation
    for rank, (first, child, second, child2) in zip(ranks.tolist(), pairs):
        tid = next_id()
        ids = [children[r.genre_id][r.children.index(c)]
               for r, c in ((first, child), (second, child2))]
        rows[tid] = _track_row(tid, sorted(int(i) for i in ids), None, "small",
                               _split_of(rank, len(pairs)), seconds, parents, rng)
        taken = rng.choice(list(PARTS), size=2, replace=False)
        clips.append(_Clip(audio_path(out, tid, "small"), subgenre(first, child), seconds, seed,
                           tid, overlap, False,
                           tuple((str(p), subgenre(second, child2)) for p in sorted(taken))))
    return clips


def write_metadata(out: Path, rows: Mapping[int, dict], genres: pd.DataFrame) -> None:
    """Write ``fma_metadata/tracks.csv`` of ``rows`` (:func:`_track_row` values by track id)
    and ``genres.csv`` with each genre's ``#tracks`` counted from the rows' ``genres_all``."""
    tracks = pd.DataFrame.from_dict(rows, orient="index")
    tracks = tracks[list(TRACK_COLUMNS)]
    tracks.columns = pd.MultiIndex.from_tuples(TRACK_COLUMNS)
    tracks.index.name = "track_id"
    # Counted outside pandas: one Series update per genre of each track is slow at 100k tracks.
    counts = collections.Counter(g for ids in tracks["track", "genres_all"]
                                 for g in parse_list(ids))
    genres["#tracks"] = [counts[g] for g in genres.index]
    meta = out / METADATA_DIR
    meta.mkdir(parents=True, exist_ok=True)
    _write_csv(tracks, meta / "tracks.csv")
    _write_csv(genres, meta / "genres.csv")


def _claim(out: Path, force: bool) -> set[str]:
    """The files an earlier sample in ``out`` recorded writing (relative paths); a folder that
    holds anything but such a sample is refused unless ``force`` (then nothing is replaced but
    files of the sample's names)."""
    entries = sorted(p.name for p in out.iterdir() if not p.name.startswith(LOCK_NAME))
    if not entries:
        return set()
    recorded = _recorded(out / SAMPLE_MARKER) if SAMPLE_MARKER in entries else None
    if recorded is not None or force:
        return recorded or set()
    if SAMPLE_MARKER in entries:
        raise OptionError("sample.force", f"{out} holds a sample by an older fmadask, which did "
                          "not record the files it wrote: fmadask sample never writes over a "
                          "data set; remove it or choose a new or empty folder, or set {option} "
                          "to write into it anyway")
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    raise OptionError("sample.force", f"{out} is not empty (it holds {shown}): fmadask "
                      "sample never writes over a data set; choose a new or empty folder, "
                      "or set {option} to write into it anyway")


def _recorded(marker: Path) -> set[str] | None:
    """The relative paths a sample's record names; None for an older fmadask's marker (plain
    text, no record).

    Raises
    ------
    DataError
        The record is damaged, or names a path outside its folder.
    """
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except ValueError:
        return None
    except OSError as exc:
        raise DataError(f"cannot read {marker}: {exc.strerror}") from None
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, list) or not all(
            isinstance(f, str) and f and "\0" not in f and "\\" not in f
            and not PurePosixPath(f).is_absolute() and ".." not in PurePosixPath(f).parts
            for f in files):
        raise DataError(f"{marker} is not the record of a sample (no list of the files it "
                        "wrote inside its folder): remove the folder or choose another")
    return set(files)


def _start_replacing(out: Path, earlier: set[str], written: set[str]) -> None:
    """Record ``earlier | written`` as the sample's, then remove what only ``earlier`` names:
    recorded before anything is written or removed, a sample cut short by a crash leaves no file
    the next one does not know of. :func:`_record` of ``written`` ends the replacement."""
    _record(out, earlier | written)
    _remove(out, earlier - written)


def _record(out: Path, files: set[str]) -> None:
    """Write the sample's record: ``files`` (relative paths) are the sample's to replace."""
    try:
        write_text(out / SAMPLE_MARKER, json.dumps({"written_by": "fmadask sample",
                                                   "files": sorted(files)}, indent=1) + "\n")
    except OSError as exc:
        raise DataError(f"cannot write {out}: {exc.strerror}: choose a writable folder") from None


def _remove(out: Path, files: set[str]) -> None:
    """Remove the files an earlier sample recorded writing, and the folders that leaves empty."""
    for rel in sorted(files):
        path = out / rel
        if path.is_file():
            path.unlink()
        for folder in path.parents:
            if folder == out or out not in folder.parents:
                break
            try:
                folder.rmdir()        # only an empty one: a file of someone else's stays
            except OSError:
                break


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp)
