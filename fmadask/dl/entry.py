"""The CNN stage's contract value (:class:`fmadask.stages.Stage`), and its plan: one training run
per architecture of ``[cnn] archs``, each in ``RUN_DIR/cnn/<arch>``, resuming the checkpoint
there unless the stage is redone. Light: torch and the launcher are imported when it runs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmadask import storage
from fmadask.errors import ConfigError
from fmadask.dl.config import TrainConfig
from fmadask.options import CnnOptions, CnnSection, option_values
from fmadask.runfolder import CNN_DIR, REPORT_FILE
from fmadask.stages import Stage, StageContext, result_options


def params(spec: Any, upstream: dict[str, dict]) -> dict[str, Any]:
    """What decides the CNN outputs: the spectrograms' parameters and every result option of
    ``[cnn]``."""
    return {**upstream, **result_options(spec.cnn)}


def check(spec: Any) -> None:
    """Refuse architecture names the stage does not know (the names only: no torch)."""
    from fmadask.dl.config import ARCHS

    unknown = [a for a in spec.cnn.archs if a not in ARCHS]
    if unknown:
        raise ConfigError(f"{spec.source}: [cnn] archs: unknown {', '.join(unknown)}: choose "
                          f"from {', '.join(ARCHS)}")


def cnn_dir(run_dir: str | Path, arch: str) -> str | Path:
    """Output folder of one CNN architecture: ``RUN_DIR/cnn/<arch>`` (a URL for a URL)."""
    return storage.join(run_dir, CNN_DIR, arch)


@dataclass(frozen=True)
class CnnState:
    """The architectures whose output folder holds a checkpoint to resume from."""

    checkpoints: tuple[str, ...] = ()


@dataclass(frozen=True)
class CnnConfig:
    """The settings the CNN stage executes with: one training config per architecture of
    ``[cnn] archs`` (its output folder ``RUN_DIR/cnn/<arch>``), and the ranks."""

    #: DDP ranks (None: one per worker).
    ranks: int | None
    #: ``[cnn] device``: 'auto' trains on CUDA when the cluster has GPU workers.
    device: str
    runs: tuple[TrainConfig, ...]


def config(context: StageContext) -> CnnConfig:
    """The job's :class:`CnnConfig`: every option of its ``[cnn]`` section."""
    n = context.section("cnn")
    training = option_values(n, CnnOptions)
    runs = tuple(TrainConfig(**{**training, "arch": arch},
                             out_dir=str(cnn_dir(context.run_dir, arch)),
                             target=context.section("data").target) for arch in n.archs)
    return CnnConfig(n.ranks, n.device, runs)


@dataclass(frozen=True)
class CnnPlan:
    """What the CNN stage will do: a value (:func:`plan`), run by :func:`execute`."""

    run_dir: str | Path
    config: CnnConfig
    #: The architectures that resume the checkpoint in their folder.
    resume: tuple[str, ...] = ()


def read_state(context: StageContext) -> CnnState:
    """Which of the job's architectures have a checkpoint in their output folder."""
    from fmadask.dl.outputs import has_checkpoint

    archs = context.section("cnn").archs
    return CnnState(tuple(a for a in archs if has_checkpoint(cnn_dir(context.run_dir, a),
                                                             context.storage_options)))


def plan(context: StageContext, state: CnnState) -> CnnPlan:
    """One run per architecture, resuming a checkpoint unless the stage is redone (or
    ``[output] overwrite`` is set). Pure."""
    fresh = context.redo or context.section("output").overwrite
    return CnnPlan(context.run_dir, config(context), () if fresh else state.checkpoints)


def execute(plan: CnnPlan, client: Any, context: StageContext) -> list[dict]:
    """Train each architecture in turn on ``client`` (CUDA when ``device`` says so, or 'auto'
    finds GPU workers); each run's result."""
    from fmadask.cluster import gpu_workers
    from fmadask.dl.launch import run_cnn

    c = plan.config
    cluster = context.section("cluster")
    if cluster.kind == "slurm":   # worker jobs may still be queued: wait for every rank's
        try:
            client.wait_for_workers(c.ranks or cluster.workers, timeout=cluster.worker_timeout)
        except TimeoutError:
            pass                  # the launcher says how many there are
    gpu = c.device == "cuda" or (c.device == "auto" and bool(gpu_workers(client)))
    done = []
    for run in c.runs:
        resume = run.arch in plan.resume
        print(f"-- cnn {run.arch}{' (resuming)' if resume else ''}: "
              f"{storage.redact(run.out_dir)}", file=context.file, flush=True)
        training = option_values(run, CnnOptions)
        del training["device"]                  # chosen by gpu
        done.append(run_cnn(plan.run_dir, ranks=c.ranks, client=client, gpu=gpu, resume=resume,
                            out_dir=run.out_dir, storage_options=context.storage_options,
                            target=run.target, **training))
    return done


def results(run_dir: str | Path, storage_options: Any = None) -> dict[str, str | Path]:
    """Each trained architecture's report."""
    found = {}
    for arch in storage.listdir(storage.join(run_dir, CNN_DIR), storage_options):
        report = storage.join(run_dir, CNN_DIR, arch, REPORT_FILE)
        if storage.isfile(report, storage_options):
            found[f"cnn {arch}"] = report
    return found


def predict(model_dir: Path, paths: Any) -> Any:
    """A CNN's predictions (:func:`fmadask.dl.predict.predict_cnn`)."""
    from fmadask.dl.predict import predict_cnn

    return predict_cnn(model_dir, paths)


STAGE = Stage(name="cnn", section=CnnSection, folder=CNN_DIR, params=params, config=config,
              read_state=read_state, plan=plan, execute=execute, results=results,
              reads=("featurize",), check=check, model_kind="cnn", predictor=predict)
