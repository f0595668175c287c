"""The CNN stage's contract value (:class:`fmadask.stages.Stage`), and its plan: one training run
per architecture of ``[cnn] archs``, each in ``RUN_DIR/cnn/<arch>``, resuming the checkpoint
there unless the stage is redone. Light: torch and the launcher are imported when it runs."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmadask import storage
from fmadask.errors import ConfigError
from fmadask.dl.config import TrainConfig
from fmadask.flags import add_cluster_options, add_option, add_options, add_storage_options
from fmadask.options import CnnOptions, CnnSection, DataOptions, option_values
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
    """The settings the CNN stage executes with: one training config per architecture (each
    with its output folder, and its ``device``: 'auto' trains on CUDA when the cluster has GPU
    workers), and the ranks."""

    #: DDP ranks (None: one per worker).
    ranks: int | None
    runs: tuple[TrainConfig, ...]


def config(context: StageContext) -> CnnConfig:
    """The job's :class:`CnnConfig`: every option of its ``[cnn]`` section, one run per
    architecture of ``archs`` in ``RUN_DIR/cnn/<arch>``."""
    n = context.section("cnn")
    training = option_values(n, CnnOptions)
    runs = tuple(TrainConfig(**{**training, "arch": arch},
                             out_dir=str(cnn_dir(context.run_dir, arch)),
                             target=context.section("data").target) for arch in n.archs)
    return CnnConfig(n.ranks, runs)


@dataclass(frozen=True)
class CnnPlan:
    """What the CNN stage will do: a value (:func:`plan_cnn`), run by :func:`execute_cnn`."""

    run_dir: str | Path
    config: CnnConfig
    #: The architectures that resume the checkpoint in their folder.
    resume: tuple[str, ...] = ()


def read_cnn_state(run_dir: str | Path, config: CnnConfig,
                   storage_options: Any = None) -> CnnState:
    """Which of ``config``'s runs have a checkpoint in their output folder."""
    from fmadask.dl.outputs import has_checkpoint, out_location

    return CnnState(tuple(r.arch for r in config.runs
                          if has_checkpoint(out_location(run_dir, r.out_dir), storage_options)))


def plan_cnn(run_dir: str | Path, config: CnnConfig, state: CnnState, fresh: bool) -> CnnPlan:
    """Each run of ``config``, resuming the checkpoint in its folder unless ``fresh``. Pure."""
    return CnnPlan(run_dir, config, () if fresh else state.checkpoints)


def execute_cnn(plan: CnnPlan, client: Any, storage_options: Any = None,
                file: Any = None) -> list[dict]:
    """Train each run of the plan in turn on ``client`` (:func:`fmadask.dl.launch.run_cnn`),
    saying which on ``file`` (default standard output); each run's result."""
    from fmadask.dl.launch import run_cnn
    from fmadask.dl.outputs import out_location

    done = []
    for run in plan.config.runs:
        resume = run.arch in plan.resume
        where = storage.redact(out_location(plan.run_dir, run.out_dir))
        print(f"-- cnn {run.arch}{' (resuming)' if resume else ''}: {where}", file=file,
              flush=True)
        done.append(run_cnn(plan.run_dir, run, client, ranks=plan.config.ranks, resume=resume,
                            storage_options=storage_options))
    return done


def read_state(context: StageContext) -> CnnState:
    """Which of the job's architectures have a checkpoint in their output folder."""
    return read_cnn_state(context.run_dir, config(context), context.storage_options)


def plan(context: StageContext, state: CnnState) -> CnnPlan:
    """One run per architecture, resuming a checkpoint unless the stage is redone (or
    ``[output] overwrite`` is set). Pure."""
    fresh = context.redo or context.section("output").overwrite
    return plan_cnn(context.run_dir, config(context), state, fresh)


def execute(plan: CnnPlan, client: Any, context: StageContext) -> list[dict]:
    """:func:`execute_cnn` on ``client``, once the workers of a SLURM cluster have started."""
    c = plan.config
    cluster = context.section("cluster")
    if cluster.kind == "slurm":   # worker jobs may still be queued: wait for every rank's
        try:
            client.wait_for_workers(c.ranks or cluster.workers, timeout=cluster.worker_timeout)
        except TimeoutError:
            pass                  # the launcher says how many there are
    return execute_cnn(plan, client, context.storage_options, context.file)


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


def _run_command(args: argparse.Namespace) -> int:
    from fmadask.cluster import get_client
    from fmadask.dl.config import TrainConfig, config_options
    from fmadask.dl.launch import check_run_dir, format_result

    run = TrainConfig(**config_options(args), device="cuda" if args.gpu else "cpu")
    for location in (args.run_dir, run.out_dir):   # before a cluster is started
        if location is not None:
            check_run_dir(location)
    config = CnnConfig(ranks=args.ranks, runs=(run,))
    workers = None if args.scheduler else (args.workers or args.ranks or 2)
    with get_client(args.scheduler, workers=workers, worker_timeout=args.worker_timeout) as client:
        state = read_cnn_state(args.run_dir, config, args.storage_options)
        plan = plan_cnn(args.run_dir, config, state, fresh=not args.resume)
        [result] = execute_cnn(plan, client, args.storage_options)
    print(format_result(result))
    return 0


def command(sub: argparse._SubParsersAction) -> None:
    """Add the stage's command, ``fmadask cnn``, to the command line's ``sub``."""
    from fmadask.dl.config import add_config_arguments

    p = sub.add_parser("cnn", help="train a CNN on the spectrograms (PyTorch DDP on Dask workers)",
                       description="Train a CNN on RUN_DIR/spectrograms with one DDP rank per "
                                   "Dask worker (gloo on CPU, NCCL and mixed precision with "
                                   "--gpu), checkpointing every epoch; score validation and test "
                                   "by segment, by majority vote and by mean probability per "
                                   "track. Writes RUN_DIR/cnn (or --out): metrics.csv, "
                                   "curves.png, confusion_*.png, report.md, model.pt/model.json "
                                   "for 'fmadask predict'. RUN_DIR may be a bucket "
                                   "(s3://bucket/runs/r1): each worker host then keeps the "
                                   "shards it reads in a local cache (--cache-dir, "
                                   "--cache-size) and the outputs are uploaded, each file "
                                   "whole, the model card last.")
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="run directory holding spectrograms/ (a path or a URL, s3://...)")
    add_config_arguments(p, skip=("device",))     # --gpu chooses it
    add_options(p, DataOptions, "target")
    add_option(p, "cnn.ranks")
    p.add_argument("--gpu", action="store_true",
                   help="train on the workers' GPUs (mixed precision; NCCL, or gloo where "
                        "ranks share a GPU)")
    add_storage_options(p)
    add_cluster_options(p)
    p.set_defaults(handler=_run_command)


STAGE = Stage(name="cnn", section=CnnSection, folder=CNN_DIR, params=params, config=config,
              read_state=read_state, plan=plan, execute=execute, results=results,
              reads=("featurize",), check=check, model_kind="cnn", predictor=predict,
              command=command)
