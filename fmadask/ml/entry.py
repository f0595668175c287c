"""The classical stage's contract value (:class:`fmadask.stages.Stage`): light, the stage itself
(:mod:`fmadask.ml.train`: Dask, scikit-learn, XGBoost) is imported when it runs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from fmadask import storage
from fmadask.errors import ConfigError
from fmadask.options import ClassicalSection, OptionError
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


STAGE = Stage(name="classical", section=ClassicalSection, folder=CLASSICAL_DIR, params=params,
              config=config,
              read_state=read_state, plan=plan, execute=execute, results=results,
              reads=("featurize",), check=check, model_kind="classical", predictor=predict)
