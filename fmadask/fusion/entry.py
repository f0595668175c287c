"""The fusion stage's contract value (:class:`fmadask.stages.Stage`) and its plan: which
classical model and which CNN to pool (the best of each unless ``[fusion]`` names them), and
where. Light: the stage itself (:mod:`fmadask.fusion.stage`) is imported when it runs."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmadask import storage
from fmadask.flags import add_options, add_storage_options, require_drivers
from fmadask.options import DataOptions, FusionOptions, FusionSection, option_values
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
    #: ``[data] target``: the task both parts learnt.
    target: str = "genre_top"

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
    return FusionPlan(context.run_dir, config(context), target=context.section("data").target)


def execute_fusion(plan: FusionPlan, storage_options: Any = None, file: Any = None) -> Any:
    """Fit the fusion (:func:`~fmadask.fusion.stage.fuse`; no cluster needed) and print its
    results on ``file`` (default standard output); results.csv's rows."""
    from fmadask.fusion.stage import format_results, fuse

    results = fuse(plan.run_dir, plan.config, plan.out_dir, storage_options, plan.target)
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


def _run_command(args: argparse.Namespace) -> int:
    require_drivers(args.run_dir, args.out)
    config = FusionOptions(classical=args.classical or "", cnn=args.cnn or "")
    execute_fusion(FusionPlan(args.run_dir, config, args.out, args.target), args.storage_options)
    return 0


def command(sub: argparse._SubParsersAction) -> None:
    """Add the stage's command, ``fmadask fuse``, to the command line's ``sub``."""
    p = sub.add_parser("fuse", help="pool the best classical model and the best CNN of a run",
                       description="Pool the class probabilities of a run's best classical model "
                                   "and best CNN (a weighted geometric mean whose weight is "
                                   "fitted on the validation split only), score each and the "
                                   "fusion on validation and test, and write RUN_DIR/fusion: "
                                   "results.csv, report.md with a confusion matrix, and a model "
                                   "for 'fmadask predict'. RUN_DIR may be a bucket "
                                   "(s3://bucket/runs/r1).")
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="run folder (path or URL) where the classical and CNN stages have "
                        "finished")
    p.add_argument("--classical", metavar="MODEL",
                   help="classical model folder under RUN_DIR/classical/models (default: best)")
    p.add_argument("--cnn", metavar="ARCH",
                   help="CNN folder under RUN_DIR/cnn (default: best validation accuracy)")
    p.add_argument("--out", metavar="DIR", help="output folder (default RUN_DIR/fusion)")
    add_options(p, DataOptions, "target")
    add_storage_options(p)
    p.set_defaults(handler=_run_command)


STAGE = Stage(name="fusion", section=FusionSection, folder=FUSION_DIR, params=params,
              config=config,
              read_state=read_state, plan=plan, execute=execute, results=results,
              reads=("classical", "cnn"), requires=("classical", "cnn"), model_kind="fusion",
              predictor=predict, command=command)
