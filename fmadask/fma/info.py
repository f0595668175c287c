"""What an FMA download holds: tracks per subset, split and genre, and audio missing on disk."""
from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from fmadask import storage
from fmadask.fma.layout import SUBSETS, check_subset
from fmadask.fma.metadata import load_genres, load_tracks
from fmadask.fma.tracks import table_of


def dataset_info(data_dir: str | Path, subset: str = "small",
                 storage_options: Mapping[str, Any] | None = None) -> dict[str, object]:
    """Summarise an FMA data folder.

    Parameters
    ----------
    data_dir : str or Path
        Folder holding ``fma_metadata/`` and the ``fma_<subset>/`` audio folders.
    subset : str
        The subset whose genres, splits and audio files are counted.
    storage_options : mapping, optional
        fsspec options when ``data_dir`` is a URL.

    Returns
    -------
    dict
        ``subsets``: tracks per subset (nested counts, as FMA defines them);
        ``genres``: a genre x split table of track counts for ``subset``;
        ``excluded_no_genre``: tracks of ``subset`` without a single top-level genre;
        ``missing_audio``: ids of tracks of ``subset`` with a genre whose mp3 is not on disk.
    """
    check_subset(subset)
    tracks = load_tracks(data_dir, storage_options)
    nested = {s: int((tracks["set", "subset"] <= s).sum()) for s in SUBSETS}
    # Every track with a genre (its audio is checked too); the genre table counts genre_top's.
    table = table_of(tracks, load_genres(data_dir, storage_options), data_dir, subset,
                     target="genres_all")
    labelled = table[table["genre_top"].notna()]
    genres = pd.crosstab(labelled["genre_top"], labelled["split"], margins=True,
                         margins_name="total")
    if storage.is_url(data_dir):
        # One request per object; a few at a time hide the round trips.
        with ThreadPoolExecutor(max_workers=16) as pool:
            present = list(pool.map(lambda p: storage.isfile(p, storage_options), table["path"]))
    else:
        present = [Path(p).is_file() for p in table["path"]]
    missing = [int(t) for t, ok in zip(table.index, present) if not ok]
    return {"subsets": nested, "genres": genres,
            "excluded_no_genre": len(table) + table.attrs["excluded_no_genre"] - len(labelled),
            "missing_audio": missing}


def format_info(info: dict[str, object], subset: str) -> str:
    """Render :func:`dataset_info`'s result as a plain-text report."""
    subsets = info["subsets"]
    lines = ["tracks per subset (nested: medium includes small):"]
    lines += [f"  {name:<8}{count:>8,}" for name, count in subsets.items()]
    lines += ["", f"{subset}: tracks per top-level genre and split", info["genres"].to_string(), ""]
    lines.append(f"tracks without a single top-level genre (left out): {info['excluded_no_genre']}")
    missing = info["missing_audio"]
    shown = ", ".join(str(t) for t in missing[:10]) + (" ..." if len(missing) > 10 else "")
    lines.append(f"audio files missing on disk: {len(missing)}" + (f" ({shown})" if missing else ""))
    return "\n".join(lines)
