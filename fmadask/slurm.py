"""SLURM through dask-jobqueue: worker jobs that outlive a walltime, and jobs that never start.

What a user sets is ``[cluster]``: ``workers`` (Dask worker processes, as everywhere), ``cores``,
``processes`` and ``memory`` (per worker process) of each job, ``walltime``, ``queue``,
``account``, ``job_directives`` and ``lifetime``. :func:`job_settings` turns them into
``SLURMCluster`` arguments; what they leave unset comes from the ``jobqueue.slurm`` Dask
configuration (deploy/slurm/jobqueue.yaml: the environment prologue, interface, local directory).

Walltimes: each worker retires by itself ``lifetime`` seconds after it started (Dask's
``--lifetime``, staggered so that the workers of one job batch do not all leave at once), well
before SLURM would kill it, and the cluster, kept at ``workers`` by ``adapt``, submits a new job in
its place. Work in flight on a retiring worker is redone elsewhere; the stages resume the rest
(featurize partitions, classical fits, CNN epochs from the last checkpoint).

Jobs that never start: before anything is submitted, ``sbatch --test-only`` asks SLURM whether a
worker job could ever run (a job asking more cores or memory than any node has is refused there,
in one line); afterwards :func:`wait_for_workers` waits for the first worker, saying while it
waits how many jobs are pending and why (squeue's reason), and stops with that reason.

Nothing here imports dask-jobqueue at module level (it is the optional ``slurm`` extra).
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from fmadask.errors import ClusterError, ConfigError
from fmadask.options import setting

log = logging.getLogger(__name__)

#: The SLURM name of fmadask's worker jobs (what ``squeue -n`` finds).
JOB_NAME = "fmadask-worker"
#: Memory of one worker process when ``[cluster] memory`` is ``'auto'``.
DEFAULT_WORKER_MEMORY = "4GiB"
#: Seconds between two looks at the queue while waiting for workers.
POLL_S = 2.0
#: Seconds between two progress lines while waiting for workers.
SAY_EVERY_S = 30.0

#: What some of squeue's pending reasons mean for a user, and what to do.
_REASONS = {
    "PartitionConfig": "the job asks for more than the partition allows (cores, memory, time "
                       "or nodes)",
    "PartitionTimeLimit": "the walltime is over the partition's limit",
    "Resources": "the nodes are busy or too small for the job",
    "Priority": "other jobs come first",
    "ReqNodeNotAvail": "the nodes it needs are down, drained or reserved",
    "QOSMaxCpuPerUserLimit": "your QOS limits the cores you may use at once",
    "AssocGrpCpuLimit": "your account's core limit is reached",
    "BeginTime": "it was asked to start later",
    "JobHeldUser": "it is held (scontrol release JOBID)",
    "JobHeldAdmin": "an administrator holds it",
    "InvalidAccount": "the account is not valid on this cluster",
    "InvalidQOS": "the QOS is not valid on this cluster",
}


def walltime_seconds(walltime: str) -> int:
    """``[D-]HH:MM:SS`` in seconds.

    Examples
    --------
    >>> walltime_seconds("01:30:00"), walltime_seconds("1-00:00:10")
    (5400, 86410)
    """
    days, _, clock = walltime.rpartition("-")
    hours, minutes, seconds = (int(p) for p in clock.split(":"))
    return (int(days) if days else 0) * 86400 + hours * 3600 + minutes * 60 + seconds


def lifetime_settings(walltime: str, lifetime: float | str) -> tuple[float, float] | None:
    """``(lifetime, stagger)`` in seconds of a worker of a job with this ``walltime``, or None
    (``lifetime = 'none'``: workers live until SLURM ends their job).

    With ``'auto'`` a worker retires by ``walltime - margin`` at the latest, where the margin
    (at most 10 min, 15 % of short walltimes) leaves time to hand its data over, and the workers'
    retirements are spread over ``2 * stagger`` (at most 5 min, 10 %). A number is the lifetime
    itself, staggered by 10 % of it (at most 5 min).

    Raises
    ------
    ConfigError
        A lifetime that does not end before the walltime.

    Examples
    --------
    >>> lifetime_settings("04:00:00", "auto")
    (13500.0, 300.0)
    >>> lifetime_settings("00:02:00", "auto")
    (90.0, 12.0)
    """
    if lifetime == "none":
        return None
    wall = walltime_seconds(walltime)
    if lifetime == "auto":
        margin, stagger = min(600.0, 0.15 * wall), min(300.0, 0.1 * wall)
        return wall - margin - stagger, stagger
    stagger = min(300.0, 0.1 * float(lifetime))
    if float(lifetime) + stagger >= wall:
        raise ConfigError(f"{setting('cluster.lifetime')} {lifetime:g} s (+ {stagger:g} s of "
                          f"stagger) does not end before the walltime {walltime} ({wall} s): "
                          "lower it, or use 'auto'")
    return float(lifetime), stagger


def job_settings(options: Mapping[str, Any]) -> dict[str, Any]:
    """``SLURMCluster`` keyword arguments from ``[cluster]``'s SLURM settings.

    Parameters
    ----------
    options : mapping
        ``cores``, ``processes``, ``memory`` (per worker process, Dask's syntax, or ``'auto'``),
        ``walltime``, ``lifetime``, ``queue``, ``account``, ``job_directives`` (as validated by
        :class:`fmadask.options.ClusterOptions`); missing or empty ones are left to the
        ``jobqueue.slurm`` configuration.

    Returns
    -------
    dict
        ``cores``, ``processes``, ``memory`` (of the whole job), ``walltime``, ``queue``,
        ``account``, ``job_extra_directives``, ``worker_extra_args`` (the lifetime flags).

    Raises
    ------
    ConfigError
        More processes than cores, a memory size Dask cannot read, a lifetime past the walltime.
    """
    from dask.utils import format_bytes, parse_bytes

    cores, processes = int(options.get("cores") or 1), int(options.get("processes") or 1)
    if processes > cores:
        raise ConfigError(f"{setting('cluster.processes')} {processes} is more than "
                          f"{setting('cluster.cores')} {cores}: each worker process needs a core")
    memory = options.get("memory") or "auto"
    per_worker = DEFAULT_WORKER_MEMORY if memory == "auto" else memory
    try:
        job_memory = format_bytes(parse_bytes(per_worker) * processes).replace(" ", "")
    except (ValueError, TypeError):
        raise ConfigError(f"{setting('cluster.memory')} {per_worker!r} is not a memory size: "
                          "write it like '4GiB'") from None
    settings: dict[str, Any] = {"cores": cores, "processes": processes, "memory": job_memory,
                                "job_name": JOB_NAME}
    walltime = options.get("walltime") or ""
    if walltime:
        settings["walltime"] = walltime
        timing = lifetime_settings(walltime, options.get("lifetime", "auto"))
        if timing is not None:
            life, stagger = timing
            settings["worker_extra_args"] = [f"--lifetime={life:.0f}s",
                                             f"--lifetime-stagger={stagger:.0f}s"]
    for key in ("queue", "account"):
        if options.get(key):
            settings[key] = options[key]
    if options.get("job_directives"):
        settings["job_extra_directives"] = list(options["job_directives"])
    return settings


def job_script(settings: Mapping[str, Any], prologue: list[str], jobqueue: Any) -> str:
    """The batch script dask-jobqueue submits for each worker job (for ``run --check``), with
    the scheduler's address left as ``SCHEDULER_ADDRESS``: it exists only once a run starts.
    ``jobqueue`` is the ``dask_jobqueue`` module (:func:`fmadask.cluster.import_extra`)."""
    job = jobqueue.slurm.SLURMJob(scheduler="tcp://SCHEDULER_ADDRESS:8786",
                                  job_script_prologue=prologue, **settings)
    return job.job_script()


def preflight(script: str) -> None:
    """Ask SLURM whether a worker job could ever run (``sbatch --test-only``), before submitting.

    Raises
    ------
    ClusterError
        When ``sbatch`` is not installed, or SLURM refuses the job (e.g. more cores or memory
        than any node of the partition has): one line with SLURM's words and what to change.
    """
    if shutil.which("sbatch") is None:
        raise ClusterError("scheduler 'slurm' needs SLURM's sbatch on this machine's PATH: run "
                           "fmadask on a login node of the cluster (or start a one-node SLURM "
                           "with scripts/slurm-local.sh)")
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="fmadask-slurm-") as f:
        f.write(script)
        f.flush()
        done = subprocess.run(["sbatch", "--test-only", f.name], capture_output=True, text=True,
                              timeout=60)
    if done.returncode == 0:
        return
    said = " ".join(line.strip() for line in done.stderr.splitlines()
                    if line.strip() and "to start at" not in line) or f"exit {done.returncode}"
    said = re.sub(r"^sbatch: error: ", "", said)
    raise ClusterError(f"SLURM refuses the worker jobs ({said}); each asks for "
                       f"{_asked(script)}{_partition_nodes(script)}: lower "
                       f"{setting('cluster.cores')}, {setting('cluster.processes')}, "
                       f"{setting('cluster.memory')} or {setting('cluster.walltime')}, or choose "
                       f"another {setting('cluster.queue')}")


def _asked(script: str) -> str:
    """What a job script asks for, in words (from its #SBATCH lines)."""
    found = dict(re.findall(r"^#SBATCH\s+(-[-\w]+)[ =](\S+)", script, flags=re.M))
    parts = []
    if "--cpus-per-task" in found:
        parts.append(f"{found['--cpus-per-task']} cores")
    if "--mem" in found:
        parts.append(f"{found['--mem']} of memory")
    if "-t" in found:
        parts.append(f"walltime {found['-t']}")
    if "-p" in found:
        parts.append(f"partition {found['-p']}")
    return ", ".join(parts) or "its settings"


def _partition_nodes(script: str) -> str:
    """``'; the nodes of partition P have C cores and M MB'`` from sinfo (empty if unknown)."""
    part = re.search(r"^#SBATCH\s+-p\s+(\S+)", script, flags=re.M)
    command = ["sinfo", "-h", "-o", "%P %c %m"] + (["-p", part.group(1)] if part else [])
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    rows = [line.split() for line in out.splitlines() if len(line.split()) == 3]
    if not rows:
        return ""
    name, cpus, mem = rows[0] if part else next((r for r in rows if r[0].endswith("*")), rows[0])
    return (f"; the nodes of partition {name.rstrip('*')} have {cpus} cores and "
            f"{int(mem) // 1024 if mem.isdigit() else mem} GiB")


def queue_state(job_ids: list[str]) -> list[tuple[str, str, str]]:
    """``(job id, state, reason)`` of each of ``job_ids`` still in the queue (squeue)."""
    if not job_ids:
        return []
    try:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i|%T|%r"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [tuple(line.split("|", 2)) for line in out.splitlines()  # type: ignore[misc]
            if line.count("|") == 2]


def describe_queue(states: list[tuple[str, str, str]]) -> str:
    """``'2 worker jobs pending (Resources: the nodes are busy ...)'`` in words.

    Examples
    --------
    >>> describe_queue([("7", "PENDING", "BeginTime"), ("8", "PENDING", "BeginTime")])
    '2 worker jobs pending (BeginTime: it was asked to start later)'
    """
    if not states:
        return "no worker job in the queue yet"
    pending = [s for s in states if s[1] == "PENDING"]
    reasons = sorted({r for _, _, r in pending})
    said = "; ".join(f"{r}: {_REASONS[r]}" if r in _REASONS else r for r in reasons)
    text = f"{len(pending)} worker job{'s' if len(pending) != 1 else ''} pending"
    if said:
        text += f" ({said})"
    running = len(states) - len(pending)
    return text + (f", {running} starting" if running else "")


def replace_lost_jobs(cluster: Any, every_s: float = 5.0) -> None:
    """Make an adaptive ``SLURMCluster`` replace worker jobs that ended on their own.

    A job that SLURM ended (``scancel``, a node lost) stays in the cluster's plan, so ``adapt``
    believes the cluster is whole and submits nothing. Every ``every_s`` seconds this drops from
    the plan each job the cluster once had and has since given up (after Dask's
    ``distributed.deploy.lost-worker-timeout``); ``adapt`` then submits a new one. A job planned
    but not started yet is never dropped.
    """
    from tornado.ioloop import PeriodicCallback

    seen: set[str] = set()

    def sweep() -> None:
        seen.update(cluster.workers)
        for name in [n for n in cluster.worker_spec if n in seen and n not in cluster.workers]:
            del cluster.worker_spec[name]

    callback = PeriodicCallback(sweep, every_s * 1000)
    cluster.periodic_callbacks["fmadask-replace-lost-jobs"] = callback   # stopped by close()
    cluster.loop.add_callback(callback.start)


def job_ids(cluster: Any) -> list[str]:
    """The SLURM ids of the worker jobs a ``SLURMCluster`` has submitted."""
    return [str(job.job_id) for job in getattr(cluster, "workers", {}).values()
            if getattr(job, "job_id", None)]


def wait_for_workers(client: Any, cluster: Any, wait_s: float) -> None:
    """Wait until the SLURM cluster has a worker, saying every :data:`SAY_EVERY_S` seconds how
    many of its jobs are pending and why.

    Raises
    ------
    ClusterError
        When no worker joined within ``wait_s`` seconds: names the jobs' state and SLURM's
        reason, and what to change.
    """
    start = time.monotonic()
    said = start - SAY_EVERY_S
    while not client.scheduler_info(n_workers=-1).get("workers"):
        now = time.monotonic()
        if now - start >= wait_s:
            state = describe_queue(queue_state(job_ids(cluster)))
            raise ClusterError(f"no SLURM worker joined within {wait_s:g} s: {state}; fix what "
                               "SLURM says (squeue -u $USER; lower "
                               f"{setting('cluster.cores')}/{setting('cluster.memory')}, choose "
                               f"another {setting('cluster.queue')}), or wait longer with "
                               f"{setting('cluster.worker_timeout')}")
        if now - said >= SAY_EVERY_S:
            log.info("waiting for SLURM workers: %s", describe_queue(queue_state(job_ids(cluster))))
            said = now
        time.sleep(POLL_S)
