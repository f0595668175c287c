"""Where fmadask reads and writes: a local path or an fsspec URL (``s3://``, ``gs://``,
``https://`` for read-only data, ``file://``, ``memory://``).

Local paths keep their plain :mod:`pathlib` code paths everywhere (same bytes, same fsync and
rename); only URLs go through fsspec. Credentials and endpoints come the standard way: the
environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` ... read by
botocore), fsspec's own configuration, and ``storage_options`` (the job spec's ``[data]`` /
``[output] storage_options``, the command line's ``--storage-option KEY=VALUE``), passed to the
filesystem as keyword arguments. Those options are secrets: they are handed to the workers as
task arguments but never printed, logged or written to a run folder; :func:`redact` removes the
``user:password@`` of any URL from what is shown or recorded.

Objects are written whole (one PUT), so a reader never sees half an object; the completion
record of a partition is written after its files, exactly as on disk.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import posixpath
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

# storage.redact is the one redaction (fmadask.errors): locations are what it is mostly for.
from fmadask.errors import ConfigError, DataError, redact

T = TypeVar("T")

#: Attempts of a read that failed on a transient error (a reset connection, a timeout, a 5xx).
ATTEMPTS = 4
#: Seconds before the first retry; doubled each time.
BACKOFF_S = 0.5


def is_url(location: str | Path) -> bool:
    """True for fsspec URLs such as ``s3://bucket/x`` (a Windows drive letter is not one)."""
    if isinstance(location, Path):
        return False
    scheme, sep, _ = str(location).partition("://")
    return bool(sep) and len(scheme) > 1


#: Protocols that serve files but take none (a data folder, never a run folder).
READ_ONLY = ("http", "https")


def is_read_only(location: str | Path) -> bool:
    """Whether ``location`` is a URL of a read-only protocol (``https://``)."""
    return is_url(location) and _protocol(str(location)) in READ_ONLY


def local_path(location: str | Path) -> Path | None:
    """The local path of ``location`` (plain or ``file://``), or None for other URLs."""
    if not is_url(location):
        return Path(location).expanduser().resolve()
    if str(location).startswith("file://"):
        return Path(str(location)[len("file://"):]).resolve()
    return None


def is_remote(location: str | Path) -> bool:
    """Whether ``location`` is in object storage or on a server: a URL that is not
    ``file://`` (the one rule every stage uses to choose between a path and fsspec)."""
    return is_url(location) and local_path(location) is None


def location(where: str | Path) -> str | Path:
    """``where`` as the stages use it: a remote URL as a string without a trailing ``/``, a
    local path (plain or ``file://``) as a :class:`~pathlib.Path`."""
    if is_remote(where):
        return str(where).rstrip("/")
    return local_path(where) if is_url(where) else Path(where)


def parse_storage_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``['anon=true', 'client_kwargs.region_name=eu-west-1']`` as a nested dict.

    ``true``/``false`` become booleans and whole numbers integers; a dotted key builds nested
    dicts (fsspec's ``client_kwargs`` and ``config_kwargs`` take them).

    Raises
    ------
    ConfigError
        An item is not ``KEY=VALUE``.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            from fmadask.options import setting

            raise ConfigError(f"storage option {pair.split('=')[0]!r} is not KEY=VALUE: give "
                              f"e.g. anon=true to {setting('data.storage_options')}")
        value: Any = text
        if text.lower() in ("true", "false"):
            value = text.lower() == "true"
        elif re.fullmatch(r"-?\d+", text):
            value = int(text)
        *parents, leaf = key.strip().split(".")
        node = options
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ConfigError(f"storage option {key!r} conflicts with {name!r}")
        node[leaf] = value
    return options


def _protocols(url: str) -> list[str]:
    """The protocols of a URL, outermost first: ``['s3']``, ``['simplecache', 's3']``."""
    return [p.lower() for p in str(url).split("://", 1)[0].split("::")]


def _protocol(url: str) -> str:
    """The store's protocol of a URL: the innermost of a chain (``s3`` of ``simplecache::s3``;
    the cache layers are fsspec's own)."""
    return _protocols(url)[-1]


def _missing_driver(url: str, exc: ImportError) -> ConfigError:
    """The one-line error of a protocol whose fsspec driver is not installed, naming the
    package to install (fsspec's registry names the class that serves each protocol)."""
    from fsspec.registry import known_implementations

    protocol = _protocol(url)
    if protocol in ("s3", "s3a"):
        package = "'fmadask[s3]'"
    else:
        module = known_implementations.get(protocol, {}).get("class", "fsspec").split(".")[0]
        # A driver inside fsspec itself needs some other package, which fsspec's message names.
        package = None if module == "fsspec" else module
    hint = (f"pip install {package}" if package else
            f"install the package it names ({' '.join(str(exc).split())[:200]})")
    return ConfigError(f"{redact(url)}: no fsspec driver for {protocol}:// is installed: {hint} "
                       "(on the client and on every worker)")


def require_driver(location: str | Path) -> None:
    """Fail now, in one line, when ``location`` is a URL whose protocol has no fsspec driver
    installed (``gs://`` without gcsfs, say): before a cluster starts or any work is done.
    Nothing is contacted: the driver is imported, not instantiated.

    Raises
    ------
    ConfigError
        The driver is missing (the message names the package to install), or the protocol is
        unknown.
    """
    if not is_url(location) or local_path(location) is not None:
        return
    import fsspec

    try:
        for protocol in _protocols(str(location)):
            fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        raise _missing_driver(str(location), exc) from None
    except ValueError as exc:           # a protocol fsspec does not know
        raise ConfigError(f"{redact(location)}: {exc}") from None


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """``(fsspec filesystem, path inside it)`` of a URL, or a one-line ConfigError."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    except ImportError as exc:
        raise _missing_driver(url, exc) from None
    except (ValueError, TypeError) as exc:  # unknown protocol or option
        raise ConfigError(f"{redact(url)}: {exc}") from None
    except OSError as exc:   # a driver that needs a native library (hdfs: libjvm) failed to load
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"{redact(url)}: cannot open its file system ({first})") from None


def join(location: str | Path, *parts: str) -> str | Path:
    """``location / parts``: a Path for a local path, a URL string for a URL."""
    if is_url(location):
        return posixpath.join(str(location).rstrip("/"), *parts)
    return Path(location).joinpath(*parts)


def name(location: str | Path) -> str:
    """The last component of a path or URL."""
    return posixpath.basename(str(location).rstrip("/")) if is_url(location) else Path(location).name


def resolve(location: str | Path) -> str | Path:
    """An absolute local path, or the URL unchanged."""
    return str(location) if is_url(location) else Path(location).resolve()


def _http_error(exc: BaseException) -> Any:
    """``exc`` when it is one of aiohttp's client errors (fsspec's HTTP driver), else None."""
    try:
        import aiohttp
    except ImportError:
        return None
    return exc if isinstance(exc, aiohttp.ClientError) else None


def is_store_error(exc: BaseException) -> bool:
    """Whether ``exc`` says a store failed: an OSError, botocore's own exceptions (s3fs lets
    connection failures through) or aiohttp's (an HTTP server's error status)."""
    return (isinstance(exc, OSError) or type(exc).__module__.startswith("botocore")
            or _http_error(exc) is not None)


def is_transient(exc: BaseException) -> bool:
    """Whether a read failed for a reason that may pass (network, timeout, server error)."""
    if type(exc).__module__.startswith("botocore"):
        # Connection failures and timeouts; not signature, credential or parameter errors.
        return any(c.__name__ in ("ConnectionError", "HTTPClientError")
                   for c in type(exc).__mro__)
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError,
                        NotADirectoryError, FileExistsError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
        return True
    http = _http_error(exc)
    if http is not None:      # a status below 500 (403, 416 ...) will not change on a retry
        return getattr(http, "status", 500) >= 500
    return isinstance(exc, OSError)


def with_retries(action: Callable[[], T], attempts: int = ATTEMPTS,
                 backoff_s: float = BACKOFF_S) -> T:
    """``action()``, retried with exponential backoff while it fails transiently."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as exc:
            if attempt == attempts - 1 or not is_transient(exc):
                raise
            time.sleep(backoff_s * 2 ** attempt)
    raise AssertionError("unreachable")


class StoreUnavailable(DataError):
    """A store could not be reached or refused the request (network, credentials, bucket).

    Unlike a bad file this is no property of a track: a job stops the partition (to be redone
    by a re-run) instead of recording the track as bad."""


def unreachable(location: str | Path, exc: BaseException) -> StoreUnavailable:
    """The one-line error of a store that refused or could not be reached."""
    if isinstance(exc, StoreUnavailable):
        return exc
    from fmadask.options import setting

    reason = " ".join(str(exc).split())[:200] or type(exc).__name__
    return StoreUnavailable(f"cannot reach {redact(location)} ({type(exc).__name__}: {reason}): "
                            "check the URL, the bucket, credentials (AWS_* variables or "
                            f"{setting('data.storage_options')}) and the endpoint "
                            "(AWS_ENDPOINT_URL), then re-run the same command")


def isfile(location: str | Path, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether a local file or an object exists (an unreachable store is a DataError)."""
    if not is_url(location):
        return Path(location).is_file()
    try:
        # info, not fs.isfile: that one answers False when the store cannot be reached.
        return info(location, storage_options).get("type") == "file"
    except FileNotFoundError:
        return False


def exists(location: str | Path, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether a local path or URL exists (an unreachable store is a DataError)."""
    local = local_path(location)
    if local is not None:
        return local.exists()
    try:
        info(location, storage_options)
        return True
    except FileNotFoundError:
        return False


def guarded(location: str | Path, action: Callable[[], T]) -> T:
    """``action()`` on a store, retried while it fails transiently; FileNotFoundError and
    FileExistsError (a failed precondition) pass through, other store failures become :class:`StoreUnavailable`, options the store does not
    take a ConfigError."""
    try:
        return with_retries(action)
    except (FileNotFoundError, FileExistsError):   # answers, not failures
        raise
    except TypeError as exc:     # fsspec passes unknown options on until the first request
        raise ConfigError(f"{redact(location)}: a storage option is not accepted ({exc})"
                          ) from None
    except Exception as exc:
        if not is_store_error(exc):
            raise
        raise unreachable(location, exc) from None


def info(location: str | Path, storage_options: Mapping[str, Any] | None = None) -> dict:
    """fsspec's ``info`` of a URL (``type``, ``size`` ...); FileNotFoundError if absent."""
    fs, path = filesystem(str(location), storage_options)
    return guarded(location, lambda: fs.info(path))


def read_bytes(location: str | Path, storage_options: Mapping[str, Any] | None = None) -> bytes:
    """The whole content of a local file or an object (retried on transient errors).

    Raises
    ------
    FileNotFoundError
        No such file or object.
    StoreUnavailable
        Any other failure of a store, after :data:`ATTEMPTS` tries when it looked transient.
    """
    if not is_url(location):
        return Path(location).read_bytes()
    fs, path = filesystem(str(location), storage_options)
    return guarded(location, lambda: fs.cat_file(path))


def read_many(locations: Sequence[str | Path], storage_options: Mapping[str, Any] | None = None
              ) -> list[bytes | None]:
    """The contents of several files or objects of one store, None for each that is not there
    (or, on disk, cannot be read).

    Objects are fetched concurrently (one request each, none waiting on another: a thousand
    small records cost about what one round trip does, not a thousand); retried on transient
    errors like :func:`read_bytes`, and any failure but a missing object is a
    :class:`StoreUnavailable`.
    """
    from glob import has_magic

    if not locations:
        return []
    fs, _ = (filesystem(str(locations[0]), storage_options) if is_url(locations[0])
             else (None, None))
    paths = [fs._strip_protocol(str(location)) for location in locations] if fs else []
    if fs is None or any(has_magic(p) for p in paths):   # fsspec's cat would glob those
        found: list[bytes | None] = []
        for location in locations:
            try:
                found.append(read_bytes(location, storage_options))
            except FileNotFoundError:
                found.append(None)
            except OSError:
                if fs is not None:
                    raise
                found.append(None)      # on disk, unreadable is as good as absent
        return found

    def fetch() -> dict:
        got = fs.cat(paths, on_error="return")
        for value in got.values():
            if isinstance(value, Exception) and not isinstance(value, FileNotFoundError):
                raise value
        return got

    got = guarded(locations[0], fetch)
    return [None if isinstance(got[p], Exception) else got[p] for p in paths]


def size(location: str | Path, storage_options: Mapping[str, Any] | None = None) -> int:
    """Size in bytes of a local file or an object (FileNotFoundError if there is none)."""
    if not is_url(location):
        return Path(location).stat().st_size
    found = info(location, storage_options)
    if found.get("type") == "directory":
        raise IsADirectoryError(str(location))
    return int(found["size"])



def digest(location: str | Path, storage_options: Mapping[str, Any] | None = None) -> dict:
    """``{'size': bytes, 'sha256': hex}`` of a local file or an object (read in 1 MiB blocks)."""
    from fmadask.integrity import file_digest

    if not is_url(location):
        return file_digest(location)
    fs, path = filesystem(str(location), storage_options)

    def read() -> dict:
        h = hashlib.sha256()
        n = 0
        with fs.open(path, "rb", block_size=1 << 22) as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
                n += len(chunk)
        return {"size": n, "sha256": h.hexdigest()}

    return guarded(location, read)


def write_bytes(location: str | Path, data: bytes,
                storage_options: Mapping[str, Any] | None = None) -> None:
    """Write ``data`` whole: an atomic rename on disk (:mod:`fmadask.atomic`), one PUT for a URL
    (an object is visible only once all of it is stored)."""
    if not is_url(location):
        from fmadask.atomic import atomic_path

        with atomic_path(location) as tmp:
            tmp.write_bytes(data)
        return
    fs, path = filesystem(str(location), storage_options)
    guarded(location, lambda: fs.pipe_file(path, data))


def put_file(local: str | Path, location: str, storage_options: Mapping[str, Any] | None = None
             ) -> None:
    """Upload a local file to a URL whole (one PUT, or a multipart upload that becomes visible
    only when it completes)."""
    fs, path = filesystem(location, storage_options)
    guarded(location, lambda: fs.put_file(str(local), path))


def get_file(location: str, local: str | Path,
             storage_options: Mapping[str, Any] | None = None) -> Path:
    """Download one object to a local file (FileNotFoundError if there is none).

    The local file's missing folders are created for it, and removed again when the download
    fails: a probe for an object that is not there (``cnn/<entry>/model.json``) must not leave
    a folder named like a file that is downloaded next (``cnn/predictions.parquet``)."""
    fs, path = filesystem(location, storage_options)
    local = Path(local)
    created = [p for p in local.parents if not p.exists()]     # deepest first
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        guarded(location, lambda: fs.get_file(path, str(local)))
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break       # not empty: something else was put there meanwhile
        raise
    return local


def remove(location: str | Path, storage_options: Mapping[str, Any] | None = None) -> None:
    """Delete a file or object; no error when it is already gone."""
    if not is_url(location):
        Path(location).unlink(missing_ok=True)
        return
    fs, path = filesystem(str(location), storage_options)
    try:
        guarded(location, lambda: fs.rm_file(path))
    except FileNotFoundError:
        pass
    fs.invalidate_cache(path)


def listdir(location: str | Path, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Names directly under a folder or URL prefix (sorted; [] when there is none)."""
    if not is_url(location):
        folder = Path(location)
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    fs, path = filesystem(str(location), storage_options)
    fs.invalidate_cache(path)
    try:
        entries = guarded(location, lambda: fs.ls(path, detail=False))
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(e.rstrip("/")) for e in entries)


def etag(entry: Mapping[str, Any]) -> str | None:
    """The entity tag of an object in an fsspec ``info`` or ``ls`` entry, unquoted: S3's
    ``ETag``, the ``etag`` of GCS and Azure; None when the store reports none. A store gives an
    object a new tag whenever its content is written, so an unchanged tag means unchanged bytes
    without reading them."""
    tag = entry.get("ETag", entry.get("etag"))
    return str(tag).strip('"') if tag else None


def _local_entry(path: Path) -> dict:
    """What :func:`list_files` says of a local file. Its tag is the file's modification and
    change times, in ns: any write of its bytes changes both, and a change time cannot be set
    back (setting the modification time back sets it), so an equal tag means bytes unchanged
    since the tag was taken, short of a write in the same clock tick."""
    found = path.stat()
    return {"size": found.st_size, "etag": f"{found.st_mtime_ns}-{found.st_ctime_ns}"}


def entry(location: str | Path, storage_options: Mapping[str, Any] | None = None) -> dict:
    """``{"size": bytes, "etag": str or None}`` of one file or object (as :func:`list_files`
    says of it; FileNotFoundError if absent, IsADirectoryError for a folder)."""
    if not is_url(location):
        if Path(location).is_dir():
            raise IsADirectoryError(str(location))
        return _local_entry(Path(location))
    found = info(location, storage_options)
    if found.get("type") == "directory":
        raise IsADirectoryError(str(location))
    return {"size": int(found["size"]), "etag": etag(found)}


def list_files(location: str | Path, storage_options: Mapping[str, Any] | None = None
               ) -> dict[str, dict]:
    """Files directly under a folder or URL prefix with what the store says of each, from one
    listing (no object is read): ``{name: {"size": bytes, "etag": str or None}}``; {} when
    there is no such folder. A local file's tag is its times (:func:`_local_entry`)."""
    if not is_url(location):
        folder = Path(location)
        return ({p.name: _local_entry(p) for p in sorted(folder.iterdir()) if p.is_file()}
                if folder.is_dir() else {})
    fs, path = filesystem(str(location), storage_options)
    fs.invalidate_cache(path)
    try:
        entries = guarded(location, lambda: fs.ls(path, detail=True))
    except FileNotFoundError:
        return {}
    return {posixpath.basename(e["name"].rstrip("/")): {"size": int(e["size"]), "etag": etag(e)}
            for e in entries if e.get("type") == "file"}


def upload_folder(local: str | Path, location: str,
                  storage_options: Mapping[str, Any] | None = None,
                  last: Sequence[str] = (), skip: Sequence[str] = ()) -> int:
    """Upload every file under a local folder to a URL, each whole; files named in ``last``
    go after all others, in that order (a manifest after the files it lists); the folders named
    in ``skip`` stay behind. Returns how many files went up. The one way fmadask publishes a
    folder written locally into object storage.

    ``last`` names files by their name in any folder: each model folder's ``model.json`` goes
    up after the files it lists."""
    root = Path(local)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    files = [n for n in files if n.split("/")[0] not in skip]
    rank = {name: i + 1 for i, name in enumerate(last)}
    # stable: the sorted order otherwise
    files.sort(key=lambda n: rank.get(n.rsplit("/", 1)[-1], 0))
    for name in files:
        put_file(root.joinpath(*name.split("/")), join(location, *name.split("/")),
                 storage_options)
    return len(files)


@contextlib.contextmanager
def staged(location: str | Path, storage_options: Mapping[str, Any] | None = None,
           last: Sequence[str] = ()) -> Iterator[Path]:
    """The local folder to write the files of folder ``location`` into: ``location`` itself
    on disk; for object storage a private temporary folder, uploaded by :func:`upload_folder`
    (``last`` last) when the block ends without an error, then removed."""
    import tempfile

    if not is_remote(location):
        yield Path(location)
        return
    with tempfile.TemporaryDirectory(prefix="fmadask-") as tmp:
        yield Path(tmp)
        upload_folder(tmp, str(location), storage_options, last=last)


def download_folder(location: str, local: str | Path,
                    storage_options: Mapping[str, Any] | None = None) -> Path:
    """Copy every object under a URL prefix into a local folder (which must be empty)."""
    fs, path = filesystem(location, storage_options)
    prefix = path.rstrip("/") + "/"
    fs.invalidate_cache(path)
    found = guarded(location, lambda: fs.find(path))
    if not found:
        raise FileNotFoundError(redact(location))
    for key in found:
        rel = key[len(prefix):]
        if not rel or rel.startswith("/") or ".." in rel.split("/"):
            continue       # nothing outside the folder
        target = Path(local).joinpath(*rel.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        guarded(location, lambda key=key, target=target: fs.get_file(key, str(target)))
    return Path(local)
