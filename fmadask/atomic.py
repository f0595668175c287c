"""Atomic file writes: a reader never sees a half-written file.

Every output file is first written under a temporary name in its own folder and then renamed
over its final name with :func:`os.replace`, which is atomic within one file system. Temporary
names start with a dot and end with ``.tmp`` (``.part-00003.parquet.<random>.tmp``), so readers
that list ``part-*.parquet`` (and pyarrow/dask, which skip names starting with ``.``) never pick
them up. Each writer draws its own random suffix: when Dask re-runs a partition on another worker
while a first attempt is still alive (or died half-way), the two attempts never share a temporary
file, and whichever renames last leaves the same, complete content.

Durability: the temporary file is fsynced before the rename and the folder after it, so after a
power loss or kernel crash a published name never points at missing or partial data. Memory
mapped shards reserve their disk blocks up front (``posix_fallocate``): on a full disk the writer
gets an ``OSError`` (ENOSPC) at once instead of dying of SIGBUS when a page is first touched.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TEMP_SUFFIX = ".tmp"


def writable_folder(path: str | Path) -> Path:
    """Create ``path`` if needed and check it is a folder this process can write, or raise a
    one-line DataError (before any work, not after hours of it)."""
    from fmadask.errors import DataError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{path} is a file, not a folder: choose another output folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = temp_path(path / "write-test")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DataError(f"cannot write into {path} ({exc.strerror or exc}): choose a writable "
                        "output folder") from None
    return path


def check_writable(path: str | Path) -> None:
    """Raise a one-line DataError when the folder ``path`` (there or still to be made) could not
    be written: its nearest existing folder is a file, on a read-only file system or not
    writable by this process. Nothing is created (a check before any work starts).

    Raises
    ------
    DataError
        The folder could not be written; the message names it and why.
    """
    from fmadask.errors import DataError

    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise DataError(f"cannot write into {path}: {existing} is a file, not a folder: choose "
                        "a writable output folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        why = ("is on a read-only file system" if os.statvfs(existing).f_flag & os.ST_RDONLY
               else "is not writable by this user")
        raise DataError(f"cannot write into {path}: {existing} {why}: choose a writable output "
                        "folder")


def fsync_file(path: Path) -> None:
    """Flush ``path``'s data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Flush ``folder``'s entries (a rename into it) to disk; a no-op where folders cannot be
    opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass          # some file systems refuse fsync on folders; the rename still happened
    finally:
        os.close(fd)


def publish(tmp: Path, path: Path) -> None:
    """fsync ``tmp``, rename it to ``path`` and fsync the folder."""
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def temp_path(path: Path) -> Path:
    """A fresh temporary name next to ``path``, private to the caller."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``, on failure remove it.

    Parameters
    ----------
    path : str or Path
        Final file name. Its folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(table: pa.Table, path: str | Path) -> None:
    """Write a pyarrow ``table`` to the Parquet file ``path`` atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a record: without any URL's password)."""
    from fmadask.errors import redact

    with atomic_path(path) as tmp:
        tmp.write_text(redact(text))


def write_json(obj: object, path: str | Path) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


class NpyShard:
    """A ``.npy`` array filled row by row on disk, renamed into place when closed.

    Rows are written through a memory map of a temporary file, so the writer's memory does not
    grow with the number of rows. ``close(n_rows)`` keeps only the first ``n_rows`` rows (the
    tracks that succeeded); when that is fewer than were reserved, the rows are copied one at a
    time into a file of the right shape (rare: only partitions with failed tracks pay for it).

    Parameters
    ----------
    path : Path
        Final ``.npy`` file name.
    shape : tuple of int
        ``(max_rows, *row_shape)``: rows reserved.
    dtype : numpy dtype
        Element type (float16 for spectrograms).
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype | type) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temp_path(self.path)
        try:
            self._array = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=dtype,
                                                    shape=shape)
            _reserve(self._tmp)
        except BaseException:
            self._array = None
            self._tmp.unlink(missing_ok=True)
            raise

    def __setitem__(self, row: int, value: np.ndarray) -> None:
        self._array[row] = value

    def close(self, n_rows: int) -> None:
        """Keep the first ``n_rows`` rows and move the file to its final name."""
        array = self._array
        compact = n_rows != array.shape[0]
        if compact:
            with atomic_path(self.path) as tmp:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=array.dtype,
                                                shape=(n_rows,) + array.shape[1:])
                for row in range(n_rows):
                    out[row] = array[row]
                out.flush()
                del out
        else:
            array.flush()
        # Release the memory maps before the file is renamed or removed.
        del array
        self._array = None
        if compact:
            self._tmp.unlink(missing_ok=True)
        else:
            publish(self._tmp, self.path)

    def discard(self) -> None:
        """Drop the temporary file (after an exception)."""
        self._array = None
        self._tmp.unlink(missing_ok=True)


def _reserve(path: Path) -> None:
    """Allocate every block of ``path`` now (ENOSPC here, not SIGBUS in a memory map later)."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            return      # the file system cannot reserve: fall back to a sparse file
        raise
    finally:
        os.close(fd)


def remove_temp_files(folder: Path) -> int:
    """Remove temporary files left in ``folder`` by writers that died; return how many.

    Only safe when no writer is running in ``folder`` (at the start of a job).
    """
    if not folder.is_dir():
        return 0
    stale = [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX)]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)
