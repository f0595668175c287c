"""Run a job spec: its stages in order, on the cluster it names, skipping stages already done.

The stages are ``featurize`` (mp3 -> features and spectrograms), ``classical`` (scikit-learn and
XGBoost on the features), ``cnn`` (PyTorch DDP on the spectrograms) and ``fusion`` (the best of
both pooled, its weight fitted on validation; on when both are). After a stage succeeds
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
from fmadask.options import CnnOptions, OptionError, option_fields, option_values
from fmadask.records import describe_change
from fmadask.runfolder import (CLASSICAL_DIR, CNN_DIR, FUSION_DIR, JOB_FILE, MARKER_DIR, SPEC_FILE,
                               foreign_entries)

#: The stages, in the order they run.
STAGES = ("featurize", "classical", "cnn", "fusion")


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
    """The parameters that decide ``stage``'s outputs (JSON-compatible).

    Later stages include the parameters of the stages they read, so a change upstream makes
    them differ too.
    """
    data = spec.data
    if stage == "featurize":
        f = spec.featurize
        return {"data_dir": redact(data_path(spec)), "subset": data.subset, "split": data.split,
                "seed": data.seed if data.split == "stratified" else None,
                **_results(f), "sr": None if f.sr == "native" else int(f.sr),
                "what": sorted(f.what), "max_seconds": max_seconds(spec)}
    upstream = {"featurize": stage_params(spec, "featurize")}
    if stage in ("classical", "cnn"):
        return {**upstream, **_results(getattr(spec, stage))}
    if stage == "fusion":
        f = spec.fusion
        return {"classical": stage_params(spec, "classical"), "cnn": stage_params(spec, "cnn"),
                "model": f.classical, "arch": f.cnn}
    raise ValueError(f"unknown stage {stage!r}")


def _results(section: Any) -> dict[str, Any]:
    """The keys of a section that decide its stage's outputs (JSON-compatible copies), every
    option of the section not marked ``result=False`` (:class:`fmadask.options.Option`)."""
    keys = {f.name for f in option_fields(type(section), spec=True)}
    return {name: list(value) if isinstance(value, list) else value
            for name, value in option_values(section, result=True).items() if name in keys}


def max_seconds(spec: JobSpec) -> float | None:
    """``[featurize] max_seconds`` as the featurize job takes it (``'none'``: no limit)."""
    value = spec.featurize.max_seconds
    return None if value == "none" else float(value)


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
    for stage in STAGES:
        params = stage_params(spec, stage)
        if not getattr(spec, stage).enabled:
            plans.append(StagePlan(stage, "off", params, "disabled in the job spec"))
            continue
        if stage == "fusion" and not (spec.classical.enabled and spec.cnn.enabled):
            plans.append(StagePlan(stage, "off", params, "needs the classical and cnn stages"))
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
    """Check the model and net names against the stages' registries (ConfigError if unknown)."""
    if spec.classical.enabled:
        from fmadask.ml.models import resolve_models

        try:
            resolve_models(_models(spec))
        except ConfigError as exc:
            raise ConfigError(f"{spec.source}: [classical] models: {exc}") from None
    if spec.cnn.enabled:
        from fmadask.dl.config import ARCHS     # the names only: no torch to check a spec

        unknown = [a for a in spec.cnn.archs if a not in ARCHS]
        if unknown:
            raise ConfigError(f"{spec.source}: [cnn] archs: unknown {', '.join(unknown)}: choose "
                              f"from {', '.join(ARCHS)}")


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
        for later in STAGES[STAGES.index(p.stage) + 1:]:
            storage.remove(marker_path(run_dir, later), options)
    print(f"== {p.stage}", file=file, flush=True)
    start = time.perf_counter()
    _STAGE_RUNNERS[p.stage](spec, client, run_dir, p.action == "redo", file)
    seconds = time.perf_counter() - start
    record = {"stage": p.stage, "params": p.params, "seconds": round(seconds, 3),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "fmadask": __version__,
              "scheduler": getattr(client, "scheduler", None) and client.scheduler.address}
    _write_text(marker, json.dumps(record, indent=2) + "\n", options)
    print(f"== {p.stage} done in {seconds:.1f} s", file=file, flush=True)


def _featurize(spec: JobSpec, client: Any, run_dir: str | Path, redo: bool,
               file: IO[str]) -> None:
    from fmadask.pipeline.featurize import FeaturizeConfig, run_featurize

    d = spec.data
    config = FeaturizeConfig.of(spec.featurize, subset=d.subset, split=d.split, seed=d.seed,
                                overwrite=redo)
    run_featurize(data_path(spec), out=run_dir, client=client, config=config, file=file,
                  storage_options=run_options(spec))


def _classical(spec: JobSpec, client: Any, run_dir: str | Path, redo: bool,
               file: IO[str]) -> None:
    from fmadask.ml.train import ClassicalConfig, train

    d = spec.data
    train(run_dir, out_dir=storage.join(run_dir, CLASSICAL_DIR), split=d.split,
          split_seed=d.seed, subset=d.subset, config=ClassicalConfig.of(spec.classical),
          client=client, storage_options=run_options(spec))


def _models(spec: JobSpec) -> str | list[str]:
    models = spec.classical.models
    return "all" if models == ["all"] else list(models)


def _cnn(spec: JobSpec, client: Any, run_dir: str | Path, redo: bool, file: IO[str]) -> None:
    from fmadask.cluster import gpu_workers
    from fmadask.dl.launch import run_cnn
    from fmadask.dl.outputs import has_checkpoint

    n = spec.cnn
    options = run_options(spec)
    if spec.cluster.kind == "slurm":   # worker jobs may still be queued: wait for every rank's
        try:
            client.wait_for_workers(n.ranks or spec.cluster.workers,
                                    timeout=spec.cluster.worker_timeout)
        except TimeoutError:
            pass                       # the launcher says how many there are
    gpu = n.device == "cuda" or (n.device == "auto" and bool(gpu_workers(client)))
    for arch in n.archs:
        out = cnn_dir(run_dir, arch)
        resume = has_checkpoint(out, options) and not (redo or spec.output.overwrite)
        print(f"-- cnn {arch}{' (resuming)' if resume else ''}: {redact(out)}", file=file,
              flush=True)
        # Every training option of the section (the cache's too); the device is chosen by gpu.
        training = {**option_values(n, CnnOptions), "arch": arch}
        del training["device"]
        run_cnn(run_dir, ranks=n.ranks, client=client, gpu=gpu, resume=resume,
                out_dir=str(out), storage_options=options, **training)


def cnn_dir(run_dir: str | Path, arch: str) -> str | Path:
    """Output folder of one CNN architecture: ``RUN_DIR/cnn/<arch>`` (a URL for a URL)."""
    return storage.join(run_dir, CNN_DIR, arch)


def _fusion(spec: JobSpec, client: Any, run_dir: str | Path, redo: bool, file: IO[str]) -> None:
    from fmadask.fusion.stage import format_results, fuse

    f = spec.fusion
    results = fuse(run_dir, classical=f.classical or None, cnn=f.cnn or None,
                   storage_options=run_options(spec))
    print(f"fusion (weight fitted on validation), "
          f"{redact(storage.join(run_dir, FUSION_DIR, 'report.md'))}:", file=file)
    print(format_results(results), file=file, flush=True)


_STAGE_RUNNERS = {"featurize": _featurize, "classical": _classical, "cnn": _cnn,
                  "fusion": _fusion}

#: Result files worth pointing a user to, relative to the run directory.
_RESULTS = {
    "features": "features", "errors": "errors", "featurize summary": JOB_FILE,
    "classical table": f"{CLASSICAL_DIR}/table.md",
    "classical results": f"{CLASSICAL_DIR}/results.csv",
    "confusion matrices": f"{CLASSICAL_DIR}/confusion",
    "fusion results": f"{FUSION_DIR}/report.md",
}


def result_files(run_dir: str | Path, storage_options: dict[str, Any] | None = None
                 ) -> dict[str, str | Path]:
    """The result files and folders present in ``run_dir`` (a path or a URL), by name."""
    found = {}
    for name, rel in _RESULTS.items():
        location = storage.join(run_dir, *rel.split("/"))
        if storage.exists(location, storage_options):
            found[name] = location
    for arch in storage.listdir(storage.join(run_dir, CNN_DIR), storage_options):
        report = storage.join(run_dir, CNN_DIR, arch, "report.md")
        if storage.isfile(report, storage_options):
            found[f"cnn {arch}"] = report
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
    from fmadask.cluster import slurm_prologue

    c = spec.cluster
    settings = slurm.job_settings({**slurm_options(c), "memory": c.memory})
    jobs = -(-c.workers // c.processes)
    yield (f"# slurm: {c.workers} worker processes in {jobs} job(s) of {c.processes}; each job "
           "runs this script (the scheduler's address is filled in at run time):")
    for line in slurm.job_script(settings, slurm_prologue({})).splitlines():
        yield f"#   {line}"

