"""The featurize stage's contract value (:class:`fmadask.stages.Stage`): light, the job itself
(:mod:`fmadask.pipeline.featurize`, Dask's distributed) is imported when it runs."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NamedTuple

from fmadask import storage
from fmadask.flags import (add_cluster_options, add_option, add_options, add_storage_options,
                           options_from_args, require_drivers)
from fmadask.options import DataOptions, FeaturizeOptions, FeaturizeSection
from fmadask.runfolder import ERRORS_DIR, FEATURES_DIR, JOB_FILE
from fmadask.stages import Stage, StageContext, present, result_options


def params(spec: Any, upstream: dict[str, dict]) -> dict[str, Any]:
    """What decides the featurize outputs: the data (folder, subset, split, target) and every result
    option of ``[featurize]`` (``sr``, ``what`` and ``max_seconds`` as the job takes them)."""
    data, f = spec.data, spec.featurize
    local = storage.local_path(data.dir)
    return {"data_dir": storage.redact(data.dir if local is None else local),
            "subset": data.subset, "split": data.split,
            "seed": data.seed if data.split == "stratified" else None,
            # Only the multi-label target is named: a genre_top run's marker is unchanged.
            **({"target": data.target} if data.target != "genre_top" else {}),
            **result_options(f), "sr": None if f.sr == "native" else int(f.sr),
            "what": sorted(f.what),
            "max_seconds": None if f.max_seconds == "none" else float(f.max_seconds)}


def config(context: StageContext) -> Any:
    """The job's :class:`~fmadask.pipeline.featurize.FeaturizeConfig`: its ``[featurize]``
    section, the data's subset and split, and ``overwrite`` when the stage is redone."""
    from fmadask.pipeline.featurize import FeaturizeConfig

    data = context.section("data")
    return FeaturizeConfig.of(context.section("featurize"), subset=data.subset,
                              split=data.split, seed=data.seed, target=data.target,
                              overwrite=context.redo)


class FeaturizeInputs(NamedTuple):
    """What :func:`plan` needs: the config, the selected tracks and the folder's state."""

    config: Any
    table: Any
    state: Any


def read_state(context: StageContext) -> FeaturizeInputs:
    """The job's config, its tracks (:func:`fmadask.fma.tracks.track_table`) and what the run
    folder holds (:func:`~fmadask.pipeline.featurize.read_featurize_state`)."""
    from fmadask.fma.tracks import track_table
    from fmadask.pipeline.featurize import featurize_record, read_featurize_state, run_folder

    c, so = config(context), context.storage_options
    table = track_table(context.data_dir, subset=c.subset, split=c.split, seed=c.seed,
                        storage_options=so, target=c.target)
    record = featurize_record(c, table, context.data_dir)
    state = read_featurize_state(run_folder(context.run_dir), record, c.overwrite, so)
    return FeaturizeInputs(c, table, state)


def plan(context: StageContext, inputs: FeaturizeInputs) -> Any:
    """:func:`~fmadask.pipeline.featurize.plan_featurize` of the job in its run folder."""
    from fmadask.pipeline.featurize import plan_featurize, run_folder

    return plan_featurize(inputs.config, inputs.table, inputs.state,
                          out=run_folder(context.run_dir), data_dir=context.data_dir)


def execute(plan: Any, client: Any, context: StageContext) -> dict:
    """Run the plan on ``client``, print its summary; the summary."""
    from fmadask.pipeline.featurize import execute_featurize, report

    result = execute_featurize(plan, client, storage_options=context.storage_options)
    return report(result, file=context.file)


def results(run_dir: str | Path, storage_options: Any = None) -> dict[str, str | Path]:
    """The featurize outputs worth pointing a user to."""
    return present(run_dir, storage_options, {"features": FEATURES_DIR, "errors": ERRORS_DIR,
                                              "featurize summary": JOB_FILE})


def _run_command(args: argparse.Namespace) -> int:
    from fmadask.pipeline.featurize import FeaturizeConfig, run_featurize

    require_drivers(args.data_dir, args.out)
    config = FeaturizeConfig.of(options_from_args(FeaturizeOptions, args), subset=args.subset,
                                split=args.split, seed=args.split_seed, target=args.target,
                                overwrite=args.overwrite)
    run_featurize(args.data_dir, out=args.out, config=config, scheduler=args.scheduler,
                  workers=args.workers, worker_timeout=args.worker_timeout,
                  storage_options=args.storage_options)
    return 0


def command(sub: argparse._SubParsersAction) -> None:
    """Add the stage's command, ``fmadask featurize``, to the command line's ``sub``."""
    p = sub.add_parser("featurize", help="decode mp3s into FMA features and log-mel spectrograms "
                                         "on a Dask cluster",
                       description="Decode every track of an FMA subset once and write the 518 "
                                   "FMA features (RUN_DIR/features/*.parquet), log-mel "
                                   "spectrogram shards (RUN_DIR/spectrograms/) and one errors row "
                                   "per bad track (RUN_DIR/errors/). One Dask task per partition; "
                                   "a re-run skips complete partitions.")
    p.add_argument("data_dir", metavar="DATA_DIR",
                   help="folder or URL (s3://, gs://, https:// ...) holding fma_metadata/ and "
                        "fma_<subset>/; each worker reads the mp3s itself")
    add_options(p, DataOptions, "subset")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write into")
    add_options(p, FeaturizeOptions)
    add_options(p, DataOptions, "split", "seed", "target")
    add_option(p, "output.overwrite")
    add_storage_options(p)
    add_cluster_options(p)
    p.set_defaults(handler=_run_command)


STAGE = Stage(name="featurize", section=FeaturizeSection, folder="", params=params, config=config,
              read_state=read_state, plan=plan, execute=execute, results=results,
              command=command)
