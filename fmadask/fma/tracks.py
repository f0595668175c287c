"""The track table every job works from: which tracks, their labels, split and mp3 path."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fmadask import storage
from fmadask.errors import ConfigError
from fmadask.fma.labels import genre_top, known_genres, multi_labels, stratum
from fmadask.fma.layout import audio_path, check_subset
from fmadask.fma.metadata import load_genres, load_tracks, select_subset
from fmadask.fma.splits import official_split, stratified_split
from fmadask.options import SPLIT_METHODS, SPLIT_SEED, check


def track_table(data_dir: str | Path, subset: str = "small", split: str = "official",
                seed: int = SPLIT_SEED, storage_options: Mapping[str, Any] | None = None,
                target: str = "genre_top") -> pd.DataFrame:
    """Tracks of ``subset`` with their labels, split and audio path.

    Parameters
    ----------
    data_dir : str or Path
        FMA data folder holding ``fma_metadata/`` and ``fma_<subset>/``: a local path or an
        fsspec URL (``s3://``, ``https://``, ...).
    subset : {'small', 'medium', 'large', 'full'}
        With FMA's nesting (medium includes small).
    split : {'official', 'stratified'}
        FMA's ``('set', 'split')`` or the study's seeded stratified 80/10/10.
    seed : int
        Seed of the stratified split.
    storage_options : mapping, optional
        fsspec options of a URL (credentials, endpoint).
    target : {'genre_top', 'genres_all'}
        The tracks a model of this target learns from: those with a single top-level genre, or
        those with at least one genre (with or without a ``genre_top``; the stratified split
        then groups tracks by their set of top-level genres).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``track_id`` (sorted), columns ``genre_top`` (str; None under
        ``genres_all`` for a track with several top-level genres), ``genres_all`` (sorted list
        of the genre ids ``genres.csv`` knows), ``split`` (str) and ``path`` (str, the mp3 in
        ``fma_<subset>/``: a path, or a URL for a URL). Tracks the target cannot use are left
        out; ``attrs['excluded_no_genre']`` counts them; ``attrs['genres']`` is the genre tree
        (``genres.csv``'s ``title``, ``parent``, ``top_level`` by genre id).
    """
    check_subset(subset)
    if split not in SPLIT_METHODS:
        raise ConfigError(f"unknown split {split!r}: choose one of {', '.join(SPLIT_METHODS)}")
    check("data.target", target)
    return table_of(load_tracks(data_dir, storage_options), load_genres(data_dir, storage_options),
                    data_dir, subset, split, seed, target)


def table_of(tracks: pd.DataFrame, genres: pd.DataFrame, data_dir: str | Path, subset: str,
             split: str = "official", seed: int = SPLIT_SEED,
             target: str = "genre_top") -> pd.DataFrame:
    """:func:`track_table` of tables already loaded (``tracks.csv`` and ``genres.csv``, read
    once by a caller that needs them too: at FMA-large size reading them is seconds)."""
    tracks = select_subset(tracks, subset)
    if target == "genre_top":
        labels = genre_top(tracks, genres)
        table = pd.DataFrame({"genre_top": labels,
                              "genres_all": known_genres(tracks, genres).loc[labels.index]})
        strata = labels
    else:
        table = multi_labels(tracks, genres)
        strata = table["genres_all"].map(lambda ids: stratum(ids, genres))
    if split == "official":
        splits = official_split(tracks).loc[table.index]
    else:
        splits = stratified_split(strata, seed=seed)
    root = storage.resolve(data_dir)
    table["split"] = splits
    table["path"] = [str(audio_path(root, tid, subset)) for tid in table.index]
    table = table.sort_index()
    table.index.name = "track_id"
    table.attrs["excluded_no_genre"] = int(len(tracks) - len(table))
    table.attrs["genres"] = genres[["title", "parent", "top_level"]]
    return table


def tracks_digest(table: pd.DataFrame, target: str = "genre_top") -> str:
    """SHA-256 of a track table's tracks with their labels and splits: a changed selection
    changes it. The ``genres_all`` ids count for that target only, so a ``genre_top`` table's
    digest is the one featurize always recorded."""
    text = "\n".join(f"{tid},{row.genre_top},{row.split}"
                     + (f",{list(row.genres_all)}" if target == "genres_all" else "")
                     for tid, row in zip(table.index, table.itertuples()))
    return hashlib.sha256(text.encode()).hexdigest()


def label_rows(table: pd.DataFrame) -> tuple[tuple[int, str | None, tuple[int, ...]], ...]:
    """Both labels of each track of a track table, as the run folder records them
    (:func:`fmadask.runlabels.write_labels`): ``(track id, genre_top or None, genres_all ids)``."""
    return tuple((int(tid), top if isinstance(top, str) else None, tuple(int(g) for g in ids))
                 for tid, top, ids in zip(table.index, table["genre_top"], table["genres_all"]))


def genre_rows(genres: pd.DataFrame) -> tuple[tuple[int, str, int, int], ...]:
    """The genre tree as the run folder records it: ``(genre id, title, parent, top level)``."""
    return tuple((int(g), str(title), int(parent), int(top)) for g, title, parent, top in
                 zip(genres.index, genres["title"], genres["parent"], genres["top_level"]))
