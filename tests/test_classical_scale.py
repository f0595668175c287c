"""The classical stage at FMA medium and large scale: the scale rule, the search engine
(successive halving, resume, a worker killed mid-search) and scores for unbalanced genres.

Tables are FMA-medium-shaped but small: 518 features, unbalanced genres (Rock-sized to Easy
Listening-sized in proportion), built here. Fits run on a real local Dask cluster of worker
processes.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest
from distributed import get_task_stream

from fmadask.errors import ConfigError
from fmadask.ml.data import Dataset
from fmadask.ml.fit import fit_and_predict
from fmadask.ml.models import (SCALE_THRESHOLD_ROWS, Float, Int, NystroemSVM, make_pipeline,
                               runs_as)
from fmadask.ml.persist import load_classical
from fmadask.ml.search import SearchSettings, halving_fractions, run_search, score_for
from fmadask.ml.train import ClassicalConfig, train
from synthetic_tables import gaussian_table

#: The engine is the same for every model; logistic regression fits in a fraction of a second
#: (XGBoost's 518-feature histograms take seconds even on a few hundred rows).
LR_SPACE = {"C": Float(1e-4, 1e2, log=True)}
#: FMA medium's 16 genres, with tracks in proportion to its counts (Rock 7,103 ... Easy
#: Listening 21), scaled down.
MEDIUM_GENRES = {"Rock": 7103, "Electronic": 6314, "Experimental": 2251, "Hip-Hop": 2201,
                 "Folk": 1519, "Instrumental": 1350, "Pop": 1186, "International": 1018,
                 "Classical": 619, "Old-Time / Historic": 510, "Jazz": 384, "Country": 178,
                 "Soul-RnB": 154, "Spoken": 118, "Blues": 74, "Easy Listening": 21}
#: The 8 largest, for the search tests (fewer trees per round: faster, same behaviour).
EIGHT = dict(list(MEDIUM_GENRES.items())[:8])


def medium_shaped(rows: int = 800, shift: float = 0.4, seed: int = 0,
                  genres: dict[str, int] | None = None) -> Dataset:
    """``rows`` tracks in FMA medium's genre proportions (at least 12 per genre), 518 Gaussian
    features around a random mean per genre, split 80/10/10 by genre."""
    counts = genres or MEDIUM_GENRES
    total = sum(counts.values())
    sizes = {g: max(12, round(rows * n / total)) for g, n in counts.items()}
    return gaussian_table(sizes, shift, seed, id_step=3, id_start=5)


def _task_count(stream: list[dict], prefix: str) -> int:
    return sum(1 for r in stream
               if str(r["key"][0] if isinstance(r["key"], tuple) else r["key"]).startswith(prefix))


# ------------------------------------------------------------------------------- scale rule


def test_scale_rule_swaps_the_fastest_growing_models_past_the_threshold_only():
    small, large = SCALE_THRESHOLD_ROWS, SCALE_THRESHOLD_ROWS + 1
    for name in ("logistic_regression", "random_forest", "linear_svc", "adaboost"):
        assert runs_as(name, large) == name
    assert runs_as("xgboost", large) == "xgboost_early_stopping"
    assert runs_as("gradient_boosting", small) == "gradient_boosting"
    assert runs_as("gradient_boosting", large) == "hist_gradient_boosting"
    assert runs_as("svc", large) == runs_as("nusvc", large) == "nystroem_svm"
    assert runs_as("decision_tree", large) == "bounded_tree"
    assert runs_as("svc", 50, threshold=10) == "nystroem_svm"
    # FMA small's 6,480 training rows keep the study's exact models.
    assert runs_as("svc", 6480) == "svc"


def test_swapped_models_are_named_in_results_table_and_cards_and_predict_as_reported(
        local_client, tmp_path):
    dataset = medium_shaped(rows=500)
    config = ClassicalConfig(models=["svc", "gradient_boosting", "decision_tree"],
                             scale_threshold=100, unsupervised=False,
                             model_params={"hist_gradient_boosting": {"max_iter": 20}})
    results = train(dataset, tmp_path, config, client=local_client, progress=False)
    rows = results.set_index("name")
    assert rows.at["svc", "runs_as"] == "nystroem_svm"
    assert rows.at["gradient_boosting", "runs_as"] == "hist_gradient_boosting"
    assert rows.at["decision_tree", "runs_as"] == "bounded_tree"
    assert rows.at["svc", "label"] == "SVC (ran as Nystroem + linear SVM)"
    table = (tmp_path / "table.md").read_text()
    assert "Gradient Boosting ran as HistGradientBoosting" in table and "past 100" in table
    record = json.loads((tmp_path / "train.json").read_text())
    assert record["scale_rule"]["runs_as"]["svc"] == "nystroem_svm"
    X, y = dataset.xy("test")
    for name in ("svc", "gradient_boosting", "decision_tree"):
        pipeline, card = load_classical(tmp_path / "models" / name)
        assert card["runs_as"] == rows.at[name, "runs_as"]
        assert np.mean(pipeline.predict(X) == y) == pytest.approx(rows.at[name, "test_accuracy"])
    # Fusion computes the class scores from the saved models: the stage writes no copy of them.
    assert not (tmp_path / "probabilities").exists()


def test_bounded_tree_stops_at_its_leaf_bound_where_a_full_tree_keeps_growing():
    # Noisy labels: a tree grown to pure leaves needs about one leaf per few rows, ever deeper.
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(4000, 20)), rng.integers(0, 8, size=4000)
    full = make_pipeline("decision_tree").fit(X, y).named_steps["model"]
    bounded = make_pipeline("bounded_tree").fit(X, y).named_steps["model"]
    assert full.get_n_leaves() > 1000
    assert bounded.get_n_leaves() == 1000 and bounded.get_depth() < full.get_depth()


def test_nystroem_svm_approximates_the_rbf_svc_linearly():
    dataset = medium_shaped(rows=600, genres=dict(list(MEDIUM_GENRES.items())[:6]))
    X, y = dataset.xy("training")
    X_test, y_test = dataset.xy("test")
    exact = make_pipeline("svc").fit(X, y)
    approx = make_pipeline("nystroem_svm").fit(X, y)
    model = approx.named_steps["model"]
    assert isinstance(model, NystroemSVM) and model.map_.n_components <= 500
    agreement = np.mean(exact.predict(X_test) == approx.predict(X_test))
    assert agreement >= 0.8, agreement


# ------------------------------------------------------------------------------- search


def test_halving_fractions_and_the_search_score():
    assert halving_fractions(10, 10_000, 16) == [1 / 9, 1 / 3, 1.0]
    assert halving_fractions(4, 10_000, 16) == [1 / 3, 1.0]
    assert halving_fractions(2, 10_000, 16) == [1.0]
    assert halving_fractions(10, 300, 16) == [1.0]          # parts too small to rank
    assert score_for(np.repeat([0, 1, 2], [10, 10, 10])) == "accuracy"
    assert score_for(np.repeat([0, 1, 2], [100, 40, 10])) == "balanced_accuracy"


def test_successive_halving_fits_the_losers_on_a_third_of_the_rows(local_client, tmp_path):
    dataset = medium_shaped(rows=700, genres=EIGHT)
    X, y = dataset.xy("training")
    with get_task_stream(local_client) as stream:
        outcome = run_search(local_client, X, y, SearchSettings(
            "logistic_regression", LR_SPACE, "random", n_iter=6, cv=3, trials_dir=tmp_path))
    assert outcome.fractions == [1 / 3, 1.0] and outcome.score == "balanced_accuracy"
    trials = outcome.trials
    assert sorted(trials["state"]) == ["COMPLETE"] * 2 + ["PRUNED"] * 4
    # 6 candidates x 3 folds on a third of the rows, then the best 2 x 3 folds on all rows.
    assert _task_count(stream.data, "fold_score") == 6 * 3 + 2 * 3
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("trial-*.json"))]
    first = {r["number"]: np.mean(r["rungs"][0]["scores"]) for r in records}
    promoted = {r["number"] for r in records if r["state"] == "COMPLETE"}
    assert min(first[n] for n in promoted) >= max(v for n, v in first.items()
                                                  if n not in promoted)
    assert outcome.best_score == pytest.approx(
        trials.loc[trials["state"] == "COMPLETE", "mean_score"].max())
    assert len(outcome.fit_workers) == 2


def test_a_stopped_search_resumes_from_its_persisted_trials(local_client, tmp_path):
    dataset = medium_shaped(rows=700, genres=EIGHT)
    X, y = dataset.xy("training")
    settings = SearchSettings("logistic_regression", LR_SPACE, "bayes", n_iter=6, cv=3,
                              trials_dir=tmp_path, wave=3)
    full = run_search(local_client, X, y, settings)
    # Stop the search after its first wave: drop the later trials' files, as if killed.
    records = {p: json.loads(p.read_text()) for p in tmp_path.glob("trial-*.json")}
    lost = {p: r for p, r in records.items() if r["number"] >= 3}
    for path in lost:
        path.unlink()
    with get_task_stream(local_client) as stream:
        resumed = run_search(local_client, X, y, settings)
    assert resumed.resumed == 3
    # Only the lost trials were fitted again: each of their rungs, 3 folds each.
    assert _task_count(stream.data, "fold_score") == 3 * sum(len(r["rungs"])
                                                             for r in lost.values())
    pd.testing.assert_frame_equal(resumed.trials, full.trials)
    assert resumed.best_params == full.best_params


def test_search_survives_a_worker_killed_mid_search(tmp_path):
    from fmadask.cluster import get_client

    dataset = medium_shaped(rows=700, genres=dict(list(EIGHT.items())[:4]))
    X, y = dataset.xy("training")
    space = {"n_estimators": Int(40, 80), "max_depth": Int(4, 8)}
    with get_client(workers=2, quiet=True) as client:
        outcome: dict = {}

        def search() -> None:
            outcome["result"] = run_search(client, X, y, SearchSettings(
                "random_forest", space, "random", n_iter=4, cv=3, trials_dir=tmp_path))

        thread = threading.Thread(target=search)
        thread.start()
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("trial-*.json")) and time.monotonic() < deadline:
            time.sleep(0.2)
        victim, pid = next(iter(client.run(os.getpid).items()))
        assert thread.is_alive(), "the search ended before a worker could be killed"
        os.kill(pid, signal.SIGKILL)
        thread.join(300)
        assert not thread.is_alive()
    result = outcome["result"]
    assert (result.trials["state"] == "COMPLETE").sum() >= 1
    assert (result.trials["error"] == "").all(), result.trials["error"]
    assert not result.trials["mean_score"].isna().any()


# ------------------------------------------------------------------------------- unbalanced


def test_balanced_class_weight_raises_the_small_genres_recall():
    from sklearn.metrics import balanced_accuracy_score

    dataset = medium_shaped(rows=1500, shift=0.08, genres={"Rock": 900, "Pop": 60,
                                                           "Blues": 40})
    X, y = dataset.xy("training")
    X_test, y_test = dataset.xy("test")
    plain, weighted = (fit_and_predict("logistic_regression", {}, 0, X, y, {"test": X_test},
                                       class_weight=w) for w in (None, "balanced"))
    plain_score = balanced_accuracy_score(y_test, plain.predictions["test"])
    weighted_score = balanced_accuracy_score(y_test, weighted.predictions["test"])
    assert weighted_score > plain_score


def test_unbalanced_genres_are_searched_by_balanced_accuracy_and_reported(local_client,
                                                                          tmp_path):
    dataset = medium_shaped(rows=500)
    config = ClassicalConfig(models=["logistic_regression"], search="random",
                             search_models="logistic_regression", n_iter=3,
                             search_spaces={"logistic_regression": LR_SPACE},
                             class_weight="balanced", unsupervised=False)
    results = train(dataset, tmp_path, config, client=local_client, progress=False)
    tuned = results.set_index("model").loc["logistic_regression-random"]
    assert tuned["search_score"] == "balanced_accuracy" and tuned["class_weight"] == "balanced"
    written = pd.read_csv(tmp_path / "results.csv")
    for column in ("validation_balanced_accuracy", "test_balanced_accuracy"):
        assert written[column].between(0, 1).all()
    table = (tmp_path / "table.md").read_text()
    assert "CV balanced accuracy (search)" in table and "Class weight: balanced" in table
    assert json.loads((tmp_path / "best.json").read_text())["chosen_by"] == "balanced_accuracy"
    with pytest.raises(ConfigError, match="unknown class_weight .heavy."):
        train(dataset, tmp_path, ClassicalConfig(class_weight="heavy"), progress=False)


def test_distributed_xgboost_past_the_threshold_stops_early_across_the_workers(local_client,
                                                                               tmp_path):
    dataset = medium_shaped(rows=500, genres=EIGHT)
    config = ClassicalConfig(models=["xgboost"], distributed_xgb=True, scale_threshold=0,
                             unsupervised=False)
    results = train(dataset, tmp_path, config, client=local_client, progress=False)
    row = results.iloc[0]
    assert row["error"] == "", row["error"]
    assert row["runs_as"] == "xgboost_early_stopping"
    assert row["worker"] == "xgboost.dask (2 workers)"
    pipeline, _ = load_classical(tmp_path / "models" / "xgboost")
    booster = pipeline.named_steps["model"]
    # Early stopping kept fewer rounds than the 400 allowed, and the saved model uses them.
    assert booster.best_iteration < 399
    X, y = dataset.xy("test")
    assert np.mean(pipeline.predict(X) == y) == pytest.approx(row["test_accuracy"])
