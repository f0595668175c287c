"""How a Dask ``Client`` is obtained: the one place that knows about clusters.

``get_client()`` starts a local cluster of worker processes (the default, for a laptop), connects
to an existing scheduler by address (``tcp://`` or ``tls://`` with certificates), or starts a
cluster through SLURM (dask-jobqueue) or Kubernetes (the Dask Kubernetes operator); those two are
optional extras, imported only when chosen. Worker processes run one BLAS/OpenMP thread each, and
the nanny's ``MALLOC_TRIM_THRESHOLD_`` default is removed (see ``_WORKER_ENV``); workers started
elsewhere get the same environment from :func:`worker_environ`.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import shlex
import signal
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dask
from distributed import Client, LocalCluster, Security

from fmadask.errors import ClusterError, ConfigError, WorkersLeft
from fmadask.options import CLUSTER_KINDS, OPTIONS, setting

logger = logging.getLogger(__name__)

# Environment of every worker process a nanny spawns. One numeric thread per process: with the
# default thread count, two processes on two cores ran 1.4x slower. Dask's default also sets
# MALLOC_TRIM_THRESHOLD_=65536, which cost 33-40 % of featurization throughput here (many
# short-lived numpy buffers get trimmed back to the OS and re-faulted); we leave glibc's default.
_WORKER_ENV = {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1,
               "NUMBA_NUM_THREADS": 1}
# The nanny drops variables whose value is None. Saying so explicitly matters where Dask *merges*
# this mapping with its default (config files, DASK_* variables) instead of replacing it.
_UNSET_ENV = {"MALLOC_TRIM_THRESHOLD_": None}

#: How long to wait for an existing scheduler before giving up.
CONNECT_TIMEOUT_S = 10
#: How long to wait for a first worker (``cluster.worker_timeout``).
WORKER_TIMEOUT_S: float = OPTIONS["cluster.worker_timeout"].default
#: ``scheduler`` values that start a cluster (the ``[cluster] kind`` choices but 'address');
#: anything else is a scheduler address.
STARTED_KINDS = tuple(k for k in CLUSTER_KINDS if k != "address")
#: The optional extra each cluster kind needs.
_EXTRAS = {"slurm": ("dask_jobqueue", "dask-jobqueue", "slurm"),
           "kubernetes": ("dask_kubernetes.operator", "dask-kubernetes", "kubernetes")}


#: The Dask config entry of the worker processes' environment.
_ENVIRON_KEY = "distributed.nanny.pre-spawn-environ"


def worker_config() -> dict:
    """Dask config entries fmadask applies to the worker processes it starts: their environment,
    and this module as their preload (:func:`dask_setup`)."""
    return {_ENVIRON_KEY: {**_WORKER_ENV, **_UNSET_ENV}, "distributed.worker.preload": [__name__]}


def dask_setup(worker: Any) -> None:
    """Preload of the local worker processes: they ignore SIGINT.

    Ctrl-C in a terminal signals the whole foreground process group, the local workers with it;
    each printed a KeyboardInterrupt traceback beside the command's one line and hung until its
    nanny killed it. The command alone handles Ctrl-C and closes its cluster.
    """
    if threading.current_thread() is threading.main_thread():  # where signals can be set
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def worker_environ() -> dict[str, str]:
    """Environment variables that give ``dask worker`` processes fmadask's worker environment.

    For workers started outside fmadask (``dask worker`` by hand, docker-compose, SLURM jobs,
    Kubernetes pods): set these in the environment of the ``dask worker`` command.

    Examples
    --------
    >>> sorted(worker_environ())
    ['DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON']
    """
    value = worker_config()[_ENVIRON_KEY]
    return {"DASK_" + _ENVIRON_KEY.upper().replace(".", "__").replace("-", "_"): repr(value)}


def workers_info(client: Client) -> dict[str, dict[str, Any]]:
    """Per-worker information (address -> dict with ``nthreads``, ``nanny``, ...), asked of the
    scheduler now.

    ``Client.scheduler_info()`` returns a cached attribute that the client's periodic refresh
    replaces with totals only (no per-worker entries); read while the scheduler is slow, it can
    show a cluster without workers.
    """
    return client.sync(client.scheduler.identity, n_workers=-1)["workers"]


#: The options that name a client's TLS files.
_TLS_KEYS = ("cluster.tls_ca_file", "cluster.tls_cert", "cluster.tls_key")


def _tls_settings() -> str:
    first, second, third = (setting(k) for k in _TLS_KEYS)
    return f"{first}, {second} and {third}"


def make_security(ca_file: str | Path | None = None, cert: str | Path | None = None,
                  key: str | Path | None = None) -> Security | None:
    """TLS settings for a ``tls://`` scheduler, or None to use Dask's configuration.

    Parameters
    ----------
    ca_file, cert, key : str or Path, optional
        PEM files: the certificate authority that signed the cluster's certificates, this
        client's certificate and its private key. Give all three or none; with none, Dask's
        ``distributed.comm.tls.*`` configuration (``~/.config/dask/*.yaml``, ``DASK_CONFIG``)
        applies.

    Raises
    ------
    ConfigError
        When only some of the three are given, or a file does not exist.
    """
    given = dict(zip(_TLS_KEYS, (ca_file, cert, key)))
    if not any(given.values()):
        return None
    missing = [setting(name) for name, value in given.items() if not value]
    if missing:
        raise ConfigError(f"TLS needs {_tls_settings()} together; missing {', '.join(missing)}")
    for name, value in given.items():
        if not Path(value).is_file():
            raise ConfigError(f"{setting(name)} {value}: file not found")
    return Security(tls_ca_file=str(ca_file), tls_client_cert=str(cert),
                    tls_client_key=str(key), require_encryption=True)


def connect(address: str, security: Security | None = None,
            timeout: float = CONNECT_TIMEOUT_S) -> Client:
    """A ``Client`` connected to the scheduler at ``address``, or a one-line ClusterError.

    Fails within ``timeout`` seconds when nothing answers, at once when TLS is refused.
    """
    try:
        return Client(address, security=security, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line
        error = _connect_error(address, exc)
    # The half-built Client sits in reference cycles with the traceback. Collect it here: when the
    # cyclic GC finalises it later, inside the next Client's start-up, distributed's loop runner
    # deadlocks (seen with a TLS refusal followed by another connection in the same process).
    gc.collect()
    raise error


def _connect_error(address: str, exc: Exception) -> ClusterError:
    """The one-line ClusterError for a failed connection to ``address``."""
    from distributed.comm.core import FatalCommClosedError

    if isinstance(exc, FatalCommClosedError):  # the TLS handshake failed: wrong CA or certificate
        return ClusterError(f"the scheduler at {address} refused this client's TLS certificate "
                            f"({_first_line(exc)}): use certificates signed by that cluster's "
                            "CA")
    if isinstance(exc, TypeError) and "ssl" in str(exc).lower():
        return ClusterError(f"{address} needs TLS certificates: give {_tls_settings()} (or set "
                            "distributed.comm.tls.* in the Dask configuration)")
    if isinstance(exc, (OSError, TimeoutError)):
        return ClusterError(f"cannot reach the Dask scheduler at {address} "
                            f"({exc.__class__.__name__}): check the address (tls:// for a TLS "
                            "scheduler) and that the scheduler is running")
    # e.g. another service on that port answering something that is not Dask's protocol
    return ClusterError(f"cannot connect to {address} ({exc.__class__.__name__}: "
                        f"{_first_line(exc)[:120]}): is a Dask scheduler listening there?")


def scheduler_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the client lost its scheduler (it died, or the network failed)."""
    from distributed.comm.core import CommClosedError

    return (isinstance(exc, CommClosedError)
            or "scheduler-connection-lost" in str(getattr(exc, "reason", "") or exc))


def lost_scheduler_error(address: str | None) -> ClusterError:
    """The one-line error for a job whose scheduler went away."""
    return ClusterError(f"lost the Dask scheduler{f' at {address}' if address else ''} mid-job "
                        "(it stopped, or the network failed): start it again (or choose "
                        "another) and re-run the same command; finished work is kept and "
                        "resumed")


def workers_left(exc: BaseException) -> bool:
    """Whether ``exc`` says work was lost with the workers that held it (they left the cluster:
    a SLURM job past its lifetime or cancelled, a lost node), so that the same work can go on
    once other workers are there, as opposed to a failure of the work itself."""
    from distributed import KilledWorker
    from distributed.client import FutureCancelledError

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:   # through "raise ... from"
        seen.add(id(exc))
        text = str(exc)
        if isinstance(exc, (KilledWorker, FutureCancelledError, WorkersLeft)) or any(
                words in text for words in ("No valid workers found", "lost dependencies",
                                            "Worker holding Actor was lost")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def served_dashboard(client: Client, timeout: float = 2.0) -> str | None:
    """The link of the cluster's dashboard if one is served there now, else None.

    A scheduler without bokeh (or started with ``--no-dashboard``) still announces a link, whose
    page only says that bokeh is missing (or is a 404). So the dashboard is asked for the list
    of its plots, which only a real one fills.
    """
    import json
    import urllib.parse
    import urllib.request

    try:
        link = client.dashboard_link
        plots = urllib.parse.urljoin(link, "individual-plots.json")
        with urllib.request.urlopen(plots, timeout=timeout) as response:
            return link if json.loads(response.read()) else None
    except (KeyError, TypeError, ValueError, OSError):  # no dashboard service, no answer, 404
        return None


def await_workers(client: Client, timeout: float, where: str) -> None:
    """Return once the cluster has a worker; say once that it waits; give up after ``timeout``.

    Without this, work submitted to a scheduler without workers waits forever, silently.

    Raises
    ------
    ClusterError
        When no worker joined within ``timeout`` seconds; names the scheduler and the fix.
    """
    if workers_info(client):
        return
    logger.info(f"waiting up to {timeout:g} s for Dask workers to join {where} "
                f"({setting('cluster.worker_timeout')} sets how long)")
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise ClusterError(f"no Dask worker joined {where} in {timeout:g} s: start workers "
                           f"for it ('dask worker {client.scheduler.address}') or choose another "
                           f"scheduler, or wait longer with {setting('cluster.worker_timeout')}"
                           ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def import_extra(kind: str) -> Any:
    """The optional package of a cluster kind (``dask_jobqueue``), or a one-line ClusterError
    naming the extra to install."""
    module, package, extra = _EXTRAS[kind]
    handler = signal.getsignal(signal.SIGINT)
    try:
        import importlib

        return importlib.import_module(module)
    except ImportError:
        raise ClusterError(f"scheduler '{kind}' needs {package}: pip install "
                           f"'fmadask[{extra}]'") from None
    finally:
        # dask-jobqueue (0.9) replaces the SIGINT handler on import with sys.exit(): Ctrl-C then
        # ended fmadask with status 0, or was swallowed inside a callback, and the run went on
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, handler)


def _slurm_cluster(workers: int, memory_limit: str | float,
                   options: Mapping[str, Any]) -> Any:
    """A dask-jobqueue ``SLURMCluster`` kept at ``workers`` worker processes.

    The jobs' cores, processes, memory, walltime, partition, account and extra directives come
    from ``options`` (``[cluster]``, see :func:`fmadask.slurm.job_settings`), the rest from the
    ``jobqueue.slurm`` Dask configuration (deploy/slurm/jobqueue.yaml); the job script exports
    :func:`worker_environ`. SLURM is asked first whether such a job can ever run. The cluster
    adapts to ``workers`` rather than scaling once, so that a worker that retires before its
    walltime (or whose job is cancelled) is replaced by a new job.
    """
    from fmadask import slurm

    jobqueue = import_extra("slurm")
    settings = slurm.job_settings({**options, "memory": memory_limit})
    prologue = slurm_prologue(options)
    slurm.preflight(slurm.job_script(settings, prologue, jobqueue))
    try:
        cluster = jobqueue.SLURMCluster(job_script_prologue=prologue, **settings)
    except ValueError as exc:  # e.g. a setting dask-jobqueue refuses
        raise ClusterError(f"cannot configure the SLURM cluster: {_first_line(exc)} (see "
                           "deploy/slurm/jobqueue.yaml)") from None
    if workers:
        cluster.adapt(minimum=workers, maximum=workers)
        slurm.replace_lost_jobs(cluster)
    return cluster


def slurm_prologue(options: Mapping[str, Any]) -> list[str]:
    """The shell lines of a worker job before ``dask worker``: the configuration's (activate
    the environment) and fmadask's worker environment."""
    prologue = list(options.get("job_script_prologue")
                    or dask.config.get("jobqueue.slurm.job-script-prologue", None) or [])
    return prologue + [f"export {k}={_shell_quote(v)}" for k, v in worker_environ().items()]


def _shell_quote(value: str) -> str:
    """``value`` quoted for a POSIX shell, in double quotes when that is safe (readable)."""
    if not any(c in value for c in '$`"\\!'):
        return f'"{value}"'
    return shlex.quote(value)


def _kubernetes_cluster(workers: int, memory_limit: str | float,
                        options: Mapping[str, Any]) -> Any:
    """A ``KubeCluster`` of the Dask operator with ``workers`` worker pods.

    ``options['cluster_spec']`` names a DaskCluster manifest (deploy/kubernetes/daskcluster.yaml)
    to start as is; otherwise the operator's default pod spec is used with ``options['image']``,
    ``memory_limit`` and :func:`worker_environ`.
    """
    operator = import_extra("kubernetes")
    namespace = options.get("namespace") or None
    manifest = options.get("cluster_spec")
    if manifest:
        import yaml

        spec = yaml.safe_load(Path(manifest).read_text())
        cluster = operator.KubeCluster(custom_cluster_spec=spec, namespace=namespace)
    else:
        if not options.get("image"):
            raise ConfigError("scheduler 'kubernetes' needs an image ([cluster] image, e.g. one "
                              "built from deploy/Dockerfile) or a cluster_spec manifest")
        resources = ({"limits": {"memory": str(memory_limit)}, "requests":
                      {"memory": str(memory_limit)}} if memory_limit not in (None, "auto") else {})
        cluster = operator.KubeCluster(name=options.get("name") or "fmadask",
                                       namespace=namespace, image=options["image"],
                                       n_workers=0, env=worker_environ(), resources=resources)
    if workers:
        cluster.scale(workers)
    return cluster


def _local_cluster(workers: int | None, threads_per_worker: int,
                   memory_limit: str | float) -> LocalCluster:
    with dask.config.set(worker_config()):
        return LocalCluster(n_workers=workers or 2, threads_per_worker=threads_per_worker,
                            processes=True, host="127.0.0.1", dashboard_address="localhost:0",
                            memory_limit=memory_limit)


@contextlib.contextmanager
def get_client(scheduler: str | None = None, workers: int | None = None,
               threads_per_worker: int = 1, memory_limit: str | float = "auto",
               quiet: bool = False, *, security: Security | None = None,
               connect_timeout: float = CONNECT_TIMEOUT_S,
               worker_timeout: float | None = WORKER_TIMEOUT_S,
               cluster_options: Mapping[str, Any] | None = None) -> Iterator[Client]:
    """Yield a connected ``distributed.Client`` and clean up afterwards.

    Parameters
    ----------
    scheduler : str, optional
        ``None`` or ``'local'``: start a local cluster of worker processes (bound to 127.0.0.1).
        ``'slurm'``: submit workers through dask-jobqueue (``pip install 'fmadask[slurm]'``).
        ``'kubernetes'``: start a cluster through the Dask Kubernetes operator
        (``pip install 'fmadask[kubernetes]'``). Anything else is the address of an existing
        scheduler (``tcp://host:8786``, ``tls://...``); then no cluster is started and
        ``workers`` is ignored.
    workers : int, optional
        Worker processes to start (default 2 for a local cluster).
    threads_per_worker : int
        Task threads per local worker. One is right for featurization, which is CPU-bound and
        holds the GIL in places.
    memory_limit : str or float
        Memory limit per worker (Dask's syntax, e.g. ``"4GiB"``); ``"auto"`` lets the cluster
        decide.
    quiet : bool
        Do not print the dashboard link (printed only where a dashboard answers).
    security : distributed.Security, optional
        TLS settings for an address (see :func:`make_security`); by default Dask's
        configuration.
    connect_timeout : float
        Seconds to wait for an existing scheduler.
    worker_timeout : float or None
        Seconds to wait for a first worker when the cluster has none (see
        :func:`await_workers`); None: do not wait (a client that only talks to the scheduler).
    cluster_options : mapping, optional
        Extra settings of a SLURM (``queue``, ``account``, ``walltime``, ``cores``, ...) or
        Kubernetes (``image``, ``namespace``, ``cluster_spec``) cluster.

    Raises
    ------
    ClusterError
        When the scheduler cannot be reached within ``connect_timeout`` seconds, refuses the
        TLS certificate, has no worker after ``worker_timeout`` seconds, or the optional
        package of a cluster kind is missing.
    """
    kind = scheduler if scheduler in STARTED_KINDS else ("local" if not scheduler else "address")
    cluster = None
    if kind == "address":
        client = connect(scheduler, security, connect_timeout)
    else:
        options = dict(cluster_options or {})
        if kind == "local":
            cluster = _local_cluster(workers, threads_per_worker, memory_limit)
        elif kind == "slurm":
            cluster = _slurm_cluster(workers or 0, memory_limit, options)
        else:
            cluster = _kubernetes_cluster(workers or 0, memory_limit, options)
        client = Client(cluster)
    interrupted = False
    try:
        link = None if quiet else served_dashboard(client)
        if link:
            logger.info(f"Dask dashboard: {link}")
        if worker_timeout is not None and kind == "slurm":   # what the queue says, too
            from fmadask import slurm

            slurm.wait_for_workers(client, cluster, worker_timeout)
        elif worker_timeout is not None:
            await_workers(client, worker_timeout, f"the Dask scheduler at "
                          f"{client.scheduler.address}" if kind == "address" else
                          f"the {kind} cluster")
        yield client
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        _close(client, cluster, quietly=interrupted)


def _close(client: Client, cluster: Any, quietly: bool) -> None:
    """Close ``client`` and the ``cluster`` it started; ``quietly`` after Ctrl-C, where the
    command's one line is all the user should see (closing a cluster whose tasks were cut short
    logs warnings and tracebacks: workers killed, broadcasts failed)."""
    if quietly:
        logging.disable(logging.CRITICAL)
        if cluster is not None:    # our own workers, about to go: cancelled tasks log warnings
            with contextlib.suppress(Exception):
                client.run(logging.disable, logging.CRITICAL)
    try:
        client.close()
        if cluster is not None:
            try:
                cluster.close()
            except TimeoutError:
                # Dask SIGKILLs a worker slow to exit, then waits about a second for it to be
                # reaped; on a loaded machine that wait runs out though the worker is killed.
                # The command's work is done: a closing cluster is not its failure.
                logger.debug("a local worker was killed but not yet reaped when closing")
        if quietly:
            gc.collect()     # futures nobody retrieved are reported when collected: now
    finally:
        if quietly:
            logging.disable(logging.NOTSET)


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpu_workers(client: Client, workers: list[str] | None = None) -> list[str]:
    """The workers (of ``workers``, default all, sorted) that see at least one CUDA device.

    Asked as tasks, not ``client.run``: importing torch would block a worker's event loop.
    """
    workers = sorted(workers_info(client)) if workers is None else workers
    counts = client.gather([client.submit(_cuda_devices, workers=[w], pure=False)
                            for w in workers])
    return [w for w, n in zip(workers, counts) if n > 0]
