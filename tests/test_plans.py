"""The stages' planners without a cluster: a plan is a value computed from the settings, the
inputs and what the run folder holds (read by a separate small reader)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmadask.errors import ConfigError
from fmadask.fma.tracks import track_table
from fmadask.ml.plan import (ClassicalConfig, ClassicalState, plan_classical,
                             read_classical_state)
from fmadask.pipeline.featurize import (FeaturizeConfig, FeaturizeState, featurize_record,
                                        plan_featurize, read_featurize_state)
from fmadask.runfolder import JOB_FILE, PartitionFiles, write_json
from synthetic_tables import gaussian_table

#: Tracks per partition: the sample's 31 tracks make 11 partitions.
PART = 3


@pytest.fixture(scope="module")
def table(sample_dir: Path):
    return track_table(sample_dir)


def _fake_partition(run_dir: Path, partition: int) -> None:
    """The files of a complete features partition (their content does not matter here: a
    partition is complete when its files match its completion record)."""
    files = PartitionFiles(run_dir, partition)
    for path in files.outputs(["features"]):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"part {partition} {path.parent.name}".encode())
    files.write_record(["features"])


# ---------------------------------------------------------------------------------- featurize


def test_featurize_plan_of_a_fresh_folder_runs_every_partition(table, sample_dir, tmp_path):
    config = FeaturizeConfig(what=["features"], partition_size=PART)
    state = read_featurize_state(tmp_path, featurize_record(config, table, sample_dir), False)
    plan = plan_featurize(config, table, state, out=tmp_path, data_dir=sample_dir)
    assert plan.partitions == 11 and plan.complete == ()
    assert plan.remaining == tuple(range(11))
    assert [t.track_id for t in plan.todo] == list(table.index)
    assert all(t.partition == i // PART for i, t in enumerate(plan.todo))
    assert plan.record["params"]["what"] == ["features"] and plan.removes == ()
    assert plan.job.mel is None and plan.job.what == ("features",)


def test_featurize_plan_lists_only_the_partitions_not_complete(table, sample_dir, tmp_path):
    config = FeaturizeConfig(what=["features"], partition_size=PART)
    record = featurize_record(config, table, sample_dir)
    write_json(record, tmp_path / JOB_FILE)
    for p in (0, 4, 10):
        _fake_partition(tmp_path, p)
    damaged = PartitionFiles(tmp_path, 5)
    _fake_partition(tmp_path, 5)
    damaged.features.write_bytes(b"PART 5 features")     # same size, other bytes
    state = read_featurize_state(tmp_path, record, False)
    assert state.complete == (0, 4, 10)                # checksums are compared
    plan = plan_featurize(config, table, state, out=tmp_path, data_dir=sample_dir)
    assert plan.complete == (0, 4, 10)
    assert plan.remaining == (1, 2, 3, 5, 6, 7, 8, 9)
    assert {t.partition for t in plan.todo} == set(plan.remaining)
    assert len(plan.todo) == len(table) - 2 * PART - (len(table) - 10 * PART)   # 10 is short
    # Nothing left to do: the folder's own record stays.
    done = FeaturizeState(job=record | {"summary": {"ok": 31}}, complete=tuple(range(11)))
    idle = plan_featurize(config, table, done, out=tmp_path, data_dir=sample_dir)
    assert idle.todo == () and idle.record["summary"] == {"ok": 31}


def test_featurize_plan_refuses_other_parameters_unless_overwriting(table, sample_dir, tmp_path):
    old = FeaturizeConfig(what=["features"], partition_size=PART)
    write_json(featurize_record(old, table, sample_dir), tmp_path / JOB_FILE)
    _fake_partition(tmp_path, 0)
    (tmp_path / "features" / "mine.txt").write_text("a user's file")
    new = FeaturizeConfig(what=["features"], partition_size=PART, sr=22050)
    state = read_featurize_state(tmp_path, featurize_record(new, table, sample_dir), False)
    assert state.complete == ()                # another job's partitions are not checked
    with pytest.raises(ConfigError, match=r"other parameters: sr: None -> 22050"):
        plan_featurize(new, table, state, out=tmp_path, data_dir=sample_dir)
    over = FeaturizeConfig(what=["features"], partition_size=PART, sr=22050, overwrite=True)
    state = read_featurize_state(tmp_path, featurize_record(over, table, sample_dir), True)
    plan = plan_featurize(over, table, state, out=tmp_path, data_dir=sample_dir)
    assert plan.removes == ("_partitions/part-00000.json", "errors/part-00000.parquet",
                            "features/part-00000.parquet", "featurize.json")   # not mine.txt
    assert plan.complete == () and len(plan.todo) == len(table)


def test_featurize_plan_refuses_a_folder_of_other_files(table, sample_dir, tmp_path):
    (tmp_path / "thesis.tex").write_text("")
    config = FeaturizeConfig(partition_size=PART)
    state = read_featurize_state(tmp_path, featurize_record(config, table, sample_dir), False)
    assert state.foreign == ("thesis.tex",)
    with pytest.raises(ConfigError, match="not an fmadask run folder"):
        plan_featurize(config, table, state, out=tmp_path, data_dir=sample_dir)


def test_featurize_plan_is_a_value(table, sample_dir, tmp_path):
    config = FeaturizeConfig(what=["spectrograms", "features"], partition_size=PART)
    state = FeaturizeState()
    first = plan_featurize(config, table, state, out=tmp_path, data_dir=sample_dir)
    again = plan_featurize(FeaturizeConfig(what=("features", "spectrograms"), partition_size=PART),
                           table, FeaturizeState(), out=str(tmp_path), data_dir=sample_dir)
    assert first == again
    assert first.config.what == ("features", "spectrograms")      # canonical order
    assert first != plan_featurize(FeaturizeConfig(partition_size=PART + 1), table, state,
                                   out=tmp_path, data_dir=sample_dir)


def test_featurize_config_validates_its_options():
    with pytest.raises(ConfigError, match="partition_size must be at least 1"):
        FeaturizeConfig(partition_size=0)
    with pytest.raises(ConfigError, match="what is empty"):
        FeaturizeConfig(what=[])
    with pytest.raises(ConfigError, match="unknown mel_device 'tpu'"):
        FeaturizeConfig(mel_device="tpu")


# ---------------------------------------------------------------------------------- classical


@pytest.fixture(scope="module")
def dataset():
    """8 genres of 40 tracks: 256 training rows."""
    return gaussian_table({f"g{i}": 40 for i in range(8)}, shift=0.5, seed=0, id_step=1,
                          id_start=1)


def test_classical_plan_swaps_models_past_the_scale_threshold_only(dataset, tmp_path):
    n_train = int(dataset.rows("training").sum())
    below = plan_classical(ClassicalConfig(scale_threshold=n_train), dataset, ClassicalState(),
                           out=tmp_path)
    assert below.substituted == {}
    assert all(name == key for name, key in below.runs.items())
    assert below.record["scale_rule"]["runs_as"]["svc"] == "svc"
    past = plan_classical(ClassicalConfig(scale_threshold=n_train - 1), dataset,
                          ClassicalState(), out=tmp_path)
    assert past.substituted == {"svc": "nystroem_svm", "nusvc": "nystroem_svm",
                                "gradient_boosting": "hist_gradient_boosting",
                                "xgboost": "xgboost_early_stopping",
                                "decision_tree": "bounded_tree"}
    assert past.record["scale_rule"] == {"threshold_rows": n_train - 1,
                                         "training_rows": n_train,
                                         "runs_as": {n: past.runs[n] for n in past.config.models}}
    assert [name for name, _ in past.fits] == list(past.config.models)


def test_classical_plan_searches_the_substitute_with_its_overrides(dataset, tmp_path):
    config = ClassicalConfig(models="logistic_regression,xgboost", search="random",
                             search_models="all", n_iter=4, scale_threshold=10,
                             model_params={"xgboost_early_stopping": {"n_estimators": 20}})
    plan = plan_classical(config, dataset, ClassicalState(), out=tmp_path)
    assert [s.name for s in plan.searches] == ["logistic_regression", "xgboost"]
    xgb = plan.searches[1]
    assert xgb.runs_as == "xgboost_early_stopping" and "learning_rate" in xgb.space
    assert xgb.base_params == {"n_estimators": 20} == dict(plan.fits)["xgboost"]
    assert xgb.folder.startswith("xgboost-random-") and xgb.score == "accuracy"
    assert plan.record["params"]["search_models"] == ["logistic_regression", "xgboost"]
    # Without a search, nothing is searched.
    assert plan_classical(ClassicalConfig(models="xgboost"), dataset, ClassicalState(),
                          out=tmp_path).searches == ()


def test_classical_plan_lists_the_trials_finished_in_the_output_folder(dataset, tmp_path):
    config = ClassicalConfig(models="logistic_regression", search="random",
                             search_models="logistic_regression", n_iter=3)
    fresh = plan_classical(config, dataset, read_classical_state(tmp_path), out=tmp_path)
    assert fresh.searches[0].finished == ()
    folder = tmp_path / "search" / fresh.searches[0].folder
    folder.mkdir(parents=True)
    for number, state in ((0, "COMPLETE"), (1, "RUNNING"), (2, "PRUNED"), (7, "COMPLETE")):
        (folder / f"trial-{number:04d}.json").write_text(json.dumps({"state": state}))
    (tmp_path / "search" / "svc-random-0123456789").mkdir()
    state = read_classical_state(tmp_path)
    plan = plan_classical(config, dataset, state, out=tmp_path)
    # Trial 1 stopped between rungs; trial 7 is past this search's 3 candidates.
    assert plan.searches[0].finished == (0, 2)
    assert read_classical_state("s3://bucket/classical") == ClassicalState()


def test_classical_plan_is_a_value(dataset, tmp_path):
    def plan(**settings):
        config = ClassicalConfig(search="bayes", search_models="xgboost", **settings)
        return plan_classical(config, dataset, ClassicalState(), out=tmp_path)

    assert plan() == plan()
    assert plan() != plan(seed=1)
    assert plan(class_weight="balanced").record["params"]["class_weight"] == "balanced"


def test_classical_config_validates_its_options():
    with pytest.raises(ConfigError, match="unknown model"):
        ClassicalConfig(models="xgb")
    with pytest.raises(ConfigError, match="search random tunes svc, which is not among"):
        ClassicalConfig(models="xgboost", search="random", search_models="svc")
    with pytest.raises(ConfigError, match="cv must be at least 2"):
        ClassicalConfig(cv=1)


def test_overwrite_on_object_storage_lists_only_what_fmadask_wrote(table, sample_dir,
                                                                   s3_server):
    from fmadask import storage

    s3_server.filesystem().mkdir("plans-bucket")
    url, options = "s3://plans-bucket/run", s3_server.options
    config = FeaturizeConfig(what=["features"], partition_size=PART, overwrite=True)
    record = featurize_record(config, table, sample_dir)
    write_json(record, f"{url}/{JOB_FILE}", options)
    files = PartitionFiles(url, 3)
    for name in ("features/part-00003.parquet", "errors/part-00003.parquet",
                 "features/notes.txt"):
        storage.write_bytes(f"{url}/{name}", b"x", options)
    write_json({"partition": 3, "files": {"features/part-00003.parquet": {},
                                          "errors/part-00003.parquet": {}}},
               files.record, options)
    state = read_featurize_state(url, record, True, options)
    plan = plan_featurize(config, table, state, out=url, data_dir=sample_dir)
    assert plan.run_dir == url
    assert plan.removes == ("_partitions/part-00003.json", "errors/part-00003.parquet",
                            "features/part-00003.parquet", "featurize.json")


# ---------------------------------------------------------------------------- cnn and fusion


def _context(tmp_path: Path, redo: bool = False, **sections):
    from fmadask.jobspec import build_spec
    from fmadask.stages import StageContext

    raw = {"data": {"dir": str(tmp_path / "data")}, "output": {"dir": str(tmp_path / "run")},
           **sections}
    return StageContext(build_spec(raw, "plans.toml"), tmp_path / "run", tmp_path / "data",
                        redo=redo)


def test_cnn_plan_trains_each_arch_in_its_folder_resuming_its_checkpoint(tmp_path):
    from fmadask.dl.entry import CnnState, plan

    context = _context(tmp_path, cnn={"archs": ["naive", "vgg_gap"], "epochs": 3, "ranks": 2})
    p = plan(context, CnnState(checkpoints=("vgg_gap",)))
    assert [(r.arch, r.epochs, r.out_dir) for r in p.config.runs] == [
        ("naive", 3, str(tmp_path / "run" / "cnn" / "naive")),
        ("vgg_gap", 3, str(tmp_path / "run" / "cnn" / "vgg_gap"))]
    assert p.config.ranks == 2 and p.resume == ("vgg_gap",)
    assert [r.device for r in p.config.runs] == ["auto", "auto"]
    # Redone, or overwriting: every net starts afresh.
    assert plan(_context(tmp_path, redo=True, cnn={"archs": ["vgg_gap"]}),
                CnnState(("vgg_gap",))).resume == ()
    assert plan(_context(tmp_path, cnn={"archs": ["vgg_gap"]}, output={
        "dir": str(tmp_path / "run"), "overwrite": True}), CnnState(("vgg_gap",))).resume == ()
    assert p == plan(context, CnnState(checkpoints=("vgg_gap",)))      # a value


def test_the_cnn_command_plans_one_run_in_its_out_folder_resuming_only_a_checkpoint(tmp_path):
    """``fmadask cnn``'s plan: one run into ``--out`` (default RUN_DIR/cnn); ``--resume``
    resumes the checkpoint found there, and nothing when there is none."""
    from fmadask.dl.config import TrainConfig
    from fmadask.dl.entry import CnnConfig, plan_cnn, read_cnn_state

    run = tmp_path / "run"
    default, other = CnnConfig(None, (TrainConfig(arch="naive"),)), CnnConfig(2, (
        TrainConfig(arch="naive", out_dir=str(tmp_path / "elsewhere")),))
    (run / "cnn" / "checkpoints").mkdir(parents=True)
    (run / "cnn" / "checkpoints" / "last.pt").write_bytes(b"")
    found = read_cnn_state(run, default)
    assert found.checkpoints == ("naive",) and read_cnn_state(run, other).checkpoints == ()
    assert plan_cnn(run, default, found, fresh=False).resume == ("naive",)
    assert plan_cnn(run, default, found, fresh=True).resume == ()
    assert plan_cnn(run, other, read_cnn_state(run, other), fresh=False).resume == ()


def test_fusion_plan_names_the_parts_or_leaves_the_best(tmp_path):
    from fmadask.fusion.entry import plan

    best = plan(_context(tmp_path), None)
    assert (best.classical, best.cnn) == (None, None)
    named = plan(_context(tmp_path, fusion={"classical": "svc", "cnn": "naive"}), None)
    assert (named.classical, named.cnn) == ("svc", "naive") and named.run_dir == tmp_path / "run"
