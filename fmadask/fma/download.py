"""Download FMA's zip archives: resumable, SHA-1 verified, extracted safely.

``fetch('small', DATA_DIR)`` leaves ``DATA_DIR/fma_small/`` in place (the layout of
:mod:`fmadask.fma.layout`). What happens on disk, and what a rerun does:

1. ``DATA_DIR/fma_small.zip.part`` grows as bytes arrive. An interrupted download keeps it; a
   rerun asks the server for the rest with an HTTP ``Range`` header (a server that ignores
   ``Range`` answers 200 and the download starts over; a 416 means the part is already whole
   or longer than the archive, which is checked, not trusted).
2. The whole file is checked against FMA's published SHA-1. A match renames it to
   ``fma_small.zip``; a mismatch renames it aside to ``fma_small.zip.bad`` (kept for
   inspection, never extracted) so a rerun downloads afresh. A ``fma_small.zip`` already present
   (e.g. downloaded with curl) is verified the same way before use.
3. Every member name is checked before anything is written: the archive must hold one top-level
   folder ``fma_small/``, and an absolute name, a ``..`` component, a backslash or a symlink
   (zip-slip) refuses the whole archive. Members are extracted into a hidden temporary folder
   inside DATA_DIR, a marker file is written inside it, and the folder is renamed into place in
   one step, so ``DATA_DIR/fma_small/`` is either absent or complete. A temporary folder left by
   a killed run is removed by the next one.
4. The zip is deleted once extracted (FMA large is 93 GiB; two copies rarely fit). A rerun on a
   complete folder (its marker names the same SHA-1) downloads nothing.

Network and HTTP failures raise a one-line :class:`~fmadask.errors.DownloadError` naming the URL
and suggesting a rerun (which resumes) or another ``--mirror``. Two fetches into the same
DATA_DIR at the same time: the second is refused in one line (:mod:`fmadask.lock`).

DATA_DIR may be a URL (``s3://bucket/fma``; :mod:`fmadask.storage`). Steps 1-4 then run in a
local *staging* folder (by default one in the system's temporary folder, named after the URL,
so a rerun finds it), and the extracted files are uploaded:

5. ``DATA_DIR/fma_small/.fmadask-fetch.uploading`` is written first (it claims the prefix for
   this archive), then every file, each as one whole object (files already there with the
   same size, from an interrupted upload, are not sent again), then the marker
   ``.fmadask-fetch.json`` last: an upload is complete exactly when the marker is there, so a
   half-upload never looks complete and a rerun resumes it. The copy extracted for the upload is
   deleted once the marker is up; the claim names it, so a rerun that resumes the upload
   deletes it too. A complete copy that was already in a ``staging`` folder the caller named
   is theirs and stays, on a rerun too. Objects under ``DATA_DIR/fma_small/`` that no fetch
   claimed are never written over. The lock is then a conditional PUT in DATA_DIR (:mod:`fmadask.lock`).
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from fmadask import __version__, storage
from fmadask.errors import ConfigError, DownloadError
from fmadask.fma.layout import METADATA_DIR
from fmadask.lock import RunLock

#: The mirror FMA's README links to (https://github.com/mdeff/fma).
DEFAULT_MIRROR = "https://os.unil.cloud.switch.ch/fma/"
#: Name of the marker file written inside an extracted folder once it is complete.
MARKER = ".fmadask-fetch.json"
#: Written first into a URL target: the prefix holds this archive's (maybe partial) upload.
UPLOADING = ".fmadask-fetch.uploading"
#: Objects uploaded at once to a URL target.
UPLOAD_THREADS = 16


@dataclass(frozen=True)
class Archive:
    """One of FMA's zip archives.

    Attributes
    ----------
    filename : str
        Name of the zip on the mirror, e.g. ``'fma_small.zip'``.
    folder : str
        The one top-level folder the zip holds, e.g. ``'fma_small'``.
    sha1 : str
        SHA-1 of the zip as FMA publishes it (README, release 2017-05-09), 40 hex digits.
    size : str
        Approximate size of the zip as FMA's README states it.
    """

    filename: str
    folder: str
    sha1: str
    size: str


#: FMA's archives by the name ``fetch`` takes: ``metadata`` plus the audio subsets.
ARCHIVES: dict[str, Archive] = {
    "metadata": Archive("fma_metadata.zip", METADATA_DIR,
                        "f0df49ffe5f2a6008d7dc83c6915b31835dfe733", "342 MiB"),
    "small": Archive("fma_small.zip", "fma_small",
                     "ade154f733639d52e35e32f5593efe5be76c6d70", "7.2 GiB"),
    "medium": Archive("fma_medium.zip", "fma_medium",
                      "c67b69ea232021025fca9231fc1c7c1a063ab50b", "22 GiB"),
    "large": Archive("fma_large.zip", "fma_large",
                     "497109f4dd721066b5ce5e5f250ec604dc78939e", "93 GiB"),
    "full": Archive("fma_full.zip", "fma_full",
                    "0f0ace23fbe9ba30ecb7e95f763e435ea802b8ab", "879 GiB"),
}

_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")


def fetch(archive: str, data_dir: str | os.PathLike[str], mirror: str = DEFAULT_MIRROR,
          progress: bool = True, chunk_size: int = 1 << 20,
          checksums: Mapping[str, str] | None = None, timeout: float = 60.0,
          max_bytes: int | None = None, storage_options: Mapping[str, Any] | None = None,
          staging: str | os.PathLike[str] | None = None) -> Path | str:
    """Download, verify and extract one of FMA's archives into ``data_dir``.

    Parameters
    ----------
    archive : str
        ``'metadata'``, ``'small'``, ``'medium'``, ``'large'`` or ``'full'``.
    data_dir : path-like or str
        Folder to download and extract into (created if missing), or a URL (``s3://bucket/fma``)
        to upload the extracted files to. The archive ends up as ``data_dir/fma_<archive>/``.
    mirror : str
        Base URL serving the zips by their FMA names (``<mirror>/fma_small.zip``).
    progress : bool
        Show tqdm progress bars (download, verification, extraction) on stderr.
    chunk_size : int
        Bytes read and written per step, also the granularity of resume.
    checksums : mapping of str to str, optional
        SHA-1 (hex) per archive name, replacing FMA's published ones, for a mirror serving other
        zips (the tests use it). The download is always verified against some SHA-1.
    timeout : float
        Seconds a connection may stay silent before it counts as failed.
    max_bytes : int, optional
        Largest download accepted (default: the archive's published size plus 10 %). A server
        that announces or sends more is refused, and what it sent is deleted: an endless or
        wrong stream cannot fill the disk.
    storage_options : mapping, optional
        fsspec options of a URL ``data_dir`` (credentials, endpoint); besides them the
        environment's ``AWS_*`` apply. Never printed or recorded.
    staging : path-like, optional
        For a URL ``data_dir``: the local folder where the archive is downloaded and extracted
        before the upload (it needs room for the zip and its files). Default: a folder in the
        system's temporary folder (``$TMPDIR``) named after ``data_dir``, removed when done. A
        complete FMA copy already in a folder given here is uploaded from and kept.

    Returns
    -------
    pathlib.Path or str
        The extracted folder, ``data_dir/fma_<archive>`` (a URL for a URL ``data_dir``).

    Raises
    ------
    ConfigError
        ``archive`` is not one of FMA's archives.
    DownloadError
        A network or HTTP failure (rerun to resume), a SHA-1 mismatch, an unsafe or malformed
        archive, too little disk space, or a folder in the way that this function did not write.
    """
    if archive not in ARCHIVES:
        raise ConfigError(f"unknown FMA archive {archive!r}: choose one of {', '.join(ARCHIVES)}")
    check_mirror(mirror)
    spec = ARCHIVES[archive]
    want = (checksums or {}).get(archive, spec.sha1).lower()
    if storage.is_url(data_dir):
        local = storage.local_path(data_dir)
        if local is None:
            return _fetch_to_url(archive, str(data_dir).rstrip("/"), want, storage_options,
                                 staging, mirror=mirror, progress=progress,
                                 chunk_size=chunk_size, checksums=checksums, timeout=timeout,
                                 max_bytes=max_bytes)
        data_dir = local
    data_dir = Path(data_dir)
    target = data_dir / spec.folder
    if _is_complete(target, want):
        return target
    if target.exists():
        raise DownloadError(f"{target} already exists but was not fetched by fmadask (or holds "
                            f"another version): move it away, or pass another --to")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {data_dir} ({_one_line(exc)}): "
                            f"pass a writable --to folder") from exc

    url = mirror.rstrip("/") + "/" + spec.filename
    zip_path = data_dir / spec.filename
    # One fetch per data folder: another one's partial download and temporary folder are its own.
    with RunLock(data_dir, f"fmadask fetch {archive}"):
        if not zip_path.exists():
            part = zip_path.with_name(spec.filename + ".part")
            limit = max_bytes if max_bytes is not None else int(1.1 * _size_bytes(spec.size))
            _download(url, part, progress, chunk_size, timeout, limit)
            _verify(part, want, url, progress, chunk_size)
            os.replace(part, zip_path)
        else:
            _verify(zip_path, want, str(zip_path), progress, chunk_size)
        _extract(zip_path, data_dir, spec.folder,
                 {"archive": spec.filename, "sha1": want, "url": url}, progress)
        zip_path.unlink()
    return target


# --------------------------------------------------------------------------- to a URL


def _fetch_to_url(archive: str, data_url: str, sha1: str, options: Mapping[str, Any] | None,
                  staging: str | os.PathLike[str] | None, **download: Any) -> str:
    """:func:`fetch` into a URL: download, verify and extract in a local staging folder, then
    upload the files (see the module's step 5)."""
    folder = ARCHIVES[archive].folder
    target = storage.join(data_url, folder)
    storage.require_driver(data_url)         # before any download
    if _remote_marker(target, options).get("sha1") == sha1:
        return target
    with RunLock(data_url, f"fmadask fetch {archive}", storage_options=options):
        if _remote_marker(target, options).get("sha1") == sha1:     # finished meanwhile
            return target
        claim = _check_claim(target, sha1, options)
        stage = Path(staging) if staging is not None else _default_staging(data_url)
        # A complete copy already in a folder the user named is the user's (fetched earlier to
        # keep): it is uploaded from, never deleted. The one exception is the copy an
        # interrupted upload of ours extracted there itself, which its claim names.
        local = stage / folder
        users = (staging is not None and _is_complete(local, sha1)
                 and (claim or {}).get("extracted") != str(local.resolve()))
        local = fetch(archive, stage, **download)
        record = {"sha1": sha1} if users else {"sha1": sha1, "extracted": str(local.resolve())}
        storage.write_bytes(storage.join(target, UPLOADING),
                            (json.dumps(record) + "\n").encode(), options)
        _upload(local, target, options, download["progress"])
        storage.remove(storage.join(target, UPLOADING), options)
        if not users:
            shutil.rmtree(local)
        if staging is None:
            try:
                stage.rmdir()       # ours; kept while it holds another archive's partial fetch
            except OSError:
                pass
    return target


def _default_staging(data_url: str) -> Path:
    """``$TMPDIR/fmadask-fetch-<digest of the URL>``: the same folder on a rerun."""
    key = hashlib.sha256(storage.redact(data_url).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"fmadask-fetch-{key}"


def _remote_marker(target: str, options: Mapping[str, Any] | None) -> dict:
    """The marker of a complete upload under ``target``, or {}."""
    try:
        marker = json.loads(storage.read_bytes(storage.join(target, MARKER), options))
    except (FileNotFoundError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def _check_claim(target: str, sha1: str, options: Mapping[str, Any] | None) -> dict | None:
    """Refuse a ``target`` prefix holding objects that no fetch of this archive wrote; the claim
    record of the upload of this archive that holds it (an interrupted one, to resume), or None
    for an empty prefix."""
    if not storage.listdir(target, options):
        return None
    try:
        claim = json.loads(storage.read_bytes(storage.join(target, UPLOADING), options))
    except (FileNotFoundError, ValueError):
        claim = {}
    if not isinstance(claim, dict) or claim.get("sha1") != sha1:
        raise DownloadError(f"{storage.redact(target)} already holds objects that were not "
                            "uploaded by fmadask fetch (or hold another version): remove them, "
                            "or pass another --to")
    return claim


def _upload(local: Path, target: str, options: Mapping[str, Any] | None,
            progress: bool) -> None:
    """Upload every file of ``local`` under ``target``, each whole, the marker last; files
    already there with the same size (an interrupted upload's) are skipped."""
    files = sorted(p for p in local.rglob("*") if p.is_file() and p.name != MARKER)
    have = _object_sizes(target, options)
    todo = [p for p in files
            if have.get(p.relative_to(local).as_posix()) != p.stat().st_size]

    def put(path: Path) -> None:
        storage.put_file(path, storage.join(target, *path.relative_to(local).parts), options)

    with ThreadPoolExecutor(UPLOAD_THREADS) as pool, \
            tqdm(total=len(todo), desc=f"upload {local.name}", unit="file",
                 disable=not progress) as bar:
        for _ in pool.map(put, todo):
            bar.update()
    put(local / MARKER)


def _object_sizes(target: str, options: Mapping[str, Any] | None) -> dict[str, int]:
    """``{path relative to target: size}`` of the objects under a URL prefix."""
    fs, path = storage.filesystem(target, options)
    prefix = path.rstrip("/") + "/"
    fs.invalidate_cache(path)
    try:
        found = storage.guarded(target, lambda: fs.find(path, detail=True))
    except FileNotFoundError:
        return {}
    return {key[len(prefix):]: int(info.get("size") or 0) for key, info in found.items()
            if key.startswith(prefix)}


# ------------------------------------------------------------------------------- local


def _is_complete(target: Path, sha1: str) -> bool:
    """Whether ``target`` was extracted by :func:`fetch` from the archive with ``sha1``."""
    try:
        return json.loads((target / MARKER).read_text()).get("sha1") == sha1
    except (OSError, ValueError, AttributeError):
        return False


# ------------------------------------------------------------------------------- download


def _size_bytes(size: str) -> float:
    """Bytes of a published size such as ``'7.2 GiB'``."""
    number, unit = size.split()
    return float(number) * {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit]


def check_mirror(mirror: str) -> None:
    """Refuse, before anything is written, a mirror that is no http(s):// or file:// base URL
    (ConfigError; the URL is shown without any password)."""
    def refuse(why: str) -> ConfigError:
        return ConfigError(f"--mirror {storage.redact(mirror)!r} {why}: give a base URL such as "
                           f"{DEFAULT_MIRROR}")

    try:
        parts = urllib.parse.urlsplit(str(mirror))
        parts.port      # (raises ValueError for a port that is not a number)
    except ValueError as exc:
        raise refuse(f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https", "file"):
        raise refuse("is not an http://, https:// or file:// URL")
    if parts.scheme != "file" and not parts.hostname:
        raise refuse("names no host")
    if parts.username is not None or parts.password is not None:
        raise refuse("holds credentials (user:password@), which fmadask does not send")


def _download(url: str, part: Path, progress: bool, chunk_size: int, timeout: float,
              max_bytes: int) -> None:
    """Bring ``part`` to the full content of ``url``, resuming from its current size.

    Raises :class:`DownloadError` on any network failure; the bytes received so far stay in
    ``part`` so that the next call resumes.
    """
    # Two rounds at most: the second starts from zero after a server declined the resume.
    for _ in range(2):
        offset = part.stat().st_size if part.exists() else 0
        try:
            response = _open(url, offset, timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code != 416 or offset == 0:
                raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}; "
                                    f"check the archive exists there, or pass another --mirror "
                                    f"URL") from exc
            # 416: nothing left after ``offset``. Whole if the server's size equals ours;
            # otherwise our part is longer than the archive (it changed): start over.
            size = _UNSATISFIED_RANGE.fullmatch(exc.headers.get("Content-Range", "") or "")
            if size is not None and int(size.group(1)) == offset:
                return
            part.unlink()
            continue
        except (OSError, http.client.HTTPException) as exc:
            raise _network_error(url, exc, part, offset) from exc
        with response:
            start, total = _body_start_and_total(response, offset)
            if start != offset and start != 0:
                part.unlink()  # a range we did not ask for: trust nothing, start over
                continue
            if total is not None and total > max_bytes:
                part.unlink(missing_ok=True)
                raise _too_large(url, max_bytes, f"announces {total} bytes")
            _check_space(part.parent, (total or 0) - start, url)
            _stream(response, url, part, start, total, progress, chunk_size, max_bytes)
        return
    raise DownloadError(f"download of {url} failed: the server declined to resume twice; "
                        f"delete {part} and rerun, or pass another --mirror URL")


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    """GET ``url``, from byte ``offset`` on when it is positive."""
    headers = {"User-Agent": f"fmadask/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _body_start_and_total(response: http.client.HTTPResponse, offset: int
                          ) -> tuple[int, int | None]:
    """Byte position where ``response``'s body starts in the file, and the file's size.

    A 206 carries both in ``Content-Range``; anything else (200: the server ignored ``Range``,
    or a ``file://`` URL) is the whole file from byte 0, sized by ``Content-Length`` if given.
    """
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if match is None:
            return -1, None
        total = match.group(2)
        return int(match.group(1)), None if total == "*" else int(total)
    length = response.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _too_large(url: str, max_bytes: int, what: str) -> DownloadError:
    return DownloadError(f"download of {url} refused: the server {what}, more than the archive's "
                         f"{max_bytes / 2**20:.0f} MiB: it is not serving FMA's archive; pass "
                         "another --mirror URL")


def _stream(response: http.client.HTTPResponse, url: str, part: Path, start: int,
            total: int | None, progress: bool, chunk_size: int, max_bytes: int) -> None:
    """Write ``response``'s body into ``part`` at byte ``start`` (append or rewrite), up to
    ``max_bytes`` in all."""
    done = start
    with open(part, "ab" if start else "wb") as out, \
            tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                 desc=part.name.removesuffix(".part"), disable=not progress) as bar:
        try:
            while chunk := response.read(chunk_size):
                out.write(chunk)
                done += len(chunk)
                bar.update(len(chunk))
                if done > max_bytes:
                    break
        except (OSError, http.client.HTTPException) as exc:
            out.flush()
            raise _network_error(url, exc, part, done, total) from exc
    if done > max_bytes:
        part.unlink(missing_ok=True)
        raise _too_large(url, max_bytes, f"sent over {max_bytes} bytes")
    # http.client returns b'' rather than raising when a connection closes early.
    if total is not None and done != total:
        raise _network_error(url, ConnectionError("connection closed early"), part, done, total)


def _network_error(url: str, exc: BaseException, part: Path, have: int,
                   total: int | None = None) -> DownloadError:
    if have == 0:
        return DownloadError(f"download of {url} failed ({_one_line(exc)}): check the network "
                             f"and rerun, or pass another --mirror URL")
    kept = f"{have:,} of {total:,} bytes" if total else f"{have:,} bytes"
    return DownloadError(f"download of {url} failed ({_one_line(exc)}); {kept} kept in "
                         f"{part}: rerun the same command to resume, or pass another --mirror URL")


# ------------------------------------------------------------------------------- verify


def sha1sum(path: str | os.PathLike[str], progress: bool = False,
            chunk_size: int = 1 << 20) -> str:
    """SHA-1 of a file as 40 lower-case hex digits (what ``sha1sum`` prints).

    Parameters
    ----------
    path : path-like
        The file to hash.
    progress : bool
        Show a tqdm bar (hashing FMA large reads 93 GiB).
    chunk_size : int
        Bytes read per step.
    """
    digest = hashlib.sha1()
    path = Path(path)
    name = path.name.removesuffix(".part")
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                      unit_divisor=1024, desc=f"verify {name}",
                                      disable=not progress) as bar:
        while block := f.read(chunk_size):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def _verify(path: Path, want: str, source: str, progress: bool, chunk_size: int) -> None:
    """Raise :class:`DownloadError` after moving ``path`` aside if its SHA-1 is not ``want``."""
    got = sha1sum(path, progress, chunk_size)
    if got == want:
        return
    bad = path.with_name(path.name.removesuffix(".part") + ".bad")
    os.replace(path, bad)
    raise DownloadError(f"{source}: SHA-1 {got} does not match the expected {want}; the file "
                        f"was moved to {bad} and not extracted: rerun to download it again, or "
                        f"pass another --mirror URL")


# ------------------------------------------------------------------------------- extract


def _unsafe_reason(info: zipfile.ZipInfo, folder: str) -> str | None:
    """Why member ``info`` must not be extracted under ``folder/``, or None if it is safe."""
    name = info.filename
    path = PurePosixPath(name)
    if "\\" in name:
        return "backslash in name"
    if path.is_absolute() or (path.parts and ":" in path.parts[0]):
        return "absolute path"
    if ".." in path.parts:
        return "parent-folder component"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    if not path.parts or path.parts[0] != folder:
        return f"outside the archive's folder {folder}/"
    return None


def _extract(zip_path: Path, data_dir: Path, folder: str, marker: dict[str, str],
             progress: bool) -> None:
    """Extract ``zip_path``'s ``folder/`` into ``data_dir`` all at once, or not at all."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.infolist()
            # Every name is checked before any byte is written.
            for info in members:
                reason = _unsafe_reason(info, folder)
                if reason is not None:
                    raise DownloadError(
                        f"refusing to extract {zip_path}: member {info.filename!r} would land "
                        f"outside {data_dir / folder} ({reason}); nothing was written: delete "
                        f"the zip and fetch from a trusted --mirror URL")
            _check_space(data_dir, sum(i.file_size for i in members), str(zip_path))
            for stale in data_dir.glob(f".{folder}.extracting-*"):
                shutil.rmtree(stale, ignore_errors=True)  # left by a killed run
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.extracting-", dir=data_dir))
            try:
                for info in tqdm(members, desc=f"extract {zip_path.name}", unit="file",
                                 disable=not progress):
                    zf.extract(info, tmp)
                extracted = tmp / folder
                if not extracted.is_dir():
                    raise DownloadError(f"{zip_path} holds no {folder}/ folder: it is not FMA's "
                                        f"archive; delete it and pass another --mirror URL")
                (extracted / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
                os.replace(extracted, data_dir / folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise DownloadError(f"{zip_path} is not a readable zip ({_one_line(exc)}); nothing was "
                            f"extracted: delete it and rerun") from exc


# ------------------------------------------------------------------------------- helpers


def _check_space(folder: Path, need: int, what: str) -> None:
    """Raise :class:`DownloadError` if ``folder``'s file system has fewer than ``need`` bytes."""
    free = shutil.disk_usage(folder).free
    if need > free:
        raise DownloadError(f"{what} needs {need / 2**30:.1f} GiB in {folder} but only "
                            f"{free / 2**30:.1f} GiB are free: free space or pass another --to")


def _one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its class name if it has none)."""
    text = str(exc).strip()
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        text = str(exc.reason).strip()
    return text.splitlines()[0] if text else type(exc).__name__
