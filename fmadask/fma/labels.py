"""Genre labels: FMA's genre hierarchy reduced to one top-level genre per track (``genre_top``),
or kept whole as a multi-label target (``genres_all``)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def genre_tree(genres: pd.DataFrame) -> dict[int, list[int]]:
    """Children of each genre id (0 is the root above the top-level genres).

    Parameters
    ----------
    genres : pandas.DataFrame
        FMA's genres table (:func:`fmadask.fma.metadata.load_genres`).

    Returns
    -------
    dict of int to list of int
        ``tree[parent]`` lists the ids of its children, sorted.
    """
    tree: dict[int, list[int]] = {}
    for genre_id, parent in genres["parent"].items():
        tree.setdefault(int(parent), []).append(int(genre_id))
    return {parent: sorted(children) for parent, children in sorted(tree.items())}


def derive_genre_top(genres_all: list[int], genres: pd.DataFrame) -> str | None:
    """The top-level genre of a track from its genre ids, or None when it is ambiguous.

    The rule (the one FMA applies to fill ``('track', 'genre_top')``): map every genre of the
    track to its root through ``genres.csv``'s ``top_level``; if exactly one root remains, it is
    the track's genre; with none or several, the track has no single top-level genre.
    """
    return _root_title(genres_all, _top_level(genres), genres["title"].to_dict())


def _top_level(genres: pd.DataFrame) -> dict[int, int]:
    """Root of each genre id, as a dict: a lookup per genre id of 100,000 tracks is then a
    dict's, not a DataFrame's (a hundred times slower)."""
    return {int(g): int(top) for g, top in genres["top_level"].items()}


def _root_title(genres_all: list[int], top_level: dict[int, int],
                titles: dict[int, object]) -> str | None:
    roots = {top_level[g] for g in genres_all if g in top_level}
    if len(roots) != 1:
        return None
    return str(titles[roots.pop()])


def genre_top(tracks: pd.DataFrame, genres: pd.DataFrame) -> pd.Series:
    """One top-level genre per track.

    FMA's ``('track', 'genre_top')`` where it is filled; where it is empty, derived from
    ``('track', 'genres_all')`` by :func:`derive_genre_top`. Tracks with no single top-level
    genre are dropped; their number is in ``result.attrs['excluded_no_genre']``.

    Returns
    -------
    pandas.Series
        Genre titles (str), indexed by track id, named ``genre_top``.
    """
    given = tracks["track", "genre_top"].astype("object")
    missing = given.isna()
    top_level, titles = _top_level(genres), genres["title"].to_dict()
    derived = tracks.loc[missing, ("track", "genres_all")].map(
        lambda ids: _root_title(ids, top_level, titles))
    labels = given.where(~missing, derived).dropna().astype(str)
    labels.name = "genre_top"
    labels.attrs["excluded_no_genre"] = int(len(tracks) - len(labels))
    return labels


def top_levels(genre_ids: list[int], genres: pd.DataFrame) -> list[int]:
    """The top-level genre ids (roots) of ``genre_ids``, sorted; ids ``genres`` lacks are
    ignored."""
    return sorted({int(genres.at[g, "top_level"]) for g in genre_ids if g in genres.index})


def known_genres(tracks: pd.DataFrame, genres: pd.DataFrame) -> pd.Series:
    """Each track's ``('track', 'genres_all')``: the ids of its genres and their ancestors, less
    ids ``genres.csv`` does not know, sorted.

    Returns
    -------
    pandas.Series
        A list of int per track (possibly empty), indexed by track id, named ``genres_all``.
    """
    known = set(int(g) for g in genres.index)
    ids = tracks["track", "genres_all"].map(
        lambda value: sorted({int(g) for g in value if int(g) in known}))
    ids.name = "genres_all"
    return ids


def multi_labels(tracks: pd.DataFrame, genres: pd.DataFrame) -> pd.DataFrame:
    """Both labels of the tracks with at least one known genre (the ``genres_all`` target).

    Returns
    -------
    pandas.DataFrame
        Indexed by track id; ``genres_all`` (sorted list of int, never empty) and ``genre_top``
        (str, or None where the track has no single top-level genre: FMA's own where filled,
        else derived as :func:`genre_top` does). Tracks with no known genre are left out;
        ``attrs['excluded_no_genre']`` counts them.
    """
    ids = known_genres(tracks, genres)
    ids = ids[ids.map(len) > 0]
    top = genre_top(tracks.loc[ids.index], genres)
    table = pd.DataFrame({"genre_top": top.reindex(ids.index).astype(object), "genres_all": ids})
    table["genre_top"] = table["genre_top"].where(table["genre_top"].notna(), None)
    table.attrs["excluded_no_genre"] = int(len(tracks) - len(table))
    return table


def stratum(genre_ids: list[int], genres: pd.DataFrame) -> str:
    """The group a multi-label track is split in (:func:`fmadask.fma.splits.stratified_split`):
    its top-level genres' titles joined by ``+`` (``'Rock'``, ``'Hip-Hop+Rock'``)."""
    return "+".join(sorted(str(genres.at[g, "title"]) for g in top_levels(genre_ids, genres)))


def label_matrix(genres_all: pd.Series, label_ids: list[int]) -> np.ndarray:
    """The multi-label indicator matrix of ``genres_all`` (a list of genre ids per track).

    Returns
    -------
    numpy.ndarray, shape (n_tracks, len(label_ids)), uint8
        ``[i, j]`` is 1 when track ``i`` has genre ``label_ids[j]``.
    """
    column = {g: j for j, g in enumerate(label_ids)}
    matrix = np.zeros((len(genres_all), len(label_ids)), dtype=np.uint8)
    for i, ids in enumerate(genres_all):
        for g in ids:
            if g in column:
                matrix[i, column[g]] = 1
    return matrix
