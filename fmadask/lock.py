"""One writer per run folder: an exclusive lock with owner, host and pid.

A run folder (``fmadask featurize/train/cnn/run`` outputs) is written by one process at a time.
The writer creates ``RUN_DIR/.fmadask.lock`` *exclusively* and removes it when done; a second
writer finds it and is refused with one line naming the holder. The lock file holds JSON::

    {"owner": "fmadask featurize", "host": "node7", "pid": 4242, "started": "2026-...",
     "token": "<random>", "boot_id": "<the kernel's>", "pid_start": 123456}

Where the lock lives is behind :class:`LockStore`, a store that can *create a name only if it
does not exist yet*, read it and delete it. :class:`LocalLockStore` does that on a file system
with ``open(O_CREAT | O_EXCL)``, which is atomic on local disks and on NFSv3+;
:class:`ObjectLockStore` does the same on object storage with a conditional PUT
(``If-None-Match: *``, which S3 has honoured since August 2024, and GCS, MinIO and moto too):
the store itself decides which of two concurrent creators wins. :func:`lock_store` picks one
by the folder's form (a path or a URL).

A lock whose holder is dead is *stale*. On the same host fmadask can tell and takes the lock
over: the pid no longer exists, or it names another process than the holder (pids repeat after
a container restart: the process's start time, in clock ticks since boot, differs; after a
reboot the boot id does). On another host it cannot, and the refusal names the file to remove
once that holder is known to be gone. Every refusal names the lock file; a lock file fmadask
cannot have written (a pid out of range, a field of the wrong type) is refused in one line
naming it, never guessed at. Taking over is serialised by a short-lived second
lock (``.fmadask.lock.break``), so two processes that find the same stale lock never remove a
live lock between them.

Every folder a command writes has this lock, whatever flag names it: a stage holds its run
folder's and its output folder's (``--out``: two runs' stages with one ``--out`` would mix their
outputs), :func:`hold` takes them together. Locks are re-entrant within a process: ``fmadask
run`` holds its run folder and the stages it calls take the same lock again without refusing
themselves (a folder named twice is the same lock, taken again).
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from fmadask import storage
from fmadask.errors import FmadaskError

#: Name of the lock inside a run folder.
LOCK_NAME = ".fmadask.lock"
#: A break lock older than this (seconds) was left by a process that died while taking over.
BREAK_STALE_S = 60.0
#: The largest pid ``os.kill`` takes (a C int); 0 and negative pids name process groups.
MAX_PID = 2 ** 31 - 1


class LockedError(FmadaskError):
    """Another process writes the run folder."""


class LockStore(Protocol):
    """Where a lock lives: create-if-absent, read and delete one name.

    Implementations: :class:`LocalLockStore` (files, ``O_EXCL``) and :class:`ObjectLockStore`
    (a conditional PUT, ``If-None-Match: *``).
    """

    def create(self, name: str, data: bytes) -> bool:
        """Create ``name`` holding ``data`` if it does not exist; False if it does."""

    def read(self, name: str) -> bytes | None:
        """The bytes of ``name``, or None if it does not exist."""

    def delete(self, name: str) -> None:
        """Remove ``name`` (no error if it is gone)."""

    def age(self, name: str) -> float | None:
        """Seconds since ``name`` was written, or None if it does not exist."""

    def where(self, name: str) -> str:
        """``name``'s full path or URL, for messages."""


class LocalLockStore:
    """Lock files in a local (or NFS-mounted) folder."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).resolve()

    def create(self, name: str, data: bytes) -> bool:
        from fmadask.atomic import writable_folder

        writable_folder(self.folder)
        try:
            fd = os.open(self.folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, data)
            os.fsync(fd)
        except BaseException:
            # A full disk: no empty lock may stay behind to refuse the re-run as a live holder.
            os.close(fd)
            (self.folder / name).unlink(missing_ok=True)
            raise
        os.close(fd)
        return True

    def read(self, name: str) -> bytes | None:
        try:
            return (self.folder / name).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)

    def age(self, name: str) -> float | None:
        try:
            return time.time() - (self.folder / name).stat().st_mtime
        except FileNotFoundError:
            return None

    def where(self, name: str) -> str:
        return str(self.folder / name)


class ObjectLockStore:
    """Lock objects under a run folder URL, created by a conditional PUT.

    Parameters
    ----------
    folder : str
        The run folder's URL (``s3://bucket/runs/r1``).
    storage_options : mapping, optional
        fsspec options (credentials, endpoint).
    """

    def __init__(self, folder: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.folder = folder.rstrip("/")
        self.fs, self.path = storage.filesystem(self.folder, storage_options)

    def _key(self, name: str) -> str:
        return f"{self.path.rstrip('/')}/{name}"

    def create(self, name: str, data: bytes) -> bool:
        def put() -> None:
            self.fs.pipe_file(self._key(name), data, mode="create")
        try:
            storage.guarded(self.where(name), put)
        except FileExistsError:        # the precondition failed: someone else created it
            return False
        except NotImplementedError:
            raise LockedError(f"{self.where(name)}: this store cannot create an object only "
                              "if it is absent, so two writers could not be kept apart: use "
                              "s3:// (or a local folder) for the run folder") from None
        return True

    def read(self, name: str) -> bytes | None:
        try:
            return storage.guarded(self.where(name), lambda: self.fs.cat_file(self._key(name)))
        except FileNotFoundError:
            return None

    def delete(self, name: str) -> None:
        try:
            storage.guarded(self.where(name), lambda: self.fs.rm_file(self._key(name)))
        except FileNotFoundError:
            pass
        self.fs.invalidate_cache(self._key(name))

    def age(self, name: str) -> float | None:
        try:
            info = storage.guarded(self.where(name), lambda: self.fs.info(self._key(name)))
        except FileNotFoundError:
            return None
        modified = info.get("LastModified") or info.get("mtime")
        if isinstance(modified, datetime.datetime):
            return time.time() - modified.timestamp()
        return None

    def where(self, name: str) -> str:
        return f"{storage.redact(self.folder)}/{name}"


def lock_store(folder: str | os.PathLike[str],
               storage_options: Mapping[str, Any] | None = None) -> LockStore:
    """The :class:`LockStore` of a run folder: lock files in a local folder, lock objects
    (conditional PUT) under a URL."""
    if not storage.is_url(folder):
        return LocalLockStore(folder)
    local = storage.local_path(folder)        # a file:// URL
    return LocalLockStore(local) if local is not None else ObjectLockStore(str(folder),
                                                                           storage_options)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` (1 to :data:`MAX_PID`) exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by someone else
        return True
    return True


def boot_id() -> str | None:
    """This host's boot id (Linux), or None where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux), or None where that
    cannot be read (no such process, no ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2, in parentheses) may hold spaces and parentheses.
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def describe_holder(info: dict) -> str:
    """``'fmadask featurize (pid 4242 on node7, since 2026-...)'``."""
    return (f"{info.get('owner', 'fmadask')} (pid {info.get('pid', '?')} on "
            f"{info.get('host', '?')}, since {info.get('started', '?')})")


def check_holder(info: object) -> str | None:
    """What is wrong with a parsed lock file, or None for one fmadask could have written."""
    if not isinstance(info, dict):
        return "it is not a JSON object"
    pid = info.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or not 1 <= pid <= MAX_PID:
        return f"its pid {pid!r} is not a whole number from 1 to {MAX_PID}"
    for key in ("owner", "host", "started", "token", "boot_id"):
        if info.get(key) is not None and not isinstance(info[key], str):
            return f"its {key} {info[key]!r} is not a string"
    if not isinstance(info.get("host"), str):
        return "it names no host"
    start = info.get("pid_start")
    if start is not None and (not isinstance(start, int) or isinstance(start, bool)
                              or start < 0):
        return f"its pid_start {start!r} is not a whole number >= 0"
    return None


# Locks this process holds: store location -> [token, depth].
_held: dict[str, list] = {}
_held_guard = threading.Lock()


class RunLock:
    """The exclusive lock of one run folder; use as a context manager.

    Parameters
    ----------
    folder : str or PathLike
        The run folder (created if missing).
    owner : str
        What holds the lock, e.g. ``'fmadask featurize'``; shown to a refused writer.
    store : LockStore, optional
        Where the lock lives (default :func:`lock_store` of ``folder``).
    storage_options : mapping, optional
        fsspec options when ``folder`` is a URL.
    """

    def __init__(self, folder: str | os.PathLike[str], owner: str = "fmadask",
                 store: LockStore | None = None,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        self.store = store or lock_store(folder, storage_options)
        self.owner = owner
        self.key = self.store.where(LOCK_NAME)

    def acquire(self) -> None:
        """Take the lock, or raise :class:`LockedError` naming the holder."""
        with _held_guard:
            if self.key in _held:       # re-entrant within this process
                _held[self.key][1] += 1
                return
        token = uuid.uuid4().hex
        info = {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "token": token, "boot_id": boot_id(), "pid_start": process_start(os.getpid())}
        data = (json.dumps(info) + "\n").encode()
        if not self.store.create(LOCK_NAME, data):
            self._take_over_stale(data)
        with _held_guard:
            _held[self.key] = [token, 1]

    def release(self) -> None:
        """Give the lock back (the lock file is removed only if it is still ours)."""
        with _held_guard:
            entry = _held.get(self.key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _held[self.key]
        if _token(self.store.read(LOCK_NAME)) == entry[0]:
            self.store.delete(LOCK_NAME)

    def _take_over_stale(self, data: bytes) -> None:
        """The lock exists: take it over if its holder is dead on this host, else refuse."""
        holder = self._holder()
        if holder is None:
            # Vanished since (its holder released it) or half-written by a dying creator.
            if self.store.read(LOCK_NAME) is None and self.store.create(LOCK_NAME, data):
                return
            holder = self._holder() or {}
        unreadable_and_old = not holder and (self.store.age(LOCK_NAME) or 0) > BREAK_STALE_S
        if not (_is_stale(holder) or unreadable_and_old):
            raise self._refusal(holder)
        brk = LOCK_NAME + ".break"
        if not self.store.create(brk, data):
            age = self.store.age(brk)
            if age is None or age < BREAK_STALE_S:
                raise self._refusal(holder)
            self.store.delete(brk)       # left by a process that died while taking over
            if not self.store.create(brk, data):
                raise self._refusal(holder)
        try:
            # Still the same stale holder? (Another process may have taken over meanwhile.)
            current = self._holder()
            if current is not None and current.get("token") != holder.get("token"):
                raise self._refusal(current)
            self.store.delete(LOCK_NAME)
            if not self.store.create(LOCK_NAME, data):
                raise self._refusal(self._holder() or {})
        finally:
            self.store.delete(brk)

    def _holder(self) -> dict | None:
        """The lock file's holder; None if it is missing or not JSON (half-written).

        Raises
        ------
        LockedError
            The lock file is JSON but not a lock fmadask could have written.
        """
        data = self.store.read(LOCK_NAME)
        try:
            info = None if data is None else json.loads(data)
        except ValueError:
            return None
        problem = None if data is None else check_holder(info)
        if problem is not None:
            where = self.store.where(LOCK_NAME)
            raise LockedError(f"{where} is not a lock fmadask wrote ({problem}): if no fmadask "
                              f"command is writing {where.rsplit('/', 1)[0]}, remove {where}")
        return info

    def _refusal(self, holder: dict) -> LockedError:
        where = self.store.where(LOCK_NAME)
        folder = where.rsplit("/", 1)[0]
        if holder.get("host") == socket.gethostname():
            hint = f"wait for it to finish or stop it, or choose another output folder (lock " \
                   f"file {where})"
        else:
            hint = f"wait for it to finish; if that process is gone, remove {where}, or " \
                   "choose another output folder"
        return LockedError(f"{folder} is being written by {describe_holder(holder)}: {hint}")

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        try:
            self.release()
        except storage.StoreUnavailable:
            if exc is None:
                raise
            # The store went away (what ``exc`` says already): the lock stays, and a re-run on
            # this host takes a dead holder's lock over.


@contextlib.contextmanager
def hold(folders: Iterable[str | os.PathLike[str]], owner: str,
         storage_options: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Hold the :class:`RunLock` of each folder (in order) for the ``with`` block.

    Parameters
    ----------
    folders : iterable of str or PathLike
        The folders a command writes or must not see change: its run folder, its output folder.
        A folder named twice (``--out`` is the run folder) is the same lock, taken again.
    owner : str
        What holds the locks, e.g. ``'fmadask train'``.
    storage_options : mapping, optional
        fsspec options of URL folders.

    Raises
    ------
    LockedError
        Another process holds one of them; those already taken are given back.
    """
    with contextlib.ExitStack() as stack:
        for folder in folders:
            stack.enter_context(RunLock(folder, owner, storage_options=storage_options))
        yield


def _token(data: bytes | None) -> str | None:
    """The token of a lock file's bytes, or None (missing, unreadable, not a lock)."""
    try:
        info = None if data is None else json.loads(data)
    except ValueError:
        return None
    return info.get("token") if isinstance(info, dict) else None


def _is_stale(holder: dict) -> bool:
    """A holder on this host whose process is gone (another host's cannot be checked): its pid
    exists no more, or names a process started at another time (the pid was reused), or the
    host has rebooted since."""
    if holder.get("host") != socket.gethostname() or "pid" not in holder:
        return False
    pid = holder["pid"]
    if not pid_alive(pid):
        return True
    booted, started = holder.get("boot_id"), holder.get("pid_start")
    if booted is not None and boot_id() is not None and booted != boot_id():
        return True
    now = process_start(pid)
    return started is not None and now is not None and started != now
