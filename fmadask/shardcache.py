"""A per-host local cache of files read from object storage, verified by their checksums.

The CNN's ranks read spectrogram shards through memory maps, which need local files. When the
run folder is in object storage (``s3://`` ...), each shard is downloaded once per host into this
cache and read from there in every later epoch and by every rank on the host::

    CACHE/<sha256><suffix>          a verified copy, named by its content's SHA-256 (read-only)
    CACHE/.stamps/<name>.json       size, mtime and inode of the copy when it was verified; the
                                    stamp's own mtime is the copy's last use (the LRU clock)
    CACHE/.locks/<xx>               lock files (``flock``): one per first byte of the checksum,
                                    and ``evict``
    CACHE/.<name>.<random>.tmp      a download in progress

Naming a copy by the checksum its completion record lists means a shard changed upstream
(re-featurized) has another name and can never be served from a stale copy. A download is
hashed while it is written, checked against the recorded size and SHA-256, fsynced and published
by an atomic rename, so a copy under its name is whole and verified. A later use trusts a copy
when its size, mtime and inode still equal its stamp (a copy truncated or overwritten since then
no longer does); a copy without a matching stamp is hashed again and re-downloaded if it does not
match.

Several processes (two ranks on one machine, DataLoader workers) may share one cache folder: a
per-checksum lock makes one of them download while the others wait and then use its copy, and a
lock of its own serialises eviction. Past ``max_bytes`` of published copies, the least recently
used go first, never the one being returned; a copy that another process has memory-mapped may
be unlinked safely (Linux keeps its pages until it is unmapped). A reader that finds its copy
evicted between :meth:`ShardCache.fetch` and opening it simply fetches again.

Where the cache lives (on the worker, not on the client): ``cnn.cache_dir``, else
``$FMADASK_CACHE``, else ``$XDG_CACHE_HOME/fmadask/shards``, else ``~/.cache/fmadask/shards``.
Put it on a local disk: ``flock`` is unreliable on some network file systems. Its bound,
``cnn.cache_size``, defaults to 50 GiB, a fixed figure rather than a share of the free space so
that a run behaves the same on every host; a shard larger than the bound is refused in one line.
Downloads in progress (at most one per process) are not counted in the bound.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fmadask import storage
from fmadask.errors import ConfigError, DataError
from fmadask.integrity import file_digest
from fmadask.options import default

#: Environment variable naming the cache folder (below ``cnn.cache_dir``, above the XDG default).
CACHE_ENV = "FMADASK_CACHE"
#: A temporary download untouched this long (seconds) was left by a process that died.
STALE_TMP_S = 600.0
#: Bytes read from the store per call while downloading.
CHUNK = 1 << 22

_SHA256 = re.compile(r"[0-9a-f]{64}")
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,16}")


def default_root() -> Path:
    """The cache folder when none is given: ``$FMADASK_CACHE``, else
    ``$XDG_CACHE_HOME/fmadask/shards``, else ``~/.cache/fmadask/shards``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "fmadask" / "shards"


def gib(size_gib: float) -> int:
    """``size_gib`` GiB in bytes."""
    return int(size_gib * (1 << 30))


class ShardCache:
    """A bounded folder of verified local copies of remote files, shared by the processes of a
    host.

    Parameters
    ----------
    root : str or Path, optional
        The cache folder (created on first use). None or ``''``: :func:`default_root`, resolved
        in the process that uses the cache (a worker's own home, not the client's).
    max_bytes : int, optional
        Bound of the published copies in bytes; least recently used copies are removed past it.
        Default: option ``cnn.cache_size`` (50 GiB).

    The object holds only these two settings: it pickles to other processes, which share the
    folder.
    """

    def __init__(self, root: str | Path | None = None, max_bytes: int | None = None):
        max_bytes = gib(default("cnn.cache_size")) if max_bytes is None else int(max_bytes)
        if max_bytes < 1:
            raise ConfigError(f"the shard cache's size must be positive, not {max_bytes!r}")
        self._root = str(root) if root else None
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"ShardCache({self._root!r}, max_bytes={self.max_bytes})"

    @property
    def root(self) -> Path:
        """The cache folder in this process."""
        return Path(self._root).expanduser() if self._root else default_root()

    def fetch(self, location: str | Path, size: int, sha256: str,
              storage_options: Mapping[str, Any] | None = None) -> Path:
        """A local, verified copy of ``location``: from the cache, else downloaded into it.

        Parameters
        ----------
        location : str or Path
            An fsspec URL (``s3://bucket/run/spectrograms/part-00000.npy``) or a path.
        size : int
            Its recorded size in bytes.
        sha256 : str
            Its recorded SHA-256 (64 lowercase hex digits).
        storage_options : mapping, optional
            fsspec options of the store (used only when the file must be downloaded).

        Returns
        -------
        Path
            ``CACHE/<sha256><suffix>``, whose content has that size and checksum.

        Raises
        ------
        DataError
            The store's file does not match the recorded size and checksum, it is missing, or
            the cache folder cannot be written; :class:`~fmadask.storage.StoreUnavailable` when
            the store cannot be reached.
        ConfigError
            The file is larger than the cache's bound.
        """
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise DataError(f"{storage.redact(location)}: its record holds no valid SHA-256 "
                            f"({sha256!r}): re-run the stage that wrote it")
        if size > self.max_bytes:
            raise ConfigError(f"{storage.redact(location)} ({size / (1 << 30):.2f} GiB) does not "
                              f"fit in the shard cache's bound of {self.max_bytes / (1 << 30):.2f}"
                              " GiB: raise cnn.cache_size")
        suffix = posixpath.splitext(storage.name(location))[1]
        path = self.root / f"{sha256}{suffix if _SUFFIX.fullmatch(suffix) else ''}"
        if self._verified(path, size, sha256):
            return path
        self._make_folders()
        with self._locked(sha256[:2]):
            if self._verified(path, size, sha256):      # another process fetched it meanwhile
                return path
            self._make_room(size, keep=path)
            self._download(location, storage_options, path, size, sha256)
        self._make_room(0, keep=path)
        return path

    # ----------------------------------------------------------------------------- parts

    def _make_folders(self) -> None:
        try:
            for sub in (".stamps", ".locks"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._unwritable(exc) from None

    def _unwritable(self, exc: OSError) -> DataError:
        return DataError(f"cannot write the shard cache {self.root} ({exc.strerror or exc}): "
                         "free space there or choose another folder with cnn.cache_dir "
                         f"(or ${CACHE_ENV}), or lower cnn.cache_size")

    def _stamp(self, path: Path) -> Path:
        return path.parent / ".stamps" / f"{path.name}.json"

    @staticmethod
    def _stat_key(st: os.stat_result) -> dict:
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}

    def _write_stamp(self, path: Path, st: os.stat_result) -> None:
        # Best effort, no fsync: a stamp missing (lost in a crash, a full disk) only makes the
        # next use hash the copy again.
        stamp = self._stamp(path)
        tmp = stamp.with_name(f".{stamp.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            tmp.write_text(json.dumps(self._stat_key(st)))
            os.replace(tmp, stamp)
        except OSError:
            tmp.unlink(missing_ok=True)

    def _verified(self, path: Path, size: int, sha256: str) -> bool:
        """Whether ``path`` is a whole copy with checksum ``sha256`` (its last use is recorded
        when it is)."""
        try:
            st = path.stat()
            if st.st_size != size:
                return False
            stamp = self._stamp(path)
            try:
                trusted = json.loads(stamp.read_text()) == self._stat_key(st)
            except (FileNotFoundError, ValueError):
                trusted = False
            if trusted:
                os.utime(stamp)                       # the LRU clock
                return True
            # Published by a process that died before stamping it, or changed since: hash it.
            if file_digest(path)["sha256"] != sha256:
                return False
            self._write_stamp(path, st)
            return True
        except FileNotFoundError:                     # evicted meanwhile
            return False

    def _download(self, location: str | Path, storage_options: Mapping[str, Any] | None,
                  path: Path, size: int, sha256: str) -> None:
        """Copy ``location`` to ``path``, hashing while writing; publish it only if it matches."""
        from fmadask.atomic import fsync_dir, fsync_file      # numpy, pyarrow: not for --help

        fs, key = storage.filesystem(str(location), storage_options)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")

        def copy() -> tuple[int, str]:
            h, n = hashlib.sha256(), 0
            with fs.open(key, "rb", block_size=CHUNK) as src:
                try:
                    dst = open(tmp, "wb")
                except OSError as exc:
                    raise self._unwritable(exc) from None
                with dst:
                    while chunk := src.read(CHUNK):
                        h.update(chunk)
                        n += len(chunk)
                        try:
                            dst.write(chunk)
                        except OSError as exc:
                            raise self._unwritable(exc) from None
            return n, h.hexdigest()

        try:
            try:
                got_size, got_sha = storage.guarded(location, copy)   # restarted on a retry
            except FileNotFoundError:
                raise DataError(f"{storage.redact(location)} is missing from the store: re-run "
                                "the stage that wrote it") from None
            if (got_size, got_sha) != (size, sha256):
                raise DataError(f"{storage.redact(location)} does not match its record ({got_size}"
                                f" bytes, SHA-256 {got_sha[:12]}..., recorded {size} bytes, "
                                f"{sha256[:12]}...): it was changed or damaged in the store; "
                                "re-run the stage that wrote it")
            try:
                fsync_file(tmp)
                os.chmod(tmp, 0o444)               # a copy is never written to
                os.replace(tmp, path)
                fsync_dir(path.parent)
                self._write_stamp(path, path.stat())
            except OSError as exc:
                raise self._unwritable(exc) from None
        finally:
            tmp.unlink(missing_ok=True)

    def _make_room(self, need: int, keep: Path) -> None:
        """Remove least recently used copies (never ``keep``) until the published copies and
        ``need`` more bytes fit in the bound; also remove stamps without a copy and downloads
        left by dead processes."""
        root = self.root
        with self._locked("evict"):
            now = time.time()
            copies = []            # (last use, bytes, path)
            for entry in os.scandir(root):
                try:
                    if entry.name.startswith("."):
                        if entry.name.endswith(".tmp") and \
                                now - entry.stat().st_mtime > STALE_TMP_S:
                            os.unlink(entry.path)
                        continue
                    st = entry.stat()
                    stamp = self._stamp(Path(entry.path))
                    try:
                        used = stamp.stat().st_mtime
                    except FileNotFoundError:
                        used = st.st_mtime
                    copies.append((used, st.st_size, Path(entry.path)))
                except FileNotFoundError:
                    continue
            names = {p.name for _, _, p in copies}
            for stamp in (root / ".stamps").glob("*.json"):
                if stamp.name[:-len(".json")] not in names:
                    stamp.unlink(missing_ok=True)
            total = sum(n for _, n, _ in copies)
            for _, n, path in sorted(copies):
                if total + need <= self.max_bytes:
                    break
                if path == keep:
                    continue
                path.unlink(missing_ok=True)
                self._stamp(path).unlink(missing_ok=True)
                total -= n

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """Hold the cache's lock ``name`` against other processes and threads."""
        try:
            import fcntl
        except ImportError:        # no flock (Windows): concurrent downloads publish whole
            yield                  # files by rename all the same; the last rename wins
            return
        try:
            fh = open(self.root / ".locks" / name, "a+b")
        except OSError as exc:
            raise self._unwritable(exc) from None
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
