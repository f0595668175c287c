"""Where a CNN run writes: its output folder on disk, or a folder in object storage.

A local output folder (``RUN_DIR/cnn/<arch>``) is written in place, as it always was. An output
folder in object storage (``s3://bucket/runs/r1/cnn/<arch>``) is written by rank 0 into a local
temporary folder of its own, laid out the same way, and each file is uploaded whole (one PUT, or
a multipart upload that becomes visible only when it completes):

- after every epoch: ``checkpoints/best.pt`` (when it changed), ``checkpoints/last.pt``, then
  ``checkpoints/last.json``, the record of the checkpoints' sizes and SHA-256, then
  ``metrics.csv`` and ``curves.png``;
- at the end: every other file, ``report.md`` and last of all ``model.json`` (the model card
  ``fmadask predict`` and ``fuse`` look for), so a folder cut off half-way never looks complete.

A resumed run downloads ``checkpoints/`` into each rank's temporary folder and checks every file
against ``last.json`` before loading it. A run cut off between the upload of ``last.pt`` and that
of its record leaves a checkpoint that does not match its record: it is refused in one line
(train again without ``--resume``) rather than trusted.
"""
from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmadask import storage
from fmadask.atomic import write_json
from fmadask.errors import DataError
from fmadask.integrity import describe, inside, verified_files
from fmadask.runfolder import (BEST_CHECKPOINT, CHECKPOINT_FILES, CHECKPOINT_RECORD, CHECKPOINTS,
                               CNN_DIR, CURVES_FILE, LAST_CHECKPOINT, METRICS_FILE, MODEL_CARD,
                               REPORT_FILE)

#: Files uploaded after all others at the end, in this order: the card says "complete".
LAST = (REPORT_FILE, MODEL_CARD)
#: Files a fresh (not resumed) run removes from an output folder in object storage, the card
#: first: until the new run ends, the folder does not look complete.
FRESH_START = (MODEL_CARD, REPORT_FILE, f"{CHECKPOINTS}/{CHECKPOINT_RECORD}",
               f"{CHECKPOINTS}/{LAST_CHECKPOINT}", f"{CHECKPOINTS}/{BEST_CHECKPOINT}",
               METRICS_FILE)


def out_location(run_dir: str | Path, out_dir: str | None) -> str | Path:
    """The output folder: ``out_dir`` or ``RUN_DIR/cnn``; a URL string for object storage, a
    Path otherwise (``file://`` becomes its path)."""
    return storage.location(out_dir or storage.join(run_dir, CNN_DIR))


@dataclass
class OutputFolder:
    """Where rank 0 writes (``local``) and, for object storage, where it uploads (``remote``).

    Attributes
    ----------
    local : Path
        The folder the trainer writes into.
    remote : str, optional
        The URL the files go to (None: ``local`` is the output folder itself).
    storage_options : mapping, optional
        fsspec options of ``remote`` (secrets: left out of the repr).
    """

    local: Path
    remote: str | None = None
    storage_options: Mapping[str, Any] | None = field(default=None, repr=False)
    _sent: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def location(self) -> str | Path:
        """The output folder as a user names it: the URL, or the local folder."""
        return self.remote if self.remote is not None else self.local

    def _put(self, name: str) -> None:
        storage.put_file(self.local / name, storage.join(self.remote, *name.split("/")),
                         self.storage_options)

    def publish_epoch(self) -> None:
        """Upload the checkpoints, their record, metrics.csv and curves.png (object storage
        only; a checkpoint already uploaded with the same content is not sent again)."""
        if self.remote is None:
            return
        folder = self.local / CHECKPOINTS
        present = {name: name for name in CHECKPOINT_FILES if (folder / name).is_file()}
        record = {"files": describe(folder, present)}
        for name, entry in record["files"].items():
            if self._sent.get(name) != entry["sha256"]:
                self._put(f"{CHECKPOINTS}/{name}")
                self._sent[name] = entry["sha256"]
        write_json(record, folder / CHECKPOINT_RECORD)
        self._put(f"{CHECKPOINTS}/{CHECKPOINT_RECORD}")
        for name in (METRICS_FILE, CURVES_FILE):
            if (self.local / name).is_file():
                self._put(name)

    def publish_final(self) -> None:
        """Upload every file not uploaded with the checkpoints, :data:`LAST` last (object
        storage only)."""
        if self.remote is not None:
            storage.upload_folder(self.local, self.remote, self.storage_options, last=LAST,
                                  skip=(CHECKPOINTS,))


@contextlib.contextmanager
def output_folder(location: str | Path, storage_options: Mapping[str, Any] | None = None,
                  resume: bool = False) -> Iterator[OutputFolder]:
    """The :class:`OutputFolder` of ``location`` for one rank.

    A local ``location`` is written in place. For object storage, a temporary folder is made
    (and removed on exit); with ``resume`` the checkpoints are downloaded into it and verified
    (:func:`fetch_checkpoints`).
    """
    if not storage.is_remote(location):
        yield OutputFolder(Path(location))
        return
    with tempfile.TemporaryDirectory(prefix="fmadask-cnn-") as tmp:
        if resume:
            fetch_checkpoints(str(location), Path(tmp), storage_options)
        yield OutputFolder(Path(tmp), str(location), storage_options)


def fetch_checkpoints(location: str, local: Path,
                      storage_options: Mapping[str, Any] | None = None) -> bool:
    """Download the checkpoints of an output folder in object storage into ``local/checkpoints``
    and check each against the record uploaded after them.

    Returns
    -------
    bool
        False when the folder has no checkpoint record (nothing to resume).

    Raises
    ------
    DataError
        The record is damaged, or a checkpoint is missing or does not match it.
    """
    record_url = storage.join(location, CHECKPOINTS, CHECKPOINT_RECORD)
    try:
        record = json.loads(storage.read_bytes(record_url, storage_options))
        files = record["files"]
        if not isinstance(files, dict):
            raise TypeError(type(files).__name__)
    except FileNotFoundError:
        return False
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{storage.redact(record_url)} is damaged: train again without "
                        "--resume") from None
    folder = local / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for entry in files.values():
            name = entry.get("name") if isinstance(entry, dict) else None
            storage.get_file(storage.join(location, CHECKPOINTS, str(name)),
                             inside(folder, name), storage_options)
        verified_files(folder, files, CHECKPOINT_RECORD)
    except (DataError, FileNotFoundError) as exc:
        if isinstance(exc, storage.StoreUnavailable):
            raise
        raise DataError(f"the checkpoints in {storage.redact(location)}/{CHECKPOINTS} do not "
                        f"match their record {CHECKPOINT_RECORD} (an upload cut short, or "
                        "damage): train again without --resume") from None
    return True


def has_checkpoint(location: str | Path,
                   storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether an output folder holds a checkpoint to resume from."""
    if storage.is_remote(location):
        return storage.isfile(storage.join(location, CHECKPOINTS, CHECKPOINT_RECORD),
                              storage_options)
    return (Path(location) / CHECKPOINTS / LAST_CHECKPOINT).is_file()


def remove_remote_outputs(location: str, storage_options: Mapping[str, Any] | None = None
                          ) -> None:
    """Remove an older run's card, report, checkpoints and metrics from an output folder in
    object storage (a run that does not resume), the card first."""
    for name in FRESH_START:
        storage.remove(storage.join(location, *name.split("/")), storage_options)
