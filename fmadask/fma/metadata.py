"""Load FMA's metadata files in their exact published formats.

FMA's ``fma_metadata/`` holds:

- ``tracks.csv``: two header rows (e.g. ``('track', 'genre_top')``), a third row naming the index
  ``track_id``; 52 columns. List columns (genres, tags) are stored as Python literals
  (``"[21, 811]"``).
- ``genres.csv``: one header row ``genre_id,#tracks,parent,title,top_level``.
- ``features.csv`` and ``echonest.csv``: three header rows (``feature, statistics, number`` for
  features) and a fourth naming the index ``track_id``.

The loaders return pandas objects with FMA's own column names, so code written against FMA's
files works on ours and vice versa.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd

from fmadask.errors import DataError
from fmadask.fma.layout import AUDIO_SUBSETS, SUBSETS, check_subset, metadata_path

#: Columns of tracks.csv without which nothing downstream works.
REQUIRED_TRACK_COLUMNS = [("set", "subset"), ("set", "split"), ("track", "genre_top"),
                          ("track", "genres"), ("track", "genres_all")]
_LIST_COLUMNS = [("track", "tags"), ("album", "tags"), ("artist", "tags"),
                 ("track", "genres"), ("track", "genres_all")]
_DATE_COLUMNS = [("track", "date_created"), ("track", "date_recorded"),
                 ("album", "date_created"), ("album", "date_released"),
                 ("artist", "date_created"), ("artist", "active_year_begin"),
                 ("artist", "active_year_end")]
_CATEGORY_COLUMNS = [("track", "genre_top"), ("track", "license"), ("album", "type"),
                     ("album", "information"), ("artist", "bio")]
GENRE_COLUMNS = ["#tracks", "parent", "title", "top_level"]


def _resolve(path_or_dir: str | Path, name: str) -> Path:
    """Accept either the file itself or a folder holding it (or holding ``fma_metadata/``)."""
    path = Path(path_or_dir)
    if path.is_file():
        return path
    return metadata_path(path, name)


def _read_csv(path: Path, header: list[int]) -> pd.DataFrame:
    try:
        return pd.read_csv(path, index_col=0, header=header, low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, IndexError) as exc:
        raise DataError(f"{path} is not a readable FMA CSV file ({exc.__class__.__name__}): "
                        "re-download it with 'fmadask fetch metadata'") from None


def parse_list(value: object) -> list:
    """Parse a list stored as its Python literal; an empty cell is an empty list."""
    if isinstance(value, str) and value:
        return ast.literal_eval(value)
    return []


def load_tracks(path_or_dir: str | Path) -> pd.DataFrame:
    """Load FMA's ``tracks.csv``.

    Parameters
    ----------
    path_or_dir : str or Path
        The file, the ``fma_metadata`` folder, or the data folder holding ``fma_metadata/``.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``track_id`` (int64) with FMA's two-level columns. List columns
        (``('track', 'genres')``, ``('track', 'genres_all')``, the three ``tags``) hold Python
        lists of ints/strings; date columns are datetimes; ``('set', 'subset')`` is an ordered
        categorical ``small < medium < large``.

    Raises
    ------
    DataError
        If the file is missing or is not FMA's tracks.csv schema.
    """
    path = _resolve(path_or_dir, "tracks.csv")
    tracks = _read_csv(path, header=[0, 1])
    if not isinstance(tracks.columns, pd.MultiIndex):
        raise DataError(f"{path} is not FMA's tracks.csv: expected two header rows "
                        "(e.g. 'set','subset')")
    missing = [c for c in REQUIRED_TRACK_COLUMNS if c not in tracks.columns]
    if missing:
        names = ", ".join(f"{a}.{b}" for a, b in missing)
        raise DataError(f"{path} is not FMA's tracks.csv: missing columns {names}")
    tracks.index = tracks.index.astype("int64")
    tracks.index.name = "track_id"
    for column in _LIST_COLUMNS:
        if column in tracks.columns:
            tracks[column] = tracks[column].map(parse_list)
    for column in _DATE_COLUMNS:
        if column in tracks.columns:
            tracks[column] = pd.to_datetime(tracks[column], errors="coerce")
    for column in _CATEGORY_COLUMNS:
        if column in tracks.columns:
            tracks[column] = tracks[column].astype("category")
    unknown = set(tracks["set", "subset"].dropna().unique()) - set(SUBSETS)
    if unknown:
        raise DataError(f"{path}: unknown subset values {sorted(unknown)} in set.subset")
    tracks["set", "subset"] = pd.Categorical(tracks["set", "subset"], categories=SUBSETS,
                                             ordered=True)
    return tracks


def load_genres(path_or_dir: str | Path) -> pd.DataFrame:
    """Load FMA's ``genres.csv``: index ``genre_id``; columns ``#tracks, parent, title, top_level``.

    ``parent`` is 0 for a top-level genre; ``top_level`` is the id of the genre's root.
    """
    path = _resolve(path_or_dir, "genres.csv")
    genres = _read_csv(path, header=[0])
    missing = [c for c in GENRE_COLUMNS if c not in genres.columns]
    if missing or genres.index.name != "genre_id":
        raise DataError(f"{path} is not FMA's genres.csv: expected columns genre_id, "
                        f"{', '.join(GENRE_COLUMNS)}")
    genres.index = genres.index.astype("int64")
    return genres


def _load_three_level(path_or_dir: str | Path, name: str) -> pd.DataFrame:
    path = _resolve(path_or_dir, name)
    table = _read_csv(path, header=[0, 1, 2])
    if not isinstance(table.columns, pd.MultiIndex) or table.columns.nlevels != 3:
        raise DataError(f"{path} is not FMA's {name}: expected three header rows")
    table.index = table.index.astype("int64")
    table.index.name = "track_id"
    return table


def load_features(path_or_dir: str | Path) -> pd.DataFrame:
    """Load FMA's ``features.csv``: 518 float columns under (feature, statistics, number)."""
    table = _load_three_level(path_or_dir, "features.csv")
    if tuple(table.columns.names) != ("feature", "statistics", "number"):
        raise DataError(f"{path_or_dir}: features.csv header rows must be feature, statistics, number")
    return table.astype("float32")


def load_echonest(path_or_dir: str | Path) -> pd.DataFrame:
    """Load FMA's ``echonest.csv`` (three header rows, e.g. ``('echonest', 'audio_features', 'tempo')``)."""
    return _load_three_level(path_or_dir, "echonest.csv")


def select_subset(tracks: pd.DataFrame, subset: str) -> pd.DataFrame:
    """Tracks of an FMA subset with FMA's nesting: ``medium`` includes ``small``; ``large`` and
    ``full`` are every track.
    """
    check_subset(subset)
    if subset == AUDIO_SUBSETS[-1]:
        return tracks
    return tracks[tracks["set", "subset"] <= subset]
