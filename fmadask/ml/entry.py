"""The classical stage's contract value (:class:`fmadask.stages.Stage`): light, the stage itself
(:mod:`fmadask.ml.train`: Dask, scikit-learn, XGBoost) is imported when it runs."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NamedTuple

from fmadask import storage
from fmadask.errors import ConfigError
from fmadask.flags import (add_cluster_options, add_option, add_options, add_storage_options,
                           options_from_args, require_drivers)
from fmadask.options import (SPLIT_SEED, ClassicalOptions, ClassicalSection, DataOptions,
                             OptionError)
from fmadask.runfolder import CLASSICAL_DIR, CONFUSION_DIR, RESULTS_FILE, TABLE_FILE
from fmadask.stages import Stage, StageContext, present, result_options


def config(context: StageContext) -> Any:
    """The stage's :class:`~fmadask.ml.plan.ClassicalConfig`: its ``[classical]`` section."""
    from fmadask.ml.plan import ClassicalConfig

    return ClassicalConfig.of(context.section("classical"))


def params(spec: Any, upstream: dict[str, dict]) -> dict[str, Any]:
    """What decides the classical outputs: the features' parameters and every result option of
    ``[classical]``."""
    return {**upstream, **result_options(spec.classical)}


def check(spec: Any) -> None:
    """Refuse model names the registry does not know (:data:`fmadask.ml.models.MODELS`), and
    options that have no multi-label meaning under ``genres_all``
    (:func:`fmadask.ml.multilabel.check_options`)."""
    from fmadask.ml.models import resolve_models
    from fmadask.ml.multilabel import check_options

    if spec.data.target == "genres_all":
        try:
            check_options(spec.classical)
        except OptionError as exc:
            raise ConfigError(f"{spec.source}: {exc.named(exc.key)}") from None

    models = spec.classical.models
    try:
        resolve_models("all" if models == ["all"] else list(models))
    except ConfigError as exc:
        raise ConfigError(f"{spec.source}: [classical] models: {exc}") from None


class ClassicalInputs(NamedTuple):
    """What :func:`plan` needs: the config, the features table, the output folder and the
    trials earlier searches left there."""

    config: Any
    dataset: Any
    out: str | Path
    state: Any


class ClassicalJob(NamedTuple):
    """A classical plan and the data it was made for (:func:`execute`)."""

    plan: Any
    dataset: Any


def read_state(context: StageContext) -> ClassicalInputs:
    """The job's config, its run's features (split as featurize recorded it) and the output
    folder's trials."""
    from fmadask.ml.data import load_dataset
    from fmadask.ml.plan import output_folder, read_classical_state

    data = context.section("data")
    dataset = load_dataset(context.run_dir, split=data.split, split_seed=data.seed,
                           subset=data.subset, storage_options=context.storage_options,
                           target=data.target)
    out = output_folder(storage.join(context.run_dir, CLASSICAL_DIR))
    return ClassicalInputs(config(context), dataset, out, read_classical_state(out))


def plan(context: StageContext, inputs: ClassicalInputs) -> ClassicalJob:
    """:func:`~fmadask.ml.plan.plan_classical`, under the run folder's lock."""
    from fmadask.ml.plan import plan_classical
    from fmadask.ml.train import lock_owner

    owner = lock_owner(context.run_dir, inputs.out, context.storage_options)
    return ClassicalJob(plan_classical(inputs.config, inputs.dataset, inputs.state,
                                       out=inputs.out, owner=owner), inputs.dataset)


def execute(job: ClassicalJob, client: Any, context: StageContext) -> Any:
    """Run the plan on ``client``; results.csv's rows."""
    from fmadask.ml.execute import execute_classical
    from fmadask.ml.train import ProgressLog

    return execute_classical(job.plan, job.dataset, client, log=ProgressLog(True),
                             storage_options=context.storage_options)


def results(run_dir: str | Path, storage_options: Any = None) -> dict[str, str | Path]:
    """The classical outputs worth pointing a user to."""
    return present(run_dir, storage_options, {
        "classical table": f"{CLASSICAL_DIR}/{TABLE_FILE}",
        "classical results": f"{CLASSICAL_DIR}/{RESULTS_FILE}",
        "confusion matrices": f"{CLASSICAL_DIR}/{CONFUSION_DIR}"})


def predict(model_dir: Path, paths: Any) -> Any:
    """A classical model's predictions (:func:`fmadask.ml.predict.predict_classical`)."""
    from fmadask.ml.predict import predict_classical

    return predict_classical(model_dir, paths)


def _run_command(args: argparse.Namespace) -> int:
    from fmadask.ml.data import DatasetOptions
    from fmadask.ml.execute import results_markdown
    from fmadask.ml.train import ClassicalConfig, train

    # train() checks the options and reads the data before it starts or joins a cluster.
    require_drivers(args.source, args.out)
    config = ClassicalConfig.of(options_from_args(ClassicalOptions, args))
    results = train(args.source, out_dir=args.out, config=config,
                    data=options_from_args(DatasetOptions, args, split=args.split,
                                           seed=args.split_seed), scheduler=args.scheduler,
                    workers=args.workers, worker_timeout=args.worker_timeout,
                    storage_options=args.storage_options)
    # the threshold it ran with: the table alone would state the default's
    print(results_markdown(results, threshold=config.scale_threshold), end="")
    return 0


def command(sub: argparse._SubParsersAction) -> None:
    """Add the stage's command, ``fmadask train``, to the command line's ``sub``."""
    p = sub.add_parser("train", help="train the study's ten classical models on the features",
                       description="Scale the 518 features (fitted on the training split), fit "
                                   "Logistic Regression, Decision Tree, Random Forest, SVC, "
                                   "NuSVC, Linear SVC, Gradient Boosting, Extra Trees, XGBoost "
                                   "and AdaBoost on a Dask cluster, optionally tune them by "
                                   "distributed random search or Bayesian optimisation, and write "
                                   "results.csv, table.md, confusion matrices, PCA/t-SNE/K-means "
                                   "pictures and saved models.")
    p.add_argument("source", metavar="RUN_DIR_OR_FEATURES",
                   help="a featurize run directory, or FMA's fma_metadata/features.csv (with "
                        "tracks.csv next to it)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default RUN_DIR/classical, or ./classical)")
    # A run folder holds the split its featurize job decided: no default here, so that one
    # is used unless another is named (and then refused).
    add_option(p, "data.split", default=None,
               help="FMA's ('set', 'split') or the study's stratified 80/10/10, for "
                    "features.csv (default official); a run uses the split it was featurized "
                    "with")
    add_option(p, "data.seed", default=None,
               help="seed of the stratified split of features.csv (default "
                    f"{SPLIT_SEED}); a run uses its own")
    add_options(p, DataOptions, "target")
    add_option(p, "data.subset", help="FMA subset when reading features.csv")
    add_options(p, ClassicalOptions)
    add_storage_options(p)
    add_cluster_options(p)
    p.set_defaults(handler=_run_command)


STAGE = Stage(name="classical", section=ClassicalSection, folder=CLASSICAL_DIR, params=params,
              config=config,
              read_state=read_state, plan=plan, execute=execute, results=results,
              reads=("featurize",), check=check, model_kind="classical", predictor=predict,
              command=command)
