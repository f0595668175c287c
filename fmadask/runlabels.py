"""The run's label records: both labels of every track featurize selected and the genre tree.

``RUN_DIR/labels.parquet`` (track_id, genre_top or null, genres_all ids) and
``RUN_DIR/genres.parquet`` (genre_id, title, parent, top_level), written by featurize and read by
every later stage (which never re-read ``tracks.csv``). Like :mod:`fmadask.runfolder` it imports
neither Dask nor torch.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fmadask import storage
from fmadask.runfolder import GENRES_FILE, LABELS_FILE, Options, read_parts

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


def labels_schema() -> pa.Schema:
    """Schema of :data:`LABELS_FILE`: each track's ``genre_top`` (null: none) and
    ``genres_all`` ids."""
    import pyarrow as pa

    return pa.schema([("track_id", pa.int64()), ("genre_top", pa.string()),
                      ("genres_all", pa.list_(pa.int64()))])


def genres_schema() -> pa.Schema:
    """Schema of :data:`GENRES_FILE`: the genre tree."""
    import pyarrow as pa

    return pa.schema([("genre_id", pa.int64()), ("title", pa.string()),
                      ("parent", pa.int64()), ("top_level", pa.int64())])


def write_labels(run_dir: str | Path, labels: Sequence[tuple[int, str | None, Sequence[int]]],
                 genres: Sequence[tuple[int, str, int, int]],
                 storage_options: Options = None) -> None:
    """Write :data:`LABELS_FILE` and :data:`GENRES_FILE` of a featurize job (atomically on
    disk, one object each in a bucket).

    Parameters
    ----------
    run_dir : str or Path
        The run folder (its writer holds its lock).
    labels : sequence of (int, str or None, sequence of int)
        Each selected track's id, ``genre_top`` (None: none) and ``genres_all`` ids.
    genres : sequence of (int, str, int, int)
        The genre tree: genre id, title, parent (0 at the top), top-level root.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(zip(*labels)) if labels else [(), (), ()]
    label_schema, genre_schema = labels_schema(), genres_schema()
    tables = {
        LABELS_FILE: pa.Table.from_arrays(
            [pa.array(columns[0], pa.int64()), pa.array(columns[1], pa.string()),
             pa.array([list(ids) for ids in columns[2]], pa.list_(pa.int64()))],
            schema=label_schema),
        GENRES_FILE: pa.Table.from_pylist(
            [dict(zip(genre_schema.names, row)) for row in genres], schema=genre_schema)}
    for name, table in tables.items():
        location = storage.join(run_dir, name)
        if storage.is_url(location):
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
            storage.write_bytes(location, sink.getvalue().to_pybytes(), storage_options)
        else:
            from fmadask.atomic import write_parquet

            write_parquet(table, location)


def read_labels(run_dir: str | Path, storage_options: Options = None
                ) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Both labels of a run's tracks and its genre tree, or None for a run featurized before
    fmadask recorded them.

    Returns
    -------
    labels : pandas.DataFrame
        Indexed by ``track_id`` (sorted); ``genre_top`` (str, None where the track has no single
        top-level genre), ``genres_all`` (list of int genre ids).
    genres : pandas.DataFrame
        Indexed by ``genre_id``; ``title``, ``parent`` (0 at the top), ``top_level``.

    Raises
    ------
    DataError
        A file is damaged.
    """
    paths = [storage.join(run_dir, name) for name in (LABELS_FILE, GENRES_FILE)]
    if not all(storage.isfile(p, storage_options) for p in paths):
        return None
    labels, genres = (read_parts([p], schema, storage_options)
                      for p, schema in zip(paths, (labels_schema(), genres_schema())))
    labels = labels.set_index("track_id").sort_index()
    labels["genres_all"] = [[int(g) for g in ids] for ids in labels["genres_all"]]
    labels["genre_top"] = labels["genre_top"].astype(object).where(labels["genre_top"].notna(),
                                                                   None)
    return labels, genres.set_index("genre_id").sort_index()
