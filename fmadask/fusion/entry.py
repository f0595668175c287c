"""The fusion stage's contract value (:class:`fmadask.stages.Stage`) and its plan: which
classical model and which CNN to pool (the best of each unless ``[fusion]`` names them), and
where. Light: the stage itself (:mod:`fmadask.fusion.stage`) is imported when it runs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmadask import storage
from fmadask.options import FusionOptions, FusionSection, option_values
from fmadask.runfolder import FUSION_DIR, REPORT_FILE
from fmadask.stages import Stage, StageContext, present


def params(spec: Any, upstream: dict[str, dict]) -> dict[str, Any]:
    """What decides the fusion: the parameters of both parts, and which model of each."""
    f = spec.fusion
    return {**upstream, "model": f.classical, "arch": f.cnn}


def config(context: StageContext) -> FusionOptions:
    """The fusion's settings: the options of its ``[fusion]`` section."""
    return FusionOptions(**option_values(context.section("fusion"), FusionOptions))


@dataclass(frozen=True)
class FusionPlan:
    """What the fusion stage will do: a value (:func:`plan`), run by :func:`execute_fusion`."""

    run_dir: str | Path
    config: FusionOptions
    #: The output folder (None: ``RUN_DIR/fusion``).
    out_dir: str | Path | None = None

    @property
    def classical(self) -> str | None:
        """The classical model folder to pool (None: the best on validation)."""
        return self.config.classical or None

    @property
    def cnn(self) -> str | None:
        """The CNN architecture to pool (None: the best on validation)."""
        return self.config.cnn or None


def read_state(context: StageContext) -> None:
    """Nothing: the fusion reads its parts when it runs, under the run folder's lock."""
    return None


def plan(context: StageContext, state: None) -> FusionPlan:
    """The parts ``[fusion]`` names, or the best of each. Pure."""
    return FusionPlan(context.run_dir, config(context))


def execute_fusion(plan: FusionPlan, storage_options: Any = None, file: Any = None) -> Any:
    """Fit the fusion (:func:`~fmadask.fusion.stage.fuse`; no cluster needed) and print its
    results on ``file`` (default standard output); results.csv's rows."""
    from fmadask.fusion.stage import format_results, fuse

    results = fuse(plan.run_dir, plan.config, plan.out_dir, storage_options)
    out = plan.out_dir if plan.out_dir is not None else storage.join(plan.run_dir, FUSION_DIR)
    report = storage.join(out, REPORT_FILE)
    print(f"fusion (weight fitted on validation), {storage.redact(report)}:", file=file)
    print(format_results(results), file=file, flush=True)
    return results


def execute(plan: FusionPlan, client: Any, context: StageContext) -> Any:
    """:func:`execute_fusion` (the client is not used)."""
    return execute_fusion(plan, context.storage_options, context.file)


def results(run_dir: str | Path, storage_options: Any = None) -> dict[str, str | Path]:
    """The fusion's report."""
    return present(run_dir, storage_options, {"fusion results": f"{FUSION_DIR}/{REPORT_FILE}"})


def predict(model_dir: Path, paths: Any) -> Any:
    """The fused model's predictions (:func:`fmadask.fusion.stage.predict_fusion`)."""
    from fmadask.fusion.stage import predict_fusion

    return predict_fusion(model_dir, paths)


STAGE = Stage(name="fusion", section=FusionSection, folder=FUSION_DIR, params=params,
              config=config,
              read_state=read_state, plan=plan, execute=execute, results=results,
              reads=("classical", "cnn"), requires=("classical", "cnn"), model_kind="fusion",
              predictor=predict)
