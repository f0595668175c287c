"""Shared fixtures: a generated FMA-shaped sample and a real local Dask cluster."""
from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fmadask.fma.sample import make_sample


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small FMA-shaped sample: 3 good clips of 5 s per genre, plus FMA's defects."""
    return make_sample(tmp_path_factory.mktemp("fma"), tracks_per_genre=3, seconds=5.0, seed=0)


@pytest.fixture(scope="session")
def local_client() -> Iterator["distributed.Client"]:  # noqa: F821
    """A real distributed LocalCluster of 2 worker processes, shared by the session."""
    from fmadask.cluster import get_client

    with get_client(workers=2, quiet=True) as client:
        yield client


# --------------------------------------------------------------------- object storage servers

#: Credentials of the test S3 server (moto accepts any; "bad" ones are refused by the tests'
#: own checks against a second set, see test_storage).
S3_KEY, S3_SECRET = "testing-key", "testing-secret"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    """Block until something accepts connections on 127.0.0.1:``port``."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class S3Server:
    """moto's standalone S3 server in a subprocess on 127.0.0.1 (stoppable and restartable)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self) -> None:
        import subprocess
        import sys

        moto = Path(sys.executable).with_name("moto_server")
        self.process = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    @property
    def options(self) -> dict:
        """fsspec storage options reaching this server."""
        return {"key": S3_KEY, "secret": S3_SECRET, "endpoint_url": self.endpoint}

    @property
    def env(self) -> dict:
        """The standard environment variables reaching this server."""
        return {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}

    def filesystem(self):
        """A fresh s3fs filesystem on this server (no cached listings)."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.options)

    def upload_run(self, folder: Path, bucket: str) -> str:
        """``folder`` uploaded to ``s3://BUCKET/runs/r1`` (the bucket made first): that URL."""
        from fmadask import storage

        self.filesystem().mkdir(bucket)
        url = f"s3://{bucket}/runs/r1"
        storage.upload_folder(folder, url, self.options)
        return url


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3 server (moto's standalone server) on 127.0.0.1 for the session."""
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_sample(s3_server: S3Server, sample_dir: Path) -> str:
    """The generated sample uploaded to a bucket: its ``s3://`` URL."""
    fs = s3_server.filesystem()
    fs.mkdir("fma-sample")
    fs.put(f"{sample_dir}/", "fma-sample/fma/", recursive=True)
    return "s3://fma-sample/fma"


#: An HTTP request line, as a relay sees it go by.
_REQUEST = re.compile(rb"(GET|HEAD|PUT|POST|DELETE) (/\S*) HTTP/1\.[01]\r\n")


class TcpRelay:
    """A TCP relay 127.0.0.1:port -> the S3 server, which the test can cut and restore: the
    server stops answering mid-job while its data stays (moto keeps objects in memory).

    ``cut_on``: bytes that cut the relay when a client sends them (e.g. the request line of a
    PUT of some key), before they reach the server. ``requests`` lists the request lines that
    went through (``'GET /bucket/key'``), so a test can count what a client asked for.
    ``refuse_after_cut``: once cut, keep accepting connections and close each at once, before
    any answer (a store that went away mid-job), instead of refusing them; ``gone`` says it was
    cut."""

    def __init__(self, target: int, cut_on: bytes | None = None,
                 refuse_after_cut: bool = False) -> None:
        self.target, self.port, self.cut_on = target, free_port(), cut_on
        self.refuse_after_cut, self.gone = refuse_after_cut, False
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []
        self.requests: list[str] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.gone = False
        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=True)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def stop(self) -> None:
        self.listener.close()
        self._drop_connections()

    def _cut(self) -> None:
        self.gone = True
        if self.refuse_after_cut:
            self._drop_connections()
        else:
            self.stop()

    def _drop_connections(self) -> None:
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.gone:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [client, upstream]
            for a, b, watch in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, watch), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, watch: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if watch and self.cut_on is not None and self.cut_on in data:
                    self._cut()
                    return
                if watch:   # clients send a request's head in one piece (botocore, aiohttp)
                    self.requests += [f"{m.decode()} {p.decode()}"
                                      for m, p in _REQUEST.findall(data)]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
