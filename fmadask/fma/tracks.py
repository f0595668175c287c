"""The track table every job works from: which tracks, their label, split and mp3 path."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fmadask import storage
from fmadask.errors import ConfigError
from fmadask.fma.labels import genre_top
from fmadask.fma.layout import audio_path, check_subset
from fmadask.fma.metadata import load_genres, load_tracks, select_subset
from fmadask.fma.splits import official_split, stratified_split
from fmadask.options import SPLIT_METHODS, SPLIT_SEED


def track_table(data_dir: str | Path, subset: str = "small", split: str = "official",
                seed: int = SPLIT_SEED, storage_options: Mapping[str, Any] | None = None
                ) -> pd.DataFrame:
    """Tracks of ``subset`` with their top-level genre, split and audio path.

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

    Returns
    -------
    pandas.DataFrame
        Indexed by ``track_id`` (sorted), columns ``genre_top`` (str), ``split`` (str) and
        ``path`` (str, the mp3 in ``fma_<subset>/``: a path, or a URL for a URL). Tracks without a single top-level genre are
        left out; ``attrs['excluded_no_genre']`` counts them.
    """
    check_subset(subset)
    if split not in SPLIT_METHODS:
        raise ConfigError(f"unknown split {split!r}: choose one of {', '.join(SPLIT_METHODS)}")
    return table_of(load_tracks(data_dir, storage_options), load_genres(data_dir, storage_options),
                    data_dir, subset, split, seed)


def table_of(tracks: pd.DataFrame, genres: pd.DataFrame, data_dir: str | Path, subset: str,
             split: str = "official", seed: int = SPLIT_SEED) -> pd.DataFrame:
    """:func:`track_table` of tables already loaded (``tracks.csv`` and ``genres.csv``, read
    once by a caller that needs them too: at FMA-large size reading them is seconds)."""
    tracks = select_subset(tracks, subset)
    labels = genre_top(tracks, genres)
    if split == "official":
        splits = official_split(tracks).loc[labels.index]
    else:
        splits = stratified_split(labels, seed=seed)
    root = storage.resolve(data_dir)
    table = pd.DataFrame({"genre_top": labels, "split": splits})
    table["path"] = [str(audio_path(root, tid, subset)) for tid in table.index]
    table = table.sort_index()
    table.index.name = "track_id"
    table.attrs["excluded_no_genre"] = labels.attrs["excluded_no_genre"]
    return table
