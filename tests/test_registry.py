"""The stage registry (:mod:`fmadask.stages`): one value per stage, read by ``fmadask run``,
``fmadask predict`` and the job spec; and run folders of the format before it resume unchanged."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from fmadask import stages
from fmadask.errors import ConfigError
from fmadask.jobspec import SECTIONS, build_spec
from fmadask.run import marker_path, plan, stage_params

#: Stage markers written by main at d133779 (before the registry) for the job specs in each
#: folder's job.json (tests/fixtures/markers_d133779/README.md says how they were made).
OLD_MARKERS = Path(__file__).parent / "fixtures" / "markers_d133779"


def test_the_registry_lists_every_stage_once_in_order() -> None:
    names = [s.name for s in stages.stages()]
    assert names == ["featurize", "classical", "cnn", "fusion"]
    for s in stages.stages():
        assert SECTIONS[s.name] is s.section          # the job spec's section is the stage's
        assert all(names.index(r) < names.index(s.name) for r in s.reads)
    assert set(stages.model_kinds()) == {"classical", "cnn", "fusion"}


def _old_folder(name: str, tmp_path: Path) -> tuple[Path, dict]:
    """A run folder holding the old markers of job ``name``, and that job's spec (raw)."""
    raw = json.loads((OLD_MARKERS / name / "job.json").read_text())
    run = tmp_path / name
    (run / "_stages").mkdir(parents=True)
    for s in stages.stages():
        shutil.copy(OLD_MARKERS / name / f"{s.name}.json", run / "_stages" / f"{s.name}.json")
    raw["output"]["dir"] = str(run)
    return run, raw


@pytest.mark.parametrize("name", ["defaults", "paper"])
def test_a_run_folder_of_the_old_format_resumes_without_redoing_a_stage(name: str,
                                                                        tmp_path: Path) -> None:
    run, raw = _old_folder(name, tmp_path)
    spec = build_spec(raw, f"{name}.toml")
    assert [(p.stage, p.action) for p in plan(spec)] == [
        ("featurize", "skip"), ("classical", "skip"), ("cnn", "skip"), ("fusion", "skip")]
    for s in stages.stages():      # the same parameters, key for key (the markers' bytes)
        old = json.loads(marker_path(run, s.name).read_text())["params"]
        assert json.dumps(stage_params(spec, s.name)) == json.dumps(old)


def test_an_old_run_folder_with_other_parameters_is_refused_naming_the_change(
        tmp_path: Path) -> None:
    _, raw = _old_folder("paper", tmp_path)
    raw["cnn"]["epochs"] = 4
    with pytest.raises(ConfigError, match=r"cnn outputs made with other parameters "
                                          r"\(epochs: 3 -> 4\)"):
        plan(build_spec(raw, "paper.toml"))


# ---------------------------------------------------- every option reaches its stage and marker


def _another(opt, current):
    """A valid value of option ``opt`` other than ``current``."""
    special = {"classical.models": ["svc", "xgboost"], "classical.search_models": ["svc"],
               "cnn.archs": ["naive"], "fusion.classical": "svc", "fusion.cnn": "naive",
               "featurize.what": ["features"]}
    if opt.key in special:
        return special[opt.key]
    if opt.type is bool:
        return not current
    if opt.choices:
        other = next(c for c in opt.choices if c != current and [c] != current)
        return [other] if opt.type is list else other
    if current is None or current in opt.words:
        return opt.type(opt.minimum if opt.minimum is not None else 1)
    if opt.maximum is not None and current + 1 > opt.maximum:
        return opt.type((current + opt.maximum) / 2)
    return current + 1


def _result_options():
    from fmadask.options import option_fields

    for s in stages.stages():
        for f in option_fields(s.section, spec=True):
            opt = f.metadata["option"]
            if opt.result:
                yield pytest.param(s.name, opt, id=opt.key)


@pytest.mark.parametrize("stage,opt", list(_result_options()))
def test_each_result_option_reaches_the_stage_config_and_its_parameters(stage, opt,
                                                                      tmp_path: Path) -> None:
    # ARCHITECTURE.md's recipe for an option: a field of the stage's section is part of the
    # config the stage executes with and of the parameters recorded in its marker (so changing
    # it redoes the stage), with no other edit.
    from fmadask.stages import StageContext

    base = {"data": {"dir": "/srv/fma"}, "output": {"dir": str(tmp_path)},
            "classical": {"search": "random"}}
    changed = json.loads(json.dumps(base))
    value = _another(opt, getattr(build_spec(base, "t.toml"), stage).__dict__[opt.name])
    changed.setdefault(stage, {})[opt.name] = value
    if opt.key == "featurize.what":
        changed["cnn"] = {"enabled": False}
    specs = [build_spec(raw, "t.toml") for raw in (base, changed)]
    s = stages.stage(stage)
    configs = [s.config(StageContext(spec, tmp_path, "/srv/fma")) for spec in specs]
    assert configs[0] != configs[1], f"{opt.key} = {value!r} does not reach the stage's config"
    assert stage_params(specs[0], stage) != stage_params(specs[1], stage)



# ------------------------------------------------------------ a model added through its registry


def test_a_classical_model_added_to_the_registry_alone_runs_end_to_end(tmp_path: Path,
                                                                       monkeypatch) -> None:
    # ARCHITECTURE.md's recipe for a model: one entry in fmadask.ml.models.MODELS, nothing
    # else; it is fitted, scored, saved, tabled and predicted like the study's ten.
    from distributed import Client, LocalCluster
    from sklearn.linear_model import SGDClassifier

    from fmadask.ml import models
    from fmadask.ml.persist import load_classical
    from fmadask.ml.execute import execute_classical
    from fmadask.ml.plan import ClassicalConfig, ClassicalState, plan_classical
    from fmadask.ml.train import ProgressLog
    from synthetic_tables import gaussian_table

    monkeypatch.setitem(models.MODELS, "sgd", models.ModelSpec(
        "SGD", SGDClassifier, {"loss": "log_loss"}, {"alpha": models.Float(1e-5, 1e-1, log=True)}))
    data = gaussian_table({f"g{i}": 20 for i in range(3)}, shift=2.0, seed=0, id_step=1,
                          id_start=1)
    config = ClassicalConfig(models="sgd,logistic_regression", unsupervised=False)
    plan = plan_classical(config, data, ClassicalState(), out=tmp_path / "classical")
    # One process: the model is registered where it is fitted (workers in other processes would
    # import fmadask.ml.models afresh, without the test's entry).
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        results = execute_classical(plan, data, client, log=ProgressLog(False))
    row = results.set_index("model").loc["sgd"]
    assert row["label"] == "SGD" and not row["error"]
    assert row["test_accuracy"] > 0.9                    # three well separated genres
    model, card = load_classical(tmp_path / "classical" / "models" / "sgd")
    X, y = data.xy("test")
    assert card["classes"] == data.classes
    assert (model.predict(X) == y).mean() == pytest.approx(row["test_accuracy"])


# ------------------------------------------------------------- a stage added through the registry


def _probe_stage(section: type) -> stages.Stage:
    """A throwaway stage: writes its ``words`` option's number of words into RUN_DIR/probe."""

    def execute(plan: dict, client, context) -> None:
        folder = Path(plan["run_dir"]) / "probe"
        folder.mkdir(exist_ok=True)
        (folder / "words.txt").write_text(" ".join(["probe"] * plan["words"]))

    def command(sub) -> None:       # ``fmadask probe --words N``: the section's options as flags
        from fmadask.flags import add_options, options_from_args

        p = sub.add_parser("probe", help="print the probe's words")
        add_options(p, section)
        p.set_defaults(handler=lambda args: print(
            " ".join(["probe"] * options_from_args(section, args).words)) or 0)

    return stages.Stage(
        name="probe", section=section, folder="probe",
        params=lambda spec, upstream: {**upstream, **stages.result_options(spec.probe)},
        config=lambda context: context.section("probe"),
        read_state=lambda context: None,
        plan=lambda context, state: {"run_dir": str(context.run_dir),
                                     "words": context.section("probe").words},
        execute=execute, reads=("featurize",), command=command,
        results=lambda run_dir, so: stages.present(run_dir, so, {"probe words": "probe/words.txt"}))


def test_a_stage_added_through_the_registry_alone_runs_with_fmadask_run(
        sample_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    # ARCHITECTURE.md's recipe for a stage: its options section, its Stage value and its line
    # in stages.REGISTRY; fmadask run, the job spec, the markers and the command line need no
    # other edit.
    import sys

    from fmadask import options
    from fmadask.run import run_job

    @options.section("probe")
    class ProbeSection(options.Options):
        enabled: bool = options.option(True, "run this stage", cli=False, result=False)
        words: int = options.option(3, "words to write", minimum=1, maximum=10)

    # Registered for this test only.
    for key in [k for k in options.OPTIONS if k.startswith("probe.")]:
        monkeypatch.setitem(options.OPTIONS, key, options.OPTIONS.pop(key))
    monkeypatch.setitem(options.SPEC_SECTIONS, "probe", options.SPEC_SECTIONS.pop("probe"))
    monkeypatch.setattr(sys.modules[__name__], "PROBE", _probe_stage(ProbeSection),
                        raising=False)
    monkeypatch.setattr(stages, "REGISTRY", (*stages.REGISTRY, f"{__name__}:PROBE"))

    raw = {"data": {"dir": str(sample_dir)}, "output": {"dir": str(tmp_path / "run")},
           "cluster": {"workers": 1}, "featurize": {"enabled": False},
           "classical": {"enabled": False}, "cnn": {"enabled": False}, "probe": {"words": 4}}
    out = io.StringIO()
    result = run_job(build_spec(raw, "probe.toml"), file=out)
    assert result["stages"] == {"featurize": "off", "classical": "off", "cnn": "off",
                                "fusion": "off", "probe": "run"}
    assert (tmp_path / "run" / "probe" / "words.txt").read_text() == "probe probe probe probe"
    assert result["results"]["probe words"] == tmp_path / "run" / "probe" / "words.txt"
    marker = json.loads(marker_path(tmp_path / "run", "probe").read_text())
    assert marker["params"] == {"featurize": stage_params(build_spec(raw, "p"), "featurize"),
                                "words": 4}
    again = run_job(build_spec(raw, "probe.toml"), file=io.StringIO())
    assert again["stages"]["probe"] == "skip"
    raw["probe"]["words"] = 5
    with pytest.raises(ConfigError, match=r"probe outputs made with other parameters "
                                          r"\(words: 4 -> 5\)"):
        run_job(build_spec(raw, "probe.toml"), file=io.StringIO())
    # Its command too comes from the registry alone, its option a flag with the option's rules.
    from fmadask.cli import main

    assert main(["probe", "--words", "2"]) == 0
    assert capsys.readouterr().out == "probe probe\n"
    assert main(["probe", "--words", "11"]) == 2
    assert "--words must be at most 10" in capsys.readouterr().err


def test_an_option_added_later_is_recorded_only_when_set() -> None:
    # cnn.max_steps came after run folders existed: left at its default it is not in the stage's
    # parameters (an older marker, without the key, still matches), set it is (and redoes).
    from fmadask.options import CnnSection
    from fmadask.stages import result_options

    assert "max_steps" not in result_options(CnnSection())
    assert result_options(CnnSection(max_steps=16))["max_steps"] == 16


def test_a_change_of_recorded_keys_is_named_even_when_a_value_is_none() -> None:
    # A key one record lacks read as None on both sides, and the refusal said "()".
    from fmadask.records import describe_change

    assert describe_change({"a": 1}, {"a": 1, "max_steps": None}) == "max_steps added"
    assert describe_change({"mel": {"x": None}}, {"mel": {}}) == "mel.x dropped"
    assert describe_change({"a": 1}, {"a": 2}) == "a: 1 -> 2"
