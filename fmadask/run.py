"""Run a job spec: its stages in order, on the cluster it names, skipping stages already done.

The stages are those of the registry (:mod:`fmadask.stages`), in its order: ``featurize`` (mp3 ->
features and spectrograms), ``classical`` (scikit-learn and XGBoost on the features), ``cnn``
(PyTorch DDP on the spectrograms) and ``fusion`` (the best of both pooled, its weight fitted on
validation; on when both are). Each is run through its :class:`~fmadask.stages.Stage` value
(read its state, plan, execute), so this module holds no table of stages. After a stage succeeds
the runner writes ``RUN_DIR/_stages/<stage>.json`` holding the stage's *parameters*: everything
that decides its outputs (data, subset, split, sample rate, models, epochs, ... and the parameters
of the stages it reads from), never where it ran (local cluster or remote scheduler, worker
count, TLS): the same job gives the same results on any cluster.

On a re-run a stage whose marker holds the same parameters is skipped. A stage whose marker holds
*other* parameters is refused with one line naming what changed, unless ``[output] overwrite =
true``, which redoes it (and, through the parameters, every stage after it). A stage without a
marker runs, resuming whatever its own code can resume (featurize skips complete partitions).
No cluster is started when every stage is done.

The run folder may be a URL (``[output] dir = "s3://bucket/runs/r1"``, reached with ``[data]
storage_options`` and the environment's ``AWS_*``): every stage reads from and writes into it
(each object whole, completion records and model cards last; the cnn stage's ranks read the
shards through each host's cache, ``[cnn] cache_dir`` and ``cache_size``, which change no
result and so are no stage parameter), and so does the runner: ``job.toml`` and the stage
markers are single PUTs, a marker after its stage's outputs. The run-folder lock is then a
conditional PUT (:class:`fmadask.lock.ObjectLockStore`).
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fmadask import __version__
from fmadask.errors import ConfigError
from fmadask import storage
from fmadask.jobspec import JobSpec, format_spec, local_path
from fmadask.storage import redact
from fmadask.lock import RunLock
from fmadask import stages
from fmadask.options import OptionError
from fmadask.records import describe_change
from fmadask.runfolder import MARKER_DIR, SPEC_FILE, foreign_entries
from fmadask.stages import StageContext

@dataclass(frozen=True)
class StagePlan:
    """What the runner will do with one stage.

    ``action`` is ``'skip'`` (its marker has the same parameters), ``'run'`` (no marker: first
    run or resume), ``'redo'`` (other parameters and ``overwrite`` set) or ``'off'`` (disabled).
    """

    stage: str
    action: str
    params: dict[str, Any]
    reason: str = ""


# ------------------------------------------------------------------------------ planning


def stage_params(spec: JobSpec, stage: str) -> dict[str, Any]:
    """The parameters that decide ``stage``'s outputs (JSON-compatible): its
    :attr:`~fmadask.stages.Stage.params`, with those of the stages it reads, so a change upstream
    makes them differ too."""
    return stages.stage_params(spec, stage)


def data_path(spec: JobSpec) -> str | Path:
    """The data folder: a local path (plain or ``file://``), or the URL the workers read
    (``s3://``, ``gs://``, ``https://``; with ``[data] storage_options``)."""
    path = local_path(spec.data.dir)
    return spec.data.dir if path is None else path


def run_path(spec: JobSpec) -> str | Path:
    """The run directory: a local path (plain or ``file://``), or the URL of a folder in object
    storage (``s3://bucket/runs/r1``, without a trailing ``/``).

    Raises
    ------
    ConfigError
        A URL whose protocol has no fsspec driver installed, or a read-only one (``https://``).
    """
    path = local_path(spec.output.dir)
    if path is not None:
        return path
    url = spec.output.dir.rstrip("/")
    storage.require_driver(url)
    if storage.is_read_only(url):
        raise ConfigError(f"{spec.source}: [output] dir = {redact(url)!r} is read-only: give a "
                          "bucket (s3://, gs://) or a local or mounted folder")
    return url


def run_options(spec: JobSpec) -> dict[str, Any]:
    """fsspec options of the job's URLs, the data folder's and the run folder's alike (``[data]
    storage_options``, as ``--storage-option`` serves both for featurize and train)."""
    return dict(spec.data.storage_options or {})


def marker_path(run_dir: str | Path, stage: str) -> str | Path:
    """``RUN_DIR/_stages/<stage>.json``."""
    return storage.join(run_dir, MARKER_DIR, f"{stage}.json")


def read_marker(run_dir: str | Path, stage: str,
                storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The marker of a finished stage, or None (an unreachable store is a one-line error)."""
    path = marker_path(run_dir, stage)
    try:
        marker = json.loads(storage.read_bytes(path, storage_options))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):      # (an unreachable store is no OSError: it is raised)
        return None  # unreadable: treat the stage as not done, it will run again
    return marker if isinstance(marker, dict) else None


def _write_text(location: str | Path, text: str, storage_options: dict[str, Any]) -> None:
    """Write a record of the run whole: an atomic rename on disk, one PUT for a URL (without
    any URL's password)."""
    storage.write_bytes(location, redact(text).encode("utf-8"), storage_options)


def plan(spec: JobSpec) -> list[StagePlan]:
    """Decide, for every stage, whether to skip, run or redo it.

    Raises
    ------
    ConfigError
        A stage's outputs were made with other parameters and ``[output] overwrite`` is false.
    """
    run_dir = run_path(spec)
    data_path(spec)
    check_names(spec)
    options = run_options(spec)
    plans = []
    for s in stages.stages():
        stage = s.name
        params = stage_params(spec, stage)
        if not getattr(spec, stage).enabled:
            plans.append(StagePlan(stage, "off", params, "disabled in the job spec"))
            continue
        if not all(getattr(spec, r).enabled for r in s.requires):
            plans.append(StagePlan(stage, "off", params,
                                   f"needs the {' and '.join(s.requires)} stages"))
            continue
        marker = read_marker(run_dir, stage, options)
        if marker is None:
            plans.append(StagePlan(stage, "run", params))
        elif marker.get("params") == json.loads(json.dumps(params)):
            plans.append(StagePlan(stage, "skip", params, f"done {marker.get('finished', '')}"))
        else:
            change = describe_change(marker.get("params") or {}, params)
            if not spec.output.overwrite:
                raise ConfigError(f"{redact(run_dir)} holds {stage} outputs made with other parameters "
                                  f"({change}): set output.overwrite=true to redo them, or "
                                  "choose another output.dir")
            plans.append(StagePlan(stage, "redo", params, change))
    return plans


def check_names(spec: JobSpec) -> None:
    """Check the names the enabled stages look up in their registries (models, nets):
    ConfigError for an unknown one."""
    for s in stages.stages():
        if s.check is not None and getattr(spec, s.name).enabled:
            s.check(spec)


# ------------------------------------------------------------------------------- running


def client_settings(spec: JobSpec) -> tuple[str | None, dict[str, Any]]:
    """``(scheduler, keyword arguments)`` for :func:`fmadask.cluster.get_client`."""
    import dask

    from fmadask.cluster import make_security

    c = spec.cluster
    if c.kind == "address":
        scheduler = c.address or dask.config.get("scheduler-address", None)
        if not scheduler:
            raise ConfigError(f"{spec.source}: [cluster] kind = 'address' needs an address: set "
                              "cluster.address, pass --scheduler ADDR or set "
                              "DASK_SCHEDULER_ADDRESS")
    else:
        scheduler = c.kind
    kwargs: dict[str, Any] = {
        "workers": c.workers, "threads_per_worker": c.threads_per_worker,
        "memory_limit": c.memory, "connect_timeout": c.connect_timeout,
        "worker_timeout": c.worker_timeout,
        "security": make_security(c.tls_ca_file or None, c.tls_cert or None, c.tls_key or None),
    }
    if c.kind == "slurm":
        kwargs["cluster_options"] = slurm_options(c)
    elif c.kind == "kubernetes":
        kwargs["cluster_options"] = {"image": c.image, "namespace": c.namespace,
                                     "cluster_spec": c.cluster_spec, "name": spec.name}
    return scheduler, kwargs


def slurm_options(c: Any) -> dict[str, Any]:
    """The SLURM settings of a ``[cluster]`` section (:func:`fmadask.slurm.job_settings`)."""
    return {k: getattr(c, k) for k in ("queue", "account", "walltime", "cores", "processes",
                                        "lifetime", "job_directives")}


def ensure_data(spec: JobSpec, file: IO[str]) -> None:
    """Write the FMA-shaped sample into ``data.dir`` when the spec asks and it has none."""
    from fmadask.fma.layout import METADATA_DIR

    folder = data_path(spec)
    if not spec.data.generate_sample or not isinstance(folder, Path) or \
            (folder / METADATA_DIR / "tracks.csv").is_file():
        return       # a URL data folder with generate_sample is refused by the spec check
    from fmadask.fma.sample import make_sample

    d = spec.data
    print(f"generating an FMA-shaped sample in {folder} ({d.sample_tracks_per_genre} tracks per "
          f"genre, {d.sample_seconds:g} s)", file=file)
    try:
        make_sample(folder, tracks_per_genre=d.sample_tracks_per_genre,
                    seconds=d.sample_seconds, seed=d.sample_seed, overlap=d.sample_overlap)
    except OptionError:   # a folder holding other files: never written over
        raise ConfigError(f"{spec.source}: data.dir {folder} holds files but no "
                          f"{METADATA_DIR}/tracks.csv: generate_sample writes only into a new or "
                          "empty folder (or an earlier sample); choose another data.dir") from None


def run_job(spec: JobSpec, file: IO[str] | None = None) -> dict[str, Any]:
    """Run the stages of ``spec`` in order on its cluster.

    Parameters
    ----------
    spec : JobSpec
        A validated job spec (:func:`fmadask.jobspec.load_job`).
    file : file object, optional
        Where progress lines go (default standard output).

    Returns
    -------
    dict
        ``{'run_dir': Path or URL, 'stages': {stage: action}, 'results': {name: Path or URL}}``.
    """
    file = file or sys.stdout
    ensure_data(spec, file)
    plan(spec)                   # every refusal before the lock is taken or anything written
    run_dir = run_path(spec)
    with RunLock(run_dir, f"fmadask run {spec.source}", storage_options=run_options(spec)):
        try:
            return _run_locked(spec, run_dir, file)
        except OptionError as exc:
            raise exc.named(exc.key) from None      # named as in the job spec: section.key


def _run_locked(spec: JobSpec, run_dir: str | Path, file: IO[str]) -> dict[str, Any]:
    plans = plan(spec)           # again: another writer may have finished a stage meanwhile
    options = run_options(spec)
    foreign = foreign_entries(run_dir, options)
    if foreign and not spec.output.overwrite:
        raise OptionError("output.overwrite", f"{redact(run_dir)} is not empty and not an fmadask run "
                          f"folder (it holds {', '.join(foreign[:3])}): choose a new or empty "
                          "output.dir, or set {option} = true to use it anyway (fmadask never "
                          "deletes files it did not write)")
    _write_text(storage.join(run_dir, SPEC_FILE), format_spec(spec), options)
    for p in plans:
        print(f"{p.stage:>10}: {_describe_action(p)}", file=file)
    todo = [p for p in plans if p.action in ("run", "redo")]
    if todo:
        from fmadask.cluster import get_client

        scheduler, kwargs = client_settings(spec)
        with get_client(scheduler, **kwargs) as client:
            for p in todo:
                _run_stage_resuming(spec, p, client, run_dir, file)
    results = result_files(run_dir, options)
    print(f"results of {spec.name} in {redact(run_dir)}:", file=file)
    for name, path in results.items():
        print(f"  {name}: {redact(path)}", file=file)
    return {"run_dir": run_dir, "stages": {p.stage: p.action for p in plans}, "results": results}


def _describe_action(p: StagePlan) -> str:
    words = {"skip": "complete, skipped", "run": "to run", "redo": "to redo", "off": "off"}
    return words[p.action] + (f" ({p.reason})" if p.reason else "")


#: How many times in a row a stage whose workers left is resumed on the workers that replace them.
STAGE_RETRIES = 3


def _run_stage_resuming(spec: JobSpec, p: StagePlan, client: Any, run_dir: str | Path,
                        file: IO[str]) -> None:
    """Run a stage; on a SLURM cluster, whose workers retire before their walltime and are
    replaced, a stage that lost work with its workers goes on (resuming what is complete) once
    workers are back, at most :data:`STAGE_RETRIES` times."""
    from fmadask.cluster import workers_left

    for attempt in range(STAGE_RETRIES + 1):
        try:
            _run_stage(spec, p, client, run_dir, file)
            return
        except Exception as exc:
            if spec.cluster.kind != "slurm" or attempt == STAGE_RETRIES or not workers_left(exc):
                raise
            print(f"== {p.stage}: work was lost with workers that left the cluster; resuming "
                  f"it once workers are back (retry {attempt + 1} of {STAGE_RETRIES})",
                  file=file, flush=True)
            try:
                client.wait_for_workers(1, timeout=spec.cluster.worker_timeout)
            except TimeoutError:
                raise exc from None
            p = StagePlan(p.stage, "run", p.params, p.reason)   # resume, never redo again


def _run_stage(spec: JobSpec, p: StagePlan, client: Any, run_dir: str | Path,
               file: IO[str]) -> None:
    options = run_options(spec)
    marker = marker_path(run_dir, p.stage)
    storage.remove(marker, options)  # an interrupted redo must not look complete
    if p.action == "redo":
        names = [s.name for s in stages.stages()]
        for later in names[names.index(p.stage) + 1:]:
            storage.remove(marker_path(run_dir, later), options)
    print(f"== {p.stage}", file=file, flush=True)
    start = time.perf_counter()
    context = StageContext(spec=spec, run_dir=run_dir, data_dir=data_path(spec),
                           storage_options=options, redo=p.action == "redo", file=file)
    stages.stage(p.stage).run(context, client)
    seconds = time.perf_counter() - start
    record = {"stage": p.stage, "params": p.params, "seconds": round(seconds, 3),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "fmadask": __version__,
              "scheduler": getattr(client, "scheduler", None) and client.scheduler.address}
    _write_text(marker, json.dumps(record, indent=2) + "\n", options)
    print(f"== {p.stage} done in {seconds:.1f} s", file=file, flush=True)


def result_files(run_dir: str | Path, storage_options: dict[str, Any] | None = None
                 ) -> dict[str, str | Path]:
    """The result files and folders present in ``run_dir`` (a path or a URL), by name: each
    stage's :attr:`~fmadask.stages.Stage.results`."""
    found: dict[str, str | Path] = {}
    for s in stages.stages():
        found.update(s.results(run_dir, storage_options))
    return found


def check_report(spec: JobSpec) -> Iterator[str]:
    """Lines ``fmadask run --check`` prints: the resolved spec and what a run would do."""
    yield format_spec(spec).rstrip()
    for p in plan(spec):
        yield f"# {p.stage}: {_describe_action(p)}"
    try:
        scheduler, _ = client_settings(spec)
    except ConfigError:  # an address given at run time (--scheduler) is the usual way
        scheduler = "the address of --scheduler or DASK_SCHEDULER_ADDRESS (not set now)"
    where = "a local cluster" if scheduler == "local" else scheduler
    yield f"# cluster: {where}"
    if spec.cluster.kind == "slurm":
        yield from _slurm_check(spec)


def _slurm_check(spec: JobSpec) -> Iterator[str]:
    """The job script dask-jobqueue will submit for each worker job, as comment lines."""
    import importlib.util

    if importlib.util.find_spec("dask_jobqueue") is None:
        yield "# slurm: pip install 'fmadask[slurm]' to see the worker job script"
        return
    from fmadask import slurm
    from fmadask.cluster import import_extra, slurm_prologue

    c = spec.cluster
    settings = slurm.job_settings({**slurm_options(c), "memory": c.memory})
    jobs = -(-c.workers // c.processes)
    yield (f"# slurm: {c.workers} worker processes in {jobs} job(s) of {c.processes}; each job "
           "runs this script (the scheduler's address is filled in at run time):")
    for line in slurm.job_script(settings, slurm_prologue({}),
                                 import_extra("slurm")).splitlines():
        yield f"#   {line}"

