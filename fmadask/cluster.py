"""How a Dask ``Client`` is obtained: the one place that knows about clusters.

``get_client()`` starts a local cluster of worker processes (the default, for a laptop), or connects
to an existing scheduler by address. Worker processes run one BLAS/OpenMP thread each, and the
nanny's ``MALLOC_TRIM_THRESHOLD_`` default is removed (see ``_WORKER_ENV``).
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import dask
from distributed import Client, LocalCluster

from fmadask.errors import ClusterError

# Environment of every worker process a nanny spawns. One numeric thread per process: with the
# default thread count, two processes on two cores ran 1.4x slower. Dask's default also sets
# MALLOC_TRIM_THRESHOLD_=65536, which cost 33-40 % of featurization throughput here (many
# short-lived numpy buffers get trimmed back to the OS and re-faulted); we leave glibc's default.
_WORKER_ENV = {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1,
               "NUMBA_NUM_THREADS": 1}

#: How long to wait for an existing scheduler before giving up.
CONNECT_TIMEOUT_S = 10


def worker_config() -> dict:
    """Dask config entries fmadask applies to the worker processes it starts."""
    return {"distributed.nanny.pre-spawn-environ": dict(_WORKER_ENV)}


@contextlib.contextmanager
def get_client(scheduler: str | None = None, workers: int | None = None,
               threads_per_worker: int = 1, memory_limit: str | float = "auto",
               quiet: bool = False) -> Iterator[Client]:
    """Yield a connected ``distributed.Client`` and clean up afterwards.

    Parameters
    ----------
    scheduler : str, optional
        Address of an existing scheduler (``tcp://host:8786``, ``tls://...``). When given, no
        cluster is started and ``workers`` is ignored.
    workers : int, optional
        Number of local worker processes (default 2).
    threads_per_worker : int
        Task threads per local worker. One is right for featurization, which is CPU-bound and
        holds the GIL in places.
    memory_limit : str or float
        Per-worker memory limit of the local cluster (Dask's syntax, e.g. ``"4GiB"``).
    quiet : bool
        Do not print the dashboard link.

    Raises
    ------
    ClusterError
        When the scheduler cannot be reached within ``CONNECT_TIMEOUT_S`` seconds.
    """
    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {scheduler} ({exc.__class__.__name__}): "
                               "check the address and that the scheduler is running") from None
        cluster = None
    else:
        with dask.config.set(worker_config()):
            cluster = LocalCluster(n_workers=workers or 2, threads_per_worker=threads_per_worker,
                                   processes=True, host="127.0.0.1", dashboard_address="localhost:0",
                                   memory_limit=memory_limit)
        client = Client(cluster)
    if not quiet:
        print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
