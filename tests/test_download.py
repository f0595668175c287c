"""The downloader against a real HTTP server on 127.0.0.1 serving zips built here.

The server (http.server in a thread) implements ``Range: bytes=N-`` (206, or 416 past the end),
can ignore Range (200, like python's SimpleHTTPRequestHandler), and can drop the connection
after N bytes of its next response to simulate an interrupted download. It logs every request's
path and Range header, so the tests see what the client asked for.
"""
from __future__ import annotations

import hashlib
import io
import random
import re
import socket
import stat
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fmadask.cli import main
from fmadask.errors import ConfigError, DownloadError
from fmadask.fma.download import ARCHIVES, MARKER, fetch, sha1sum
from fmadask.fma.layout import AUDIO_SUBSETS
from lock_holder import held_lock

pytestmark = pytest.mark.timeout(60)

CHUNK = 4096  # small reads so an interruption lands mid-file


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, str | None]] = []
        self.honour_range = True
        self.drop_after: int | None = None  # bytes of the next body to send before hanging up
        self.misalign: int = 0  # answer the next Range request this many bytes too early

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/fma/"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        srv = self.server
        asked = self.headers.get("Range")
        srv.log.append((self.path, asked))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if asked is not None and srv.honour_range:
            match = re.fullmatch(r"bytes=(\d+)-", asked)
            assert match is not None, asked
            start, srv.misalign = max(0, int(match.group(1)) - srv.misalign), 0
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if srv.drop_after is not None:
            cut, srv.drop_after = srv.drop_after, None
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(payload)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def _zip(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    """A zip of ``members`` (stored, so sizes are predictable), plus optional symlink members."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def _small_members() -> dict[str, bytes]:
    rng = random.Random(0)
    return {
        "fma_small/README.txt": b"an FMA-shaped test archive\n",
        "fma_small/000/000002.mp3": rng.randbytes(60_000),
        "fma_small/000/000005.mp3": rng.randbytes(40_000),
        "fma_small/155/155066.mp3": rng.randbytes(20_000),
    }


def _serve(server: _Server, data: bytes, name: str = "fma_small.zip") -> dict[str, str]:
    """Serve ``data`` as ``name``; return the checksums argument that makes it FMA's."""
    server.files[f"/fma/{name}"] = data
    archive = next(k for k, a in ARCHIVES.items() if a.filename == name)
    return {archive: hashlib.sha1(data).hexdigest()}


def _assert_extracted(folder: Path, members: dict[str, bytes]) -> None:
    for name, data in members.items():
        assert (folder.parent / name).read_bytes() == data
    files = {p.relative_to(folder.parent).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert files == set(members) | {f"{folder.name}/{MARKER}"}


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


def test_archives_cover_fma_subsets_with_published_sha1() -> None:
    assert tuple(ARCHIVES) == ("metadata",) + AUDIO_SUBSETS
    assert ARCHIVES["small"].sha1 == "ade154f733639d52e35e32f5593efe5be76c6d70"
    assert all(re.fullmatch(r"[0-9a-f]{40}", a.sha1) for a in ARCHIVES.values())
    assert [a.folder for a in ARCHIVES.values()] == [a.filename[:-4] for a in ARCHIVES.values()]


def test_full_download_extracts_and_rerun_skips(server: _Server, tmp_path: Path) -> None:
    members = _small_members()
    data = _zip(members)
    checksums = _serve(server, data)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    stale = data_dir / ".fma_small.extracting-stale"  # as a killed extraction leaves it
    (stale / "fma_small").mkdir(parents=True)

    out = fetch("small", data_dir, mirror=server.url, progress=False, chunk_size=CHUNK,
                checksums=checksums)

    assert out == data_dir / "fma_small"
    _assert_extracted(out, members)
    assert sorted(p.name for p in data_dir.iterdir()) == ["fma_small"]  # no zip, part, temp
    assert server.log == [("/fma/fma_small.zip", None)]
    # A rerun on the complete folder asks the server nothing.
    assert fetch("small", data_dir, mirror=server.url, progress=False,
                 checksums=checksums) == out
    assert len(server.log) == 1


def test_resume_after_interruption_uses_range(server: _Server, tmp_path: Path) -> None:
    members = _small_members()
    data = _zip(members)
    checksums = _serve(server, data)
    server.drop_after = 50_000

    with pytest.raises(DownloadError) as exc:
        fetch("small", tmp_path, mirror=server.url, progress=False, chunk_size=CHUNK,
              checksums=checksums)
    msg = _one_line(exc)
    assert f"{server.url}fma_small.zip" in msg and "rerun" in msg and "--mirror" in msg
    part = tmp_path / "fma_small.zip.part"
    assert part.read_bytes() == data[:50_000]
    assert not (tmp_path / "fma_small").exists()

    out = fetch("small", tmp_path, mirror=server.url, progress=False, chunk_size=CHUNK,
                checksums=checksums)
    assert server.log == [("/fma/fma_small.zip", None), ("/fma/fma_small.zip", "bytes=50000-")]
    _assert_extracted(out, members)
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(server: _Server, tmp_path: Path) -> None:
    members = _small_members()
    data = _zip(members)
    checksums = _serve(server, data)
    server.honour_range = False
    server.drop_after = 30_000
    with pytest.raises(DownloadError):
        fetch("small", tmp_path, mirror=server.url, progress=False, chunk_size=CHUNK,
              checksums=checksums)
    assert (tmp_path / "fma_small.zip.part").stat().st_size == 30_000

    out = fetch("small", tmp_path, mirror=server.url, progress=False, chunk_size=CHUNK,
                checksums=checksums)
    # It asked to resume, got the whole file (200) and rewrote the part instead of appending.
    assert server.log[-1] == ("/fma/fma_small.zip", "bytes=30000-")
    _assert_extracted(out, members)


def test_range_answered_from_another_offset_restarts(server: _Server, tmp_path: Path) -> None:
    members = _small_members()
    data = _zip(members)
    checksums = _serve(server, data)
    (tmp_path / "fma_small.zip.part").write_bytes(data[:20_000])
    server.misalign = 100  # 206 from byte 19,900: appending it would corrupt the file

    out = fetch("small", tmp_path, mirror=server.url, progress=False, chunk_size=CHUNK,
                checksums=checksums)
    assert server.log == [("/fma/fma_small.zip", "bytes=20000-"), ("/fma/fma_small.zip", None)]
    _assert_extracted(out, members)


@pytest.mark.parametrize("extra", [0, 1000], ids=["part-whole", "part-too-long"])
def test_range_not_satisfiable(server: _Server, tmp_path: Path, extra: int) -> None:
    members = _small_members()
    data = _zip(members)
    checksums = _serve(server, data)
    # A whole part (a run killed before it renamed it) is used as is; one longer than the
    # archive is discarded and downloaded again.
    (tmp_path / "fma_small.zip.part").write_bytes(data + b"x" * extra)

    out = fetch("small", tmp_path, mirror=server.url, progress=False, chunk_size=CHUNK,
                checksums=checksums)
    _assert_extracted(out, members)
    expected = [("/fma/fma_small.zip", f"bytes={len(data) + extra}-")]
    if extra:
        expected.append(("/fma/fma_small.zip", None))
    assert server.log == expected


def test_checksum_mismatch_moves_file_aside_and_extracts_nothing(server: _Server,
                                                                 tmp_path: Path) -> None:
    members = _small_members()
    data = _zip(members)
    good = _serve(server, data)
    with pytest.raises(DownloadError, match="SHA-1") as exc:
        fetch("small", tmp_path, mirror=server.url, progress=False, chunk_size=CHUNK,
              checksums={"small": "0" * 40})
    assert "not extracted" in _one_line(exc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fma_small.zip.bad"]
    assert (tmp_path / "fma_small.zip.bad").read_bytes() == data

    # The rerun starts afresh (no Range) rather than resuming a bad file.
    out = fetch("small", tmp_path, mirror=server.url, progress=False, chunk_size=CHUNK,
                checksums=good)
    assert server.log[-1] == ("/fma/fma_small.zip", None)
    _assert_extracted(out, members)


def test_fmas_published_checksum_is_the_default(server: _Server, tmp_path: Path) -> None:
    _serve(server, _zip(_small_members()))
    with pytest.raises(DownloadError, match=ARCHIVES["small"].sha1):
        fetch("small", tmp_path, mirror=server.url, progress=False)


@pytest.mark.parametrize("evil", ["../evil.txt", "fma_small/../../evil.txt", "ABSOLUTE",
                                  "fma_small\\..\\..\\evil.txt", "SYMLINK", "other/x.txt"])
def test_zip_slip_refused_and_nothing_written(server: _Server, tmp_path: Path,
                                              evil: str) -> None:
    data_dir = tmp_path / "data"
    outside = tmp_path / "evil.txt"
    members = _small_members()
    symlinks = {}
    if evil == "SYMLINK":
        symlinks["fma_small/link"] = str(outside)
    else:
        members[str(outside) if evil == "ABSOLUTE" else evil] = b"pwned"
    checksums = _serve(server, _zip(members, symlinks))

    with pytest.raises(DownloadError, match="refusing to extract") as exc:
        fetch("small", data_dir, mirror=server.url, progress=False, checksums=checksums)
    assert "nothing was written" in _one_line(exc)
    assert not outside.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    # Only the verified zip remains: no fma_small/, no temporary folder, no member anywhere.
    assert sorted(p.name for p in data_dir.iterdir()) == ["fma_small.zip"]


def test_failed_extraction_leaves_no_half_folder(server: _Server, tmp_path: Path) -> None:
    members = _small_members()
    data = bytearray(_zip(members))
    # Corrupt the last member's bytes: the zip opens and its names pass the checks, but that
    # member fails its CRC after the first ones were extracted.
    i = data.rindex(members["fma_small/155/155066.mp3"][:64])
    data[i + 10] ^= 0xFF
    checksums = _serve(server, bytes(data))

    with pytest.raises(DownloadError, match="not a readable zip"):
        fetch("small", tmp_path, mirror=server.url, progress=False, checksums=checksums)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fma_small.zip"]


def test_folder_in_the_way_is_never_overwritten(server: _Server, tmp_path: Path) -> None:
    checksums = _serve(server, _zip(_small_members()))
    mine = tmp_path / "fma_small" / "000" / "000002.mp3"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"user data")
    with pytest.raises(DownloadError, match="already exists"):
        fetch("small", tmp_path, mirror=server.url, progress=False, checksums=checksums)
    assert mine.read_bytes() == b"user data"
    assert server.log == []


def test_http_and_network_errors_are_one_line(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404") as exc:
        fetch("medium", tmp_path, mirror=server.url, progress=False)
    assert f"{server.url}fma_medium.zip" in _one_line(exc)

    with socket.socket() as s:  # a port on 127.0.0.1 that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/fma"
    with pytest.raises(DownloadError) as exc:
        fetch("metadata", tmp_path, mirror=url, progress=False, timeout=5)
    msg = _one_line(exc)
    assert f"{url}/fma_metadata.zip" in msg and "--mirror" in msg
    assert not (tmp_path / "fma_metadata").exists()


def test_unknown_archive_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="small"):
        fetch("tiny", tmp_path)


def test_sha1sum_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc" * 1000)
    assert sha1sum(path, chunk_size=7) == hashlib.sha1(b"abc" * 1000).hexdigest()


def test_zip_already_on_disk_is_verified_and_used(server: _Server, tmp_path: Path) -> None:
    members = _small_members()
    data = _zip(members)
    (tmp_path / "fma_small.zip").write_bytes(data)  # e.g. fetched earlier with curl
    out = fetch("small", tmp_path, mirror=server.url, progress=False,
                checksums={"small": hashlib.sha1(data).hexdigest()})
    _assert_extracted(out, members)
    assert server.log == []
    assert not (tmp_path / "fma_small.zip").exists()


class _EndlessHandler(BaseHTTPRequestHandler):
    """Answers every GET with an endless chunked body (no Content-Length)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        block = b"\0" * 65536
        try:
            while True:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
        except OSError:
            pass


def test_an_endless_download_is_cut_at_the_size_cap(tmp_path: Path) -> None:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _EndlessHandler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with pytest.raises(DownloadError) as info:
            fetch("small", tmp_path, mirror=f"http://127.0.0.1:{srv.server_address[1]}/",
                  progress=False, max_bytes=2**20)
    finally:
        srv.shutdown()
        srv.server_close()
    assert "refused" in _one_line(info) and "--mirror" in str(info.value)
    assert list(tmp_path.iterdir()) == []             # what it sent is gone


def test_a_download_announcing_more_than_the_archive_is_refused(server: _Server,
                                                               tmp_path: Path) -> None:
    checksums = _serve(server, _zip(_small_members()))
    with pytest.raises(DownloadError, match="announces"):
        fetch("small", tmp_path, mirror=server.url, progress=False, checksums=checksums,
              max_bytes=1000)
    assert list(tmp_path.iterdir()) == []


def test_a_second_fetch_into_the_same_folder_is_refused(server: _Server, tmp_path: Path) -> None:
    """Its partial download and temporary folder belong to the first fetch."""
    from fmadask.lock import LockedError

    checksums = _serve(server, _zip(_small_members()))
    part = tmp_path / "fma_small.zip.part"
    part.write_bytes(b"the first fetch's bytes")
    with held_lock(tmp_path, "fmadask fetch small"):
        with pytest.raises(LockedError, match="fmadask fetch small"):
            fetch("small", tmp_path, mirror=server.url, progress=False, checksums=checksums)
        assert part.read_bytes() == b"the first fetch's bytes"


# ----------------------------------------------------------------------- into a bucket


def _objects(s3_server, prefix: str) -> dict[str, bytes]:
    """``{key under prefix: content}`` of a bucket prefix, read fresh from the S3 server."""
    fs = s3_server.filesystem()
    return {key[len(prefix) + 1:]: fs.cat_file(key) for key in fs.find(prefix)}


def _fetch_to_s3(server: _Server, s3_server, url: str, staging: Path, checksums: dict,
                 **kwargs) -> str:
    return fetch("small", url, mirror=server.url, progress=False, chunk_size=CHUNK,
                 checksums=checksums, storage_options=s3_server.options, staging=staging,
                 **kwargs)


def test_fetch_into_a_bucket_uploads_the_verified_files_and_rerun_skips(
        server: _Server, s3_server, tmp_path: Path) -> None:
    """Downloaded and verified in a local staging folder, then uploaded: the bucket holds the
    archive's files and the marker, the staging folder keeps nothing; a rerun asks nothing."""
    import json

    members = _small_members()
    checksums = _serve(server, _zip(members))
    s3_server.filesystem().mkdir("fetch-ok")
    staging = tmp_path / "staging"

    out = _fetch_to_s3(server, s3_server, "s3://fetch-ok/fma/", staging, checksums)

    assert out == "s3://fetch-ok/fma/fma_small"
    objects = _objects(s3_server, "fetch-ok/fma")
    assert set(objects) == set(members) | {f"fma_small/{MARKER}"}
    assert all(objects[name] == data for name, data in members.items())
    assert json.loads(objects[f"fma_small/{MARKER}"])["sha1"] == checksums["small"]
    assert list(staging.iterdir()) == []                # no zip, no extracted copy, no lock
    assert server.log == [("/fma/fma_small.zip", None)]
    assert _fetch_to_s3(server, s3_server, "s3://fetch-ok/fma", staging, checksums) == out
    assert len(server.log) == 1


def _users_own_copy(server: _Server, tmp_path: Path) -> tuple[dict, dict, Path]:
    """A complete FMA small fetched into ``tmp_path/my-fma`` before the test, as a user would
    have it: its members, checksums and folder."""
    members = _small_members()
    checksums = _serve(server, _zip(members))
    mine = tmp_path / "my-fma"
    fetch("small", mine, mirror=server.url, progress=False, chunk_size=CHUNK,
          checksums=checksums)
    return members, checksums, mine


def _listing(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


def test_fetch_into_a_bucket_keeps_a_local_copy_that_was_there_before(
        server: _Server, s3_server, tmp_path: Path) -> None:
    """--staging pointed at a folder already holding a fetched FMA: it is uploaded from there
    and stays (fetch deletes only the copy it extracted for the upload)."""
    members, checksums, mine = _users_own_copy(server, tmp_path)
    before = _listing(mine)
    s3_server.filesystem().mkdir("fetch-keep")

    out = _fetch_to_s3(server, s3_server, "s3://fetch-keep/fma", mine, checksums)

    assert out == "s3://fetch-keep/fma/fma_small"
    assert set(_objects(s3_server, "fetch-keep/fma")) == set(members) | {f"fma_small/{MARKER}"}
    assert _listing(mine) == before
    assert len(server.log) == 1                            # not downloaded again


def _cut_upload(server: _Server, s3_server, bucket: str, staging: Path,
                checksums: dict) -> None:
    """Run a fetch into ``s3://BUCKET/fma`` in a subprocess whose S3 connection is cut when the
    upload reaches README.txt; check that it failed and left no marker in the bucket."""
    import os
    import subprocess
    import sys

    from conftest import TcpRelay

    relay = TcpRelay(s3_server.port, cut_on=f"PUT /{bucket}/fma/fma_small/README.txt".encode())
    relay.start()
    options = {**s3_server.options, "endpoint_url": f"http://127.0.0.1:{relay.port}",
               "config_kwargs": {"retries": {"max_attempts": 1}}}
    code = ("from fmadask.fma.download import fetch\n"
            f"fetch('small', 's3://{bucket}/fma', mirror={server.url!r}, progress=False, "
            f"checksums={checksums!r}, storage_options={options!r}, staging={str(staging)!r})")
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=50, env={**os.environ, "PYTHONPATH": root})
    assert done.returncode != 0 and "cannot reach" in done.stderr, done.stderr[-2000:]
    partial = _objects(s3_server, f"{bucket}/fma")
    assert f"fma_small/{MARKER}" not in partial and "fma_small/README.txt" not in partial


def test_an_interrupted_upload_never_looks_complete_and_a_rerun_resumes(
        server: _Server, s3_server, tmp_path: Path) -> None:
    """The S3 connection is cut when the upload reaches README.txt (a process that fetches in
    a subprocess fails); no marker is in the bucket, the staged files stay; the rerun
    downloads nothing and finishes the upload (taking the dead process's lock over)."""
    members = _small_members()
    checksums = _serve(server, _zip(members))
    s3_server.filesystem().mkdir("fetch-cut")
    staging = tmp_path / "staging"
    _cut_upload(server, s3_server, "fetch-cut", staging, checksums)
    assert (staging / "fma_small" / MARKER).is_file()     # verified and extracted: kept
    assert len(server.log) == 1

    out = _fetch_to_s3(server, s3_server, "s3://fetch-cut/fma", staging, checksums)
    assert len(server.log) == 1                            # nothing downloaded again
    objects = _objects(s3_server, "fetch-cut/fma")
    assert set(objects) == set(members) | {f"fma_small/{MARKER}"}
    assert all(objects[name] == data for name, data in members.items())
    assert out == "s3://fetch-cut/fma/fma_small" and list(staging.iterdir()) == []


def test_a_resumed_upload_keeps_the_local_copy_that_was_there_before(
        server: _Server, s3_server, tmp_path: Path) -> None:
    """The user's own complete FMA copy named as --staging, the upload cut and rerun: the rerun
    finishes the upload and the user's copy stays, as the uncut upload would have left it."""
    members, checksums, mine = _users_own_copy(server, tmp_path)
    before = _listing(mine)
    s3_server.filesystem().mkdir("fetch-cut-keep")
    _cut_upload(server, s3_server, "fetch-cut-keep", mine, checksums)

    out = _fetch_to_s3(server, s3_server, "s3://fetch-cut-keep/fma", mine, checksums)
    assert out == "s3://fetch-cut-keep/fma/fma_small"
    assert set(_objects(s3_server, "fetch-cut-keep/fma")) == set(members) | {f"fma_small/{MARKER}"}
    assert _listing(mine) == before
    assert len(server.log) == 1                            # never downloaded again


def test_fetch_into_a_bucket_never_writes_over_objects_it_did_not_upload(
        server: _Server, s3_server, tmp_path: Path) -> None:
    checksums = _serve(server, _zip(_small_members()))
    fs = s3_server.filesystem()
    fs.mkdir("fetch-foreign")
    fs.pipe_file("fetch-foreign/fma/fma_small/000/000002.mp3", b"user data")
    with pytest.raises(DownloadError, match="not uploaded by fmadask fetch") as exc:
        _fetch_to_s3(server, s3_server, "s3://fetch-foreign/fma", tmp_path / "staging",
                     checksums)
    assert "s3://fetch-foreign/fma/fma_small" in _one_line(exc)
    assert _objects(s3_server, "fetch-foreign/fma") == {"fma_small/000/000002.mp3": b"user data"}
    assert server.log == []


def test_fetch_into_a_protocol_without_its_driver_fails_before_downloading(
        server: _Server, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import importlib.util

    from fmadask.cli import main

    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed")
    checksums = _serve(server, _zip(_small_members()))
    with pytest.raises(ConfigError, match="pip install gcsfs") as exc:
        fetch("small", "gs://bucket/fma", mirror=server.url, progress=False, checksums=checksums,
              staging=tmp_path / "staging")
    _one_line(exc)
    assert main(["fetch", "small", "--to", "gs://bucket/fma", "--mirror", server.url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install gcsfs" in err
    assert server.log == [] and not (tmp_path / "staging").exists()


@pytest.mark.parametrize("mirror", ["notaurl", "http://[::1", "ftp://host/fma", "http://",
                                    "https:///fma/", "http://host:port/"])
def test_a_malformed_mirror_is_one_line_before_anything_is_written(
        mirror: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["fetch", "metadata", "--to", str(tmp_path / "fma"), "--mirror", mirror]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fmadask: ") and err.count("\n") == 1 and "--mirror" in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_mirror_password_is_never_printed(tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    mirror = "http://reader:pw5ecret@127.0.0.1:9/fma/"
    assert main(["fetch", "metadata", "--to", str(tmp_path / "fma"), "--mirror", mirror]) == 2
    captured = capsys.readouterr()
    assert "pw5ecret" not in captured.err + captured.out and "--mirror" in captured.err
