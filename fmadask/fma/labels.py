"""Genre labels: FMA's genre hierarchy reduced to one top-level genre per track."""
from __future__ import annotations

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
