"""The classical stage: the study's ten models, scaling, searches and their outputs.

Models are fitted on a real local Dask cluster of 2 worker processes (``local_client``). Most tests
use a synthetic table of the real shape (8 genres, the 518 FEATURE_COLUMNS, genre-shifted Gaussian
means) so they run in seconds; the end-to-end tests featurize a generated FMA-shaped sample of
real mp3s with the featurize job and train on its Parquet output.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from distributed import get_task_stream
from sklearn.svm import NuSVC

from fmadask.cluster import workers_info
from fmadask.errors import ConfigError, DataError
from fmadask.features import FEATURE_COLUMNS, to_fma_columns
from fmadask.fma.splits import SPLITS, stratified_split
from fmadask.ml.data import Dataset, DatasetOptions, load_dataset
from fmadask.ml.models import (MODEL_NAMES, Choice, FeasibleNuSVC, Float, Int, class_scores,
                               make_pipeline, nu_bound, resolve_models)
from fmadask.ml.persist import load_classical, save_classical
from fmadask.ml.search import SearchSettings, run_search
from fmadask.ml.train import ClassicalConfig, train
from fmadask.report.metrics import normalized_confusion, scores
from synthetic_tables import gaussian_table

#: Few trees everywhere: these tests check behaviour, not the models' best accuracy.
SMALL = {"gradient_boosting": {"n_estimators": 15}, "random_forest": {"n_estimators": 25},
         "extra_trees": {"n_estimators": 25}, "xgboost": {"n_estimators": 15},
         "adaboost": {"n_estimators": 15}}
#: A small XGBoost search space, so that a search in a test takes seconds.
SMALL_XGB_SPACE = {"xgboost": {"n_estimators": Int(5, 15), "max_depth": Int(2, 4)}}
GENRES = ["Electronic", "Experimental", "Folk", "Hip-Hop", "Instrumental", "International",
          "Pop", "Rock"]


def synthetic_dataset(per_genre: int = 30, shift: float = 0.5, seed: int = 0) -> Dataset:
    """8 genres of ``per_genre`` tracks; each genre's 518 features are Gaussian around its own
    random mean (``shift`` standard deviations apart on average), split 80/10/10 by genre."""
    return gaussian_table({g: per_genre for g in GENRES}, shift, seed, id_step=7, id_start=3)


@pytest.fixture(scope="module")
def table_run(local_client, tmp_path_factory) -> tuple[Path, pd.DataFrame, Dataset]:
    """All ten models on the synthetic table, with the unsupervised views."""
    dataset = synthetic_dataset()
    out = tmp_path_factory.mktemp("classical") / "classical"
    results = train(dataset, out, ClassicalConfig(model_params=SMALL), client=local_client,
                    progress=False)
    return out, results, dataset


# ------------------------------------------------------------------------------- the table


def test_all_ten_models_produce_scores_well_above_chance(table_run):
    out, results, _ = table_run
    assert list(results["name"]) == list(MODEL_NAMES)
    assert (results["error"] == "").all(), results[["name", "error"]]
    for column in ("validation_accuracy", "test_accuracy", "test_f1_macro", "test_f1_weighted"):
        assert results[column].between(0, 1).all()
    # Chance is 1/8; the linear models and SVMs separate these genres almost perfectly.
    assert (results["test_accuracy"] > 0.5).sum() >= 6, results[["name", "test_accuracy"]]
    for name in ("logistic_regression", "svc", "linear_svc"):
        assert results.set_index("name").at[name, "test_accuracy"] >= 0.9


def test_results_table_figures_and_models_are_written(table_run):
    out, results, dataset = table_run
    written = pd.read_csv(out / "results.csv")
    assert list(written["model"]) == list(results["model"])
    np.testing.assert_allclose(written["test_accuracy"], results["test_accuracy"])
    table = (out / "table.md").read_text()
    assert "| Model | Validation accuracy | Test accuracy | Test F1 (macro) |" in table
    for label in ("Logistic Regression", "Decision Tree", "Random Forest", "SVC", "NuSVC",
                  "Linear SVC", "Gradient Boosting", "Extra Trees", "XGBoost", "AdaBoost"):
        assert f"| {label} |" in table
    for name in MODEL_NAMES:
        png = out / "confusion" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        card = json.loads((out / "models" / name / "model.json").read_text())
        assert card["kind"] == "classical" and card["name"] == name
        assert card["classes"] == GENRES
        assert card["feature_columns"] == FEATURE_COLUMNS
        assert card["features"]["sr"] is None and card["features"]["fma_compat"] is True
    assert (out / "models" / "xgboost" / "xgboost.json").is_file()
    # Scores for unbalanced genres beside the study's columns; FMA-small-sized tables keep the
    # study's exact models, and the table says so.
    assert "| Validation balanced accuracy | Test balanced accuracy |" in table
    assert "Scale rule: the study's exact models" in table
    assert (results["runs_as"] == results["name"]).all()
    assert results["test_balanced_accuracy"].between(0, 1).all()
    best = json.loads((out / "best.json").read_text())
    ok = results[results["error"] == ""]
    assert best["validation_accuracy"] == pytest.approx(ok["validation_accuracy"].max())
    record = json.loads((out / "train.json").read_text())
    assert record["tracks"] == {s: int((dataset.split == s).sum()) for s in SPLITS}


def test_unsupervised_views_are_drawn_and_kmeans_finds_the_genres(table_run):
    out, _, _ = table_run
    for name in ("pca.png", "tsne.png", "kmeans.png"):
        assert (out / "unsupervised" / name).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "unsupervised" / "summary.json").read_text())
    assert summary["kmeans_clusters"] == 8
    assert len(summary["pca_explained_variance"]) == 2
    assert -1.0 <= summary["adjusted_rand_index"] <= 1.0


def test_models_ran_on_both_workers(table_run, local_client):
    _, results, _ = table_run
    workers = set(workers_info(local_client))
    assert set(results["worker"]) <= workers
    # Ten tasks on two single-threaded workers: the slowest-first order spreads them.
    assert len(set(results["worker"])) == 2


def test_scaler_is_fitted_on_the_training_split_only(local_client, tmp_path):
    dataset = synthetic_dataset(per_genre=10)
    # Plant extremes in validation and test rows only: a leaking scaler would see them.
    held_out = ~dataset.rows("training")
    dataset.features.iloc[np.flatnonzero(held_out)[:3], :] = 1e6
    dataset.features.iloc[np.flatnonzero(held_out)[3:6], :] = -1e6
    train(dataset, tmp_path, ClassicalConfig(models=["logistic_regression"], unsupervised=False),
          client=local_client, progress=False)
    pipeline, _ = load_classical(tmp_path / "models" / "logistic_regression")
    scaler = pipeline.named_steps["scale"]
    training = dataset.features[dataset.rows("training")].to_numpy()
    np.testing.assert_array_equal(scaler.data_min_, training.min(axis=0))
    np.testing.assert_array_equal(scaler.data_max_, training.max(axis=0))
    assert scaler.data_max_.max() < 1e6


def test_standard_scaler_option_uses_training_moments(local_client, tmp_path):
    dataset = synthetic_dataset(per_genre=10)
    train(dataset, tmp_path, ClassicalConfig(models="decision_tree", scaler="standard",
                                             unsupervised=False),
          client=local_client, progress=False)
    pipeline, card = load_classical(tmp_path / "models" / "decision_tree")
    training = dataset.features[dataset.rows("training")].to_numpy(np.float64)
    np.testing.assert_allclose(pipeline.named_steps["scale"].mean_, training.mean(axis=0),
                               rtol=1e-5, atol=1e-5)
    assert card["scaler"] == "standard"


# ------------------------------------------------------------------------------- searches


def _fit_workers(stream: list[dict], prefix: str) -> set[str]:
    """Workers that ran tasks whose key name starts with ``prefix``, from the scheduler's records."""
    names = {rec["worker"] for rec in stream
             if str(rec["key"][0] if isinstance(rec["key"], tuple) else rec["key"])
             .startswith(prefix)}
    return names


def test_random_search_fits_run_on_both_workers_and_the_best_is_refit(local_client, tmp_path):
    dataset = synthetic_dataset(per_genre=20)
    with get_task_stream(local_client) as stream:
        config = ClassicalConfig(models=["xgboost"], search="random", n_iter=4,
                                 model_params=SMALL, search_spaces=SMALL_XGB_SPACE,
                                 unsupervised=False)
        results = train(dataset, tmp_path, config, client=local_client, progress=False)
    # One task per candidate and fold: 4 candidates x 5 folds (too few rows to halve).
    fits = [r for r in stream.data if str(r["key"][0] if isinstance(r["key"], tuple)
                                          else r["key"]).startswith("fold_score")]
    assert len(fits) >= 20
    assert len({r["worker"] for r in fits}) == 2
    tuned = results.set_index("model").loc["xgboost-random"]
    assert tuned["search"] == "random" and 0 < tuned["cv_score"] <= 1
    assert tuned["search_score"] == "accuracy"          # balanced genres: the study's score
    params = json.loads(tuned["params"])
    trials = pd.read_csv(tmp_path / "search" / "xgboost-random.csv")
    best = trials.loc[trials["mean_score"].idxmax()]
    assert params["max_depth"] == best["max_depth"] and params["n_estimators"] == best["n_estimators"]
    assert tuned["cv_score"] == pytest.approx(best["mean_score"])
    record = json.loads((tmp_path / "train.json").read_text())
    assert len(record["searches"]["xgboost"]["fit_workers"]) == 2
    assert (tmp_path / "models" / "xgboost-random" / "xgboost.json").is_file()


def test_bayesian_search_runs_trials_on_both_workers(local_client, tmp_path):
    dataset = synthetic_dataset(per_genre=20)
    X, y = dataset.xy("training")
    with get_task_stream(local_client) as stream:
        outcome = run_search(local_client, X, y, SearchSettings(
            "xgboost", SMALL_XGB_SPACE["xgboost"], "bayes", n_iter=4, cv=3, seed=0))
    assert len(_fit_workers(stream.data, "fold_score")) == 2
    assert len(outcome.trials) == 4 and (outcome.trials["state"] == "COMPLETE").all()
    assert outcome.best_score == pytest.approx(outcome.trials["mean_score"].max())
    assert set(outcome.best_params) == {"n_estimators", "max_depth"}
    assert outcome.fit_workers == sorted(workers_info(local_client))


def test_search_over_another_model_and_a_failing_candidate(local_client):
    """A candidate that cannot be fitted scores NaN instead of stopping the search."""
    dataset = synthetic_dataset(per_genre=12)
    X, y = dataset.xy("training")
    # An unknown solver is refused by LogisticRegression's parameter validation.
    space = {"C": Float(0.01, 10.0, log=True), "solver": Choice(("nonsense", "lbfgs"))}
    for method in ("random", "bayes"):
        outcome = run_search(local_client, X, y, SearchSettings(
            "logistic_regression", space, method, n_iter=6, cv=3, seed=1))
        assert outcome.trials["mean_score"].isna().any(), method
        assert outcome.best_params["solver"] == "lbfgs"
        assert outcome.best_score > 0.5


def test_distributed_xgboost_trains_across_both_workers(local_client, tmp_path):
    dataset = synthetic_dataset(per_genre=20)
    with get_task_stream(local_client) as stream:
        config = ClassicalConfig(models=["xgboost"], distributed_xgb=True, model_params=SMALL,
                                 unsupervised=False)
        results = train(dataset, tmp_path, config, client=local_client, progress=False)
    row = results.iloc[0]
    assert row["error"] == "" and row["worker"] == "xgboost.dask (2 workers)"
    assert row["test_accuracy"] > 0.5
    # xgboost.dask trains through one task per worker (xgboost 3.2 names them 'fn-<uuid>').
    assert len(_fit_workers(stream.data, "fn-")) == 2
    pipeline, card = load_classical(tmp_path / "models" / "xgboost")
    X, y = dataset.xy("test")
    assert np.mean(pipeline.predict(X) == y) == pytest.approx(row["test_accuracy"])


# ------------------------------------------------------------------------------- models


def test_resolve_models_accepts_all_lists_and_refuses_unknown_names():
    assert resolve_models("all") == list(MODEL_NAMES)
    assert resolve_models("svc, xgboost") == ["svc", "xgboost"]
    with pytest.raises(ConfigError, match="unknown model"):
        resolve_models(["xgboost", "lightgbm"])


def test_nusvc_with_an_infeasible_nu_is_fitted_with_the_largest_feasible_one():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [3, 30, 30])      # pair (0, 1): nu <= 2*3/33 = 0.18
    X = rng.normal(size=(len(y), 5)) + y[:, None]
    with pytest.raises(ValueError, match="infeasible"):
        NuSVC(nu=0.5).fit(X, y)
    model = FeasibleNuSVC(nu=0.5).fit(X, y)
    assert nu_bound(y) == pytest.approx(6 / 33)
    assert model.nu_ == pytest.approx(0.95 * 6 / 33)
    assert model.get_params()["nu"] == 0.5
    assert np.mean(model.predict(X) == y) > 0.8


def test_class_scores_are_probabilities_or_softmax_rows():
    dataset = synthetic_dataset(per_genre=8)
    X, y = dataset.xy("training")
    for name, kind in (("xgboost", "probability"), ("svc", "softmax")):
        model = make_pipeline(name, n_estimators=5) if name == "xgboost" else make_pipeline(name)
        model.fit(X, y)
        values, got = class_scores(model, X)
        assert got == kind and values.shape == (len(X), 8)
        np.testing.assert_allclose(values.sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(values.argmax(axis=1), model.predict(X))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_saved_model_round_trip_gives_identical_predictions(name, tmp_path):
    dataset = synthetic_dataset(per_genre=8)
    X, y = dataset.xy("training")
    X_test, _ = dataset.xy("test")
    model = make_pipeline(name, **SMALL.get(name, {})).fit(X, y)
    save_classical(tmp_path, model, {"name": name, "classes": GENRES})
    loaded, card = load_classical(tmp_path)
    assert card["kind"] == "classical" and card["classes"] == GENRES
    np.testing.assert_array_equal(loaded.predict(X_test), model.predict(X_test))
    np.testing.assert_array_equal(class_scores(loaded, X_test)[0], class_scores(model, X_test)[0])
    if name == "xgboost":
        # XGBoost's own JSON format loads without fmadask and predicts the same.
        booster = xgb.XGBClassifier()
        booster.load_model(tmp_path / "xgboost.json")
        scaled = model.named_steps["scale"].transform(X_test)
        np.testing.assert_array_equal(booster.predict_proba(scaled),
                                      model.named_steps["model"].predict_proba(scaled))


def test_saved_table_model_reproduces_its_reported_test_accuracy(table_run):
    out, results, dataset = table_run
    X, y = dataset.xy("test")
    for row in results.itertuples():
        pipeline, _ = load_classical(out / "models" / row.model)
        assert np.mean(pipeline.predict(X) == y) == pytest.approx(row.test_accuracy)


def test_loading_a_folder_without_a_model_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="model.json"):
        load_classical(tmp_path)
    (tmp_path / "model.json").write_text('{"kind": "cnn", "classes": ["Rock", "Pop"]}')
    with pytest.raises(DataError, match="not a classical"):
        load_classical(tmp_path)


# ------------------------------------------------------------------------------- metrics


def test_scores_and_confusion_rows_normalised_per_true_class():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 0])
    result = scores(y_true, y_pred)
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["f1_macro"] == pytest.approx(np.mean([2 * 2 / (2 * 2 + 1 + 1), 0.8, 0.0]))
    matrix = normalized_confusion(y_true, y_pred, labels=[0, 1, 2, 3])
    np.testing.assert_allclose(matrix[0], [2 / 3, 1 / 3, 0, 0])
    np.testing.assert_allclose(matrix[2], [1, 0, 0, 0])
    np.testing.assert_allclose(matrix[3], [0, 0, 0, 0])       # class absent from y_true
    assert np.isnan(scores(np.array([]), np.array([]))["accuracy"])


# ------------------------------------------------------------------------------- FMA features.csv


def _write_fma_features_csv(path: Path, features: pd.DataFrame) -> None:
    """Write ``features`` (flat columns) as FMA's features.csv: 3 header rows + 'track_id' row."""
    fma = to_fma_columns(features)
    lines = [",".join(["feature", *fma.columns.get_level_values(0)]),
             ",".join(["statistics", *fma.columns.get_level_values(1)]),
             ",".join(["number", *fma.columns.get_level_values(2)]),
             "track_id" + "," * fma.shape[1]]
    lines += [f"{tid}," + ",".join(f"{v:.9e}" for v in row)
              for tid, row in zip(fma.index, fma.to_numpy())]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def fma_metadata(sample_dir: Path, tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """A copy of the sample's fma_metadata with a features.csv in FMA's layout for its tracks."""
    from fmadask.fma.metadata import load_tracks

    meta = tmp_path / "fma_metadata"
    meta.mkdir()
    for name in ("tracks.csv", "genres.csv"):
        (meta / name).write_bytes((sample_dir / "fma_metadata" / name).read_bytes())
    ids = load_tracks(meta).index
    rng = np.random.default_rng(3)
    features = pd.DataFrame(rng.normal(size=(len(ids), len(FEATURE_COLUMNS))).astype(np.float32),
                            index=ids, columns=FEATURE_COLUMNS)
    _write_fma_features_csv(meta / "features.csv", features)
    return meta, features


def test_reads_fma_features_csv_with_labels_and_splits_from_tracks_csv(fma_metadata):
    from fmadask.fma.tracks import track_table

    meta, features = fma_metadata
    header = (meta / "features.csv").read_text().splitlines()[:4]
    assert header[0].startswith("feature,chroma_cens,") and header[3].startswith("track_id,")
    tracks = track_table(meta.parent, subset="small")
    for source in (meta / "features.csv", meta, meta.parent):
        dataset = load_dataset(source, split="official")
        assert list(dataset.features.columns) == FEATURE_COLUMNS
        assert list(dataset.features.index) == list(tracks.index)
        np.testing.assert_allclose(dataset.features.to_numpy(),
                                   features.loc[tracks.index].to_numpy(), rtol=1e-6)
        pd.testing.assert_series_equal(dataset.genre, tracks["genre_top"], check_names=False)
        pd.testing.assert_series_equal(dataset.split, tracks["split"], check_names=False)
    assert dataset.info["kind"] == "fma_features_csv" and dataset.info["sr"] is None
    # medium adds the sample's metadata-only medium tracks, which features.csv covers too.
    assert len(load_dataset(meta, subset="medium").features) > len(dataset.features)


def test_features_csv_stratified_split_and_missing_columns(fma_metadata):
    meta, features = fma_metadata
    dataset = load_dataset(meta, split="stratified", split_seed=5)
    expected = stratified_split(dataset.genre, seed=5)
    pd.testing.assert_series_equal(dataset.split, expected, check_names=False, check_dtype=False)
    _write_fma_features_csv(meta / "features.csv", features)
    text = (meta / "features.csv").read_text().splitlines()
    # Drop the last column (zcr_std_01) from every line.
    (meta / "features.csv").write_text("\n".join(line.rsplit(",", 1)[0] for line in text) + "\n")
    with pytest.raises(DataError, match="lacks 1 of FMA's 518 feature columns"):
        load_dataset(meta)


def test_tracks_with_nonfinite_features_are_dropped_and_counted():
    from fmadask.ml.data import _drop_nonfinite

    dataset = synthetic_dataset(per_genre=4)
    dataset.features.iloc[0, FEATURE_COLUMNS.index("chroma_cqt_skew_03")] = np.nan
    dataset.features.iloc[1, FEATURE_COLUMNS.index("mfcc_mean_01")] = np.inf
    cleaned = _drop_nonfinite(dataset)
    assert len(cleaned.features) == 30
    assert not cleaned.features.index.isin(dataset.features.index[:2]).any()
    assert cleaned.info["dropped_nonfinite"] == 2


def test_sources_that_are_not_features_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(DataError, match="neither a featurize run"):
        load_dataset(tmp_path)
    with pytest.raises(ConfigError, match="unknown split"):
        load_dataset(tmp_path, split="random")


def test_train_option_errors_are_one_line_config_errors(tmp_path):
    dataset = synthetic_dataset(per_genre=4)
    for kwargs, fragment in (({"search": "grid"}, "unknown search"),
                             ({"scaler": "robust"}, "unknown scaler"),
                             ({"n_iter": 0}, "at least 1"),
                             ({"models": "svc", "search": "random"}, "not among the models")):
        with pytest.raises(ConfigError, match=fragment):
            train(dataset, tmp_path, ClassicalConfig(**kwargs), progress=False)


def test_a_genre_without_training_tracks_is_a_data_error(tmp_path):
    from fmadask.ml.data import _check

    dataset = synthetic_dataset(per_genre=4)
    dataset.split[dataset.genre == "Rock"] = "test"
    with pytest.raises(DataError, match="Rock have no training track"):
        _check(dataset, tmp_path)


# ------------------------------------------------------------------------------- on real audio


@pytest.fixture(scope="module")
def audio_run(local_client, tmp_path_factory) -> Path:
    """A generated FMA-shaped sample (8 good 3 s clips per genre + FMA's defects), featurized by
    the featurize job on the local cluster, then the classical stage on its Parquet output."""
    from fmadask.fma.sample import make_sample
    from fmadask.pipeline import run_featurize
    from fmadask.pipeline.featurize import FeaturizeConfig

    root = tmp_path_factory.mktemp("audio")
    data = make_sample(root / "fma", tracks_per_genre=8, seconds=3.0, seed=4)
    run = root / "run"
    run_featurize(data, out=run, client=local_client,
                  config=FeaturizeConfig(what=["features"], partition_size=16), progress=False)
    train(run, config=ClassicalConfig(model_params=SMALL), client=local_client, progress=False,
          data=DatasetOptions(split="official"))
    return run


def test_sample_features_train_all_models_well_above_chance(audio_run):
    from fmadask.runfolder import read_features

    results = pd.read_csv(audio_run / "classical" / "results.csv")
    assert list(results["name"]) == list(MODEL_NAMES)
    assert results["error"].isna().all()
    # 8 genres: chance is 0.125. Validation + test hold 16 tracks.
    accuracy = (results["validation_accuracy"] + results["test_accuracy"]) / 2
    assert (accuracy >= 0.5).sum() >= 7, results[["name", "validation_accuracy", "test_accuracy"]]
    record = json.loads((audio_run / "classical" / "train.json").read_text())
    features = read_features(audio_run)
    assert record["tracks"]["training"] == int((features["split"] == "training").sum())
    assert record["data"]["kind"] == "run" and record["data"]["sr"] is None
    for name in ("pca.png", "tsne.png", "kmeans.png"):
        assert (audio_run / "classical" / "unsupervised" / name).is_file()


def test_train_refuses_an_out_folder_another_train_is_writing(audio_run, tmp_path, local_client):
    """Two runs' train with one --out would leave models of both runs and a results.csv naming
    some: the output folder has its own lock, whatever run folder the features come from."""
    from fmadask.lock import LOCK_NAME, LockedError
    from lock_holder import held_lock

    out = tmp_path / "shared-out"
    with held_lock(out, "fmadask train") as holder:
        with pytest.raises(LockedError, match=f"fmadask train \\(pid {holder.pid} "):
            train(audio_run, out_dir=out, config=ClassicalConfig(models=["logistic_regression"]),
                  client=local_client, progress=False)
        assert [p.name for p in out.iterdir()] == [LOCK_NAME]


def test_a_run_is_learnt_with_the_split_its_featurize_job_decided(audio_run, capsys):
    # The split is decided once, at featurize: every later stage reads it from the run.
    from fmadask.cli import main
    from fmadask.fma.tracks import track_table
    from fmadask.runfolder import read_features, read_job

    stored = read_features(audio_run)
    for asked in (None, "official"):
        dataset = load_dataset(audio_run / "features", split=asked)
        pd.testing.assert_series_equal(dataset.split, stored["split"], check_names=False)
        assert (dataset.info["split"], dataset.info["split_seed"]) == ("official", None)
    # The featurize job stored FMA's official split, which is the one in tracks.csv.
    tracks = track_table(read_job(audio_run)["data_dir"])
    assert (dataset.split == tracks.loc[dataset.split.index, "split"]).all()
    assert list(dataset.genre) == list(stored["genre_top"])
    # Another split is refused in one line, not re-derived (fusion and the CNN would read the
    # featurized one: a model's training tracks could be their test tracks).
    with pytest.raises(DataError, match=r"featurized with the official split.*stratified "
                                        r"\(seed 3\) was asked for"):
        load_dataset(audio_run, split="stratified", split_seed=3)
    assert main(["train", str(audio_run), "--split", "stratified", "--models",
                 "decision_tree"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fmadask: ") and "\n" not in err and "--split" in err


def test_nusvc_nu_bound_pairs_the_smallest_genre_with_the_largest():
    """FMA medium's genres: the tightest pair is the smallest with the largest, not the two
    smallest (2 * 3 / (3 + 60) < 2 * 3 / (3 + 10))."""
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], [3, 10, 60])
    X = rng.normal(size=(len(y), 5)) + y[:, None]
    assert nu_bound(y) == pytest.approx(6 / 63)
    model = FeasibleNuSVC(nu=0.5).fit(X, y)
    assert model.nu_ == pytest.approx(0.95 * 6 / 63)


def test_identical_trainings_write_identical_model_files(local_client, tmp_path):
    """Reproducible bytes: the same data and seed give the same pipeline.skops, xgboost.json and
    model.json (skops named arrays by memory address and stamped the time of writing)."""
    dataset = synthetic_dataset(per_genre=8)
    outs = [tmp_path / name for name in ("a", "b")]
    for out in outs:
        train(dataset, out, ClassicalConfig(models=["random_forest", "xgboost"],
                                            model_params=SMALL, unsupervised=False),
              client=local_client, progress=False)
    names = sorted(p.relative_to(outs[0]) for p in (outs[0] / "models").rglob("*")
                   if p.is_file())
    assert {n.name for n in names} == {"model.json", "pipeline.skops", "xgboost.json"}
    assert names == sorted(p.relative_to(outs[1]) for p in (outs[1] / "models").rglob("*")
                           if p.is_file())
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    loaded, _ = load_classical(outs[1] / "models" / "random_forest")
    X, _ = dataset.xy("test")
    assert list(loaded.predict(X)) == list(load_classical(outs[0] / "models" /
                                                          "random_forest")[0].predict(X))
