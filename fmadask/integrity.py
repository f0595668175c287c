"""Sizes and checksums of the files fmadask writes, and the checks before it reads them back.

A completion record (a featurize partition) or a model card (``model.json``) lists its files as
``{name: {"size": bytes, "sha256": hex}}``. Before anything is loaded, :func:`verified_files`
checks that every name stays inside its folder (no absolute path, no ``..``, no symlink leading
out) and that size and checksum match, so a damaged or swapped file is refused in one line
instead of being half-read.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from fmadask.errors import DataError


def file_digest(path: str | Path) -> dict:
    """``{'size': bytes, 'sha256': hex}`` of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": h.hexdigest()}


def inside(folder: str | Path, name: object) -> Path:
    """``folder / name`` when ``name`` is a relative name that stays inside ``folder`` (symlinks
    resolved); a DataError otherwise."""
    root = Path(folder).resolve()
    if not isinstance(name, str) or not name or "\x00" in name or Path(name).is_absolute():
        raise DataError(f"{folder}: file name {name!r} is not a name inside the folder")
    path = (root / name).resolve()
    if path != root and root not in path.parents:
        raise DataError(f"{folder}: {name!r} points outside the folder; refusing to read it")
    return path


def verified_files(folder: str | Path, files: Mapping[str, object], what: str) -> dict[str, Path]:
    """The paths of ``files`` (``{role: {"name", "size", "sha256"}}``) after checking each.

    Raises
    ------
    DataError
        A name outside ``folder``, a missing file, or a size or checksum that does not match.
    """
    paths = {}
    for role, entry in files.items():
        if not isinstance(entry, Mapping) or not {"name", "size", "sha256"} <= set(entry):
            raise DataError(f"{folder}: {what} does not record the size and checksum of its "
                            f"{role} file (written by an older fmadask?): make it again")
        path = inside(folder, entry["name"])
        if not path.is_file():
            raise DataError(f"{path} not found: {what} is incomplete, make it again")
        digest = file_digest(path)
        if digest["size"] != entry["size"] or digest["sha256"] != entry["sha256"]:
            raise DataError(f"{path} does not match the checksum {what} records (damaged or "
                            "replaced): make it again")
        paths[role] = path
    return paths


def describe(folder: str | Path, names: Mapping[str, str]) -> dict[str, dict]:
    """``{role: {"name", "size", "sha256"}}`` of files just written into ``folder``."""
    return {role: {"name": name, **file_digest(Path(folder) / name)}
            for role, name in names.items()}
