"""The one place that knows FMA's file layout.

An FMA download looks like::

    DATA_DIR/fma_metadata/tracks.csv, genres.csv, features.csv, echonest.csv
    DATA_DIR/fma_<subset>/AAA/AAABBB.mp3      (AAABBB = track id, zero-padded to 6 digits)
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fmadask import storage
from fmadask.errors import DataError
from fmadask.options import AUDIO_SUBSETS

#: FMA's nested subsets, smallest first. Choosing one includes every smaller one; the audio
#: archives (:data:`~fmadask.options.AUDIO_SUBSETS`) add ``full`` (untrimmed audio).
SUBSETS: tuple[str, ...] = AUDIO_SUBSETS[:-1]
METADATA_DIR = "fma_metadata"


def check_subset(subset: str) -> str:
    """Return ``subset`` if FMA knows it, else raise a one-line :class:`DataError`."""
    if subset not in AUDIO_SUBSETS:
        raise DataError(f"unknown subset {subset!r}: choose one of {', '.join(AUDIO_SUBSETS)}")
    return subset


def metadata_path(data_dir: str | Path, name: str,
                  storage_options: Mapping[str, Any] | None = None) -> str | Path:
    """Path (or URL) of one of FMA's metadata files, e.g. ``metadata_path(d, 'tracks.csv')``.

    Accepts the data folder (holding ``fma_metadata/``) or the ``fma_metadata`` folder itself,
    as a local path or an fsspec URL. Raises :class:`DataError` when the file does not exist.
    """
    if not storage.is_url(data_dir):
        data_dir = Path(data_dir)
        if not data_dir.exists():
            raise DataError(f"data folder {data_dir} does not exist: pass the folder that holds "
                            f"{METADATA_DIR}/ (or run 'fmadask fetch metadata --to {data_dir}')")
    folder = (data_dir if storage.name(data_dir) == METADATA_DIR
              else storage.join(data_dir, METADATA_DIR))
    path = storage.join(folder, name)
    if not storage.isfile(path, storage_options):
        shown = storage.redact(path)
        raise DataError(f"{shown} not found: download FMA's metadata with "
                        f"'fmadask fetch metadata --to {storage.redact(data_dir)}' or pass the "
                        "right folder")
    return path


def audio_dir(data_dir: str | Path, subset: str) -> str | Path:
    """Folder holding the mp3s of ``subset``: ``DATA_DIR/fma_<subset>`` (a URL for a URL)."""
    return storage.join(data_dir, f"fma_{check_subset(subset)}")


def audio_relpath(track_id: int) -> str:
    """Path of a track's mp3 relative to its subset folder: ``AAA/AAABBB.mp3``.

    Examples
    --------
    >>> audio_relpath(2)
    '000/000002.mp3'
    """
    tid = f"{int(track_id):06d}"
    return f"{tid[:3]}/{tid}.mp3"


def audio_path(data_dir: str | Path, track_id: int, subset: str = "small") -> str | Path:
    """Path (or URL) of a track's mp3 in the ``fma_<subset>`` folder of ``data_dir``."""
    return storage.join(audio_dir(data_dir, subset), *audio_relpath(track_id).split("/"))
