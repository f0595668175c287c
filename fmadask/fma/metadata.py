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
import csv
import io
import json
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fmadask import storage
from fmadask.errors import DataError
from fmadask.fma.layout import AUDIO_SUBSETS, SUBSETS, check_subset, metadata_path
from fmadask.fma.splits import SPLITS

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


Options = Mapping[str, Any] | None


def _resolve(path_or_dir: str | Path, name: str, storage_options: Options = None) -> str | Path:
    """Accept either the file itself or a folder holding it (or holding ``fma_metadata/``)."""
    if storage.is_url(path_or_dir):
        if storage.name(path_or_dir) == name and storage.isfile(path_or_dir, storage_options):
            return path_or_dir
        return metadata_path(path_or_dir, name, storage_options)
    path = Path(path_or_dir)
    if path.is_file():
        return path
    return metadata_path(path, name)


def _source(path: str | Path, storage_options: Options = None) -> str | Path | io.BytesIO:
    """What pandas reads: a local path, or an object's bytes."""
    if not storage.is_url(path):
        return path
    try:   # read whole (retried): metadata files are small next to the audio
        return io.BytesIO(storage.read_bytes(path, storage_options))
    except FileNotFoundError:
        raise DataError(f"{storage.redact(path)} not found: pass the right folder") from None


def _read_csv(path: str | Path, header: list[int], storage_options: Options = None,
              source: str | Path | io.BytesIO | None = None) -> pd.DataFrame:
    """Read ``path`` (or its ``source``, :func:`_source`) as an FMA CSV file."""
    if source is None:
        source = _source(path, storage_options)
    try:
        return pd.read_csv(source, index_col=0, header=header, low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, IndexError) as exc:
        raise DataError(f"{path} is not a readable FMA CSV file ({exc.__class__.__name__}): "
                        "re-download it with 'fmadask fetch metadata'") from None


def parse_list(value: object) -> list:
    """Parse a list stored as its Python literal; an empty cell is an empty list.

    Raises
    ------
    ValueError
        The cell is not a list literal.
    """
    if isinstance(value, str) and value:
        try:
            # JSON first: a list of ints (the genre columns) reads the same either way, ten
            # times faster, which counts over 100,000 tracks x 5 list columns; anything else
            # (tags are Python string literals) is read as Python reads it.
            parsed = json.loads(value)
            if isinstance(parsed, list) and all(type(v) is int for v in parsed):
                return parsed
        except ValueError:
            pass
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise ValueError(f"{value[:40]!r} is not a list") from None
        if not isinstance(parsed, list):
            raise ValueError(f"{value[:40]!r} is not a list")
        return parsed
    return []


#: Rows of tracks.csv before the first track: two header rows and the index name row.
_TRACKS_HEADER_ROWS = 3


def _where(path: str | Path, position: int, track_id: object, column: tuple[str, str] | None) -> str:
    """``'tracks.csv line 7 (track_id 42), column track.genres'``: a cell the user can find."""
    line = position + _TRACKS_HEADER_ROWS + 1
    cell = f", column {column[0]}.{column[1]}" if column else ""
    return f"{path} line {line} (track_id {track_id}){cell}"


def _check_ids(tracks: pd.DataFrame, path: str | Path) -> pd.Index:
    """The index as int64, or a DataError naming the first blank, non-integral or repeated id."""
    raw = tracks.index
    ids = pd.to_numeric(pd.Series(raw, dtype="object"), errors="coerce")
    bad = ids.isna() | (ids != ids.round())
    if bad.any():
        pos = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(f"{_where(path, pos, raw[pos], None)}: the track_id is not a whole "
                        "number (a damaged or cut file?): re-download it with 'fmadask fetch "
                        "metadata'")
    ids = ids.astype("int64")
    repeated = ids.duplicated(keep="first")
    if repeated.any():
        pos = int(repeated.to_numpy().nonzero()[0][0])
        first = int((ids == ids.iloc[pos]).to_numpy().nonzero()[0][0])
        raise DataError(f"{_where(path, pos, ids.iloc[pos], None)}: the track_id repeats line "
                        f"{first + _TRACKS_HEADER_ROWS + 1}: re-download it with 'fmadask "
                        "fetch metadata'")
    return pd.Index(ids.to_numpy(), dtype="int64", name="track_id")


def _parse_lists(tracks: pd.DataFrame, column: tuple[str, str], path: str | Path) -> pd.Series:
    values = []
    for pos, cell in enumerate(tracks[column].to_numpy()):
        try:
            values.append(parse_list(cell))
        except ValueError as exc:
            raise DataError(f"{_where(path, pos, tracks.index[pos], column)}: {exc} (a damaged "
                            "file?): re-download it with 'fmadask fetch metadata'") from None
    return pd.Series(values, index=tracks.index, name=column)


def _check_cells(tracks: pd.DataFrame, path: str | Path, storage_options: Options = None) -> None:
    """Every track has a subset and a split, and a genre_top that is a top-level genre of the
    genres.csv next to tracks.csv (when there is one): a file cut mid-row fails here."""
    for column in (("set", "subset"), ("set", "split")):
        blank = tracks[column].isna().to_numpy()
        if blank.any():
            pos = int(blank.nonzero()[0][0])
            raise DataError(f"{_where(path, pos, tracks.index[pos], column)} is empty (a file "
                            "cut short?): re-download it with 'fmadask fetch metadata'")
    split = tracks["set", "split"]
    unknown = (~split.astype(str).isin(SPLITS)).to_numpy()
    if unknown.any():                       # its track would belong to no split, unseen
        pos = int(unknown.nonzero()[0][0])
        raise DataError(f"{_where(path, pos, tracks.index[pos], ('set', 'split'))}: "
                        f"{split.iloc[pos]!r} is not a split ({', '.join(SPLITS[:-1])} or "
                        f"{SPLITS[-1]}) (a damaged file?): re-download it with 'fmadask fetch "
                        "metadata'")
    genres_path = storage.join(posixpath.dirname(str(path)) if storage.is_url(path)
                               else Path(path).parent, "genres.csv")
    if not storage.isfile(genres_path, storage_options):
        return
    genres = load_genres(genres_path, storage_options)
    titles = set(genres.loc[genres["parent"] == 0, "title"].astype(str))
    given = tracks["track", "genre_top"]
    unknown = (given.notna() & ~given.astype(str).isin(titles)).to_numpy()
    if unknown.any():
        pos = int(unknown.nonzero()[0][0])
        raise DataError(f"{_where(path, pos, tracks.index[pos], ('track', 'genre_top'))}: "
                        f"{given.iloc[pos]!r} is not a top-level genre of {storage.name(genres_path)} "
                        "(a damaged file?): re-download it with 'fmadask fetch metadata'")


#: Bytes read from the end of tracks.csv to count the cells of its last row.
_TAIL_BYTES = 1 << 20


def _tail(source: str | Path | io.BytesIO) -> bytes:
    """The last :data:`_TAIL_BYTES` of a :func:`_source`."""
    if isinstance(source, io.BytesIO):
        return source.getvalue()[-_TAIL_BYTES:]
    with open(source, "rb") as fh:
        fh.seek(max(0, fh.seek(0, io.SEEK_END) - _TAIL_BYTES))
        return fh.read()


def _check_last_row(tracks: pd.DataFrame, path: str | Path, tail: bytes) -> None:
    """The last row has every cell: pandas fills the missing cells of a row cut short with
    NaN, so a file cut right after a cell (a whole subset, no genre) would lose its track
    without a word. ``tail`` is the file's end; a row longer than it is not checked."""
    if tracks.empty:
        return
    track_id = int(tracks.index[-1])
    start = tail.rfind(b"\n%d," % track_id)         # the row starts with its track_id
    if start < 0:
        return
    try:
        rows = [r for r in csv.reader(io.StringIO(tail[start + 1:].decode("utf-8"))) if r]
    except (UnicodeDecodeError, csv.Error):
        return                       # pandas read it: a quoted cell it parses otherwise
    expected = tracks.shape[1] + 1                  # the cells, and the track_id
    if len(rows) == 1 and len(rows[0]) < expected:
        raise DataError(f"{_where(path, len(tracks) - 1, track_id, None)} has {len(rows[0])} of "
                        f"the {expected} cells (a file cut short?): re-download it with "
                        "'fmadask fetch metadata'")


def load_tracks(path_or_dir: str | Path, storage_options: Options = None) -> pd.DataFrame:
    """Load FMA's ``tracks.csv``.

    Parameters
    ----------
    path_or_dir : str or Path
        The file, the ``fma_metadata`` folder, or the data folder holding ``fma_metadata/``;
        a local path or an fsspec URL.
    storage_options : mapping, optional
        fsspec options of a URL (credentials, endpoint).

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
        If the file is missing or is not FMA's tracks.csv schema, or a cell is damaged: a blank,
        non-integral or repeated track_id, an unparseable list cell, an empty subset or split,
        a split other than FMA's three, a genre_top that is not a top-level genre of the
        genres.csv beside it, or a last row with fewer cells than the header (what a file cut
        mid-row looks like). The message names the line and column.
    """
    path = _resolve(path_or_dir, "tracks.csv", storage_options)
    source = _source(path, storage_options)
    tracks = _read_csv(path, header=[0, 1], source=source)
    if not isinstance(tracks.columns, pd.MultiIndex):
        raise DataError(f"{path} is not FMA's tracks.csv: expected two header rows "
                        "(e.g. 'set','subset')")
    missing = [c for c in REQUIRED_TRACK_COLUMNS if c not in tracks.columns]
    if missing:
        names = ", ".join(f"{a}.{b}" for a, b in missing)
        raise DataError(f"{path} is not FMA's tracks.csv: missing columns {names}")
    tracks.index = _check_ids(tracks, path)
    _check_cells(tracks, path, storage_options)
    _check_last_row(tracks, path, _tail(source))
    for column in _LIST_COLUMNS:
        if column in tracks.columns:
            tracks[column] = _parse_lists(tracks, column, path)
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


def load_genres(path_or_dir: str | Path, storage_options: Options = None) -> pd.DataFrame:
    """Load FMA's ``genres.csv``: index ``genre_id``; columns ``#tracks, parent, title, top_level``.

    ``parent`` is 0 for a top-level genre; ``top_level`` is the id of the genre's root.
    """
    path = _resolve(path_or_dir, "genres.csv", storage_options)
    genres = _read_csv(path, header=[0], storage_options=storage_options)
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
