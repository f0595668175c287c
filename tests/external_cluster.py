"""Test helpers: a real Dask cluster started as separate processes, and self-signed TLS files.

``external_cluster()`` runs ``dask scheduler`` and ``dask worker`` as subprocesses on 127.0.0.1
(random ports, the scheduler's address read from its ``--scheduler-file``), with the worker
environment fmadask gives its own local cluster (:func:`fmadask.cluster.worker_environ`), and
stops them (process group by process group, bounded waits) when the ``with`` block ends. Should
the test process itself be killed, the scheduler stops after 15 idle minutes and its workers a
minute later.
"""
from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fmadask.cluster import worker_environ

DASK = str(Path(sys.executable).with_name("dask"))


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of a certificate authority and of one certificate it signed (for 127.0.0.1)."""

    ca: Path
    cert: Path
    key: Path

    def scheduler_args(self) -> list[str]:
        return ["--tls-ca-file", str(self.ca), "--tls-cert", str(self.cert),
                "--tls-key", str(self.key)]

    def cli_args(self) -> list[str]:
        """``fmadask run``'s options for these files."""
        return ["--tls-ca", str(self.ca), "--tls-cert", str(self.cert), "--tls-key", str(self.key)]


def make_tls_files(folder: Path, name: str = "test") -> TLSFiles:
    """A fresh CA and a certificate for 127.0.0.1/localhost signed by it, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        return path

    def builder(subject: x509.Name, issuer: x509.Name, public_key: object) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(valid[0]).not_valid_after(valid[1]))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca = (builder(ca_name, ca_name, ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_name,
                    key.public_key())
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "node.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return TLSFiles(folder / "ca.pem", folder / "node.pem", write_key(key, folder / "node.key"))


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    # A session of its own: teardown signals the whole group (nanny and its worker process).
    return subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def _stop(procs: list[subprocess.Popen], timeout: float = 20.0) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _wait_for_file(path: Path, procs: list[subprocess.Popen], log: Path, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file():
            with contextlib.suppress(ValueError):
                return json.loads(path.read_text())
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.2)
    raise RuntimeError(f"the Dask scheduler did not start: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def external_cluster(folder: Path, workers: int = 2, tls: TLSFiles | None = None,
                     timeout: float = 120.0, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start a scheduler and ``workers`` single-threaded worker processes (with ``env`` added
    to their environment); yield its address."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **worker_environ(), **(env or {})}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    tls_args = tls.scheduler_args() if tls else []
    scheduler_file = folder / "scheduler.json"
    procs: list[subprocess.Popen] = []
    try:
        log = folder / "scheduler.log"
        procs.append(_start([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0",
                             "--dashboard-address", "127.0.0.1:0", "--idle-timeout", "15 minutes",
                             "--scheduler-file",
                             str(scheduler_file), *(["--protocol", "tls"] if tls else []),
                             *tls_args], log, env))
        address = _wait_for_file(scheduler_file, procs, log, timeout)["address"]
        for i in range(workers):
            procs.append(_start([DASK, "worker", address, "--nworkers", "1", "--nthreads", "1",
                                 "--host", "127.0.0.1", "--no-dashboard", "--name", f"ext-{i}",
                                 "--death-timeout", "60",
                                 "--local-directory", str(folder / f"worker-{i}"), *tls_args],
                                folder / f"worker-{i}.log", env))
        if workers:
            _wait_for_workers(address, workers, tls, timeout, folder)
        yield address
    finally:
        _stop(procs)


def _wait_for_workers(address: str, n: int, tls: TLSFiles | None, timeout: float,
                      folder: Path) -> None:
    from distributed import Client, Security

    security = (Security(tls_ca_file=str(tls.ca), tls_client_cert=str(tls.cert),
                         tls_client_key=str(tls.key), require_encryption=True) if tls else None)
    with Client(address, security=security, timeout=timeout) as client:
        try:
            client.wait_for_workers(n, timeout=timeout)
        except TimeoutError:
            logs = "\n".join(p.read_text()[-1000:] for p in sorted(folder.glob("*.log")))
            raise RuntimeError(f"{n} workers did not join {address}: {logs}") from None
