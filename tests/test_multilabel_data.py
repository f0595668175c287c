"""The multi-label target's data layer (issue 22): the ``data.target`` option, what featurize
records (both labels of every track, the genre tree), the multi-label Dataset, the sample's
sub-genres, and the bad-input lines."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmadask.cli import main
from fmadask.errors import DataError
from fmadask.fma.metadata import load_genres, load_tracks
from fmadask.fma.tracks import track_table
from fmadask.ml.data import load_dataset
from fmadask.options import OptionError
from fmadask.pipeline import run_featurize
from fmadask.pipeline.featurize import FeaturizeConfig
from fmadask.runfolder import GENRES_FILE, LABELS_FILE, read_features, read_job
from fmadask.runlabels import read_labels


@pytest.fixture(scope="module")
def multi_run(sample_dir: Path, local_client, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample featurized (features only) for the multi-label target."""
    out = tmp_path_factory.mktemp("multi") / "run"
    run_featurize(sample_dir, out=out, client=local_client, progress=False,
                  config=FeaturizeConfig(what=["features"], partition_size=16,
                                         target="genres_all"))
    return out


def _without_genre_top(sample_dir: Path) -> set[int]:
    tracks = load_tracks(sample_dir)
    small = tracks[tracks["set", "subset"] == "small"]
    return set(small.index[small["track", "genre_top"].isna()].tolist())


def test_track_table_takes_tracks_without_genre_top_under_genres_all_only(sample_dir: Path
                                                                          ) -> None:
    single = track_table(sample_dir)
    multi = track_table(sample_dir, target="genres_all")
    lacking = _without_genre_top(sample_dir)
    assert lacking and lacking <= set(multi.index) and not lacking & set(single.index)
    assert single.attrs["excluded_no_genre"] == len(lacking)
    assert set(multi.index) - set(single.index) == lacking
    assert multi.loc[sorted(lacking), "genre_top"].isna().all()
    # both tables carry every track's genres_all, ancestors included
    genres = load_genres(sample_dir)
    for ids in multi["genres_all"]:
        assert ids and all(genres.at[g, "parent"] in ids or genres.at[g, "parent"] == 0
                           for g in ids)
    pd.testing.assert_series_equal(single["genres_all"], multi.loc[single.index, "genres_all"])
    with pytest.raises(OptionError, match="unknown target 'genres'"):
        track_table(sample_dir, target="genres")


def test_the_sample_hears_its_sub_genres_and_mixes_two_top_level_genres(sample_dir: Path
                                                                        ) -> None:
    from fmadask.fma.sample import RECIPES, SUBGENRES, subgenre

    genres = load_genres(sample_dir)
    children = genres[genres["parent"] != 0]
    assert set(children["title"]) == set(SUBGENRES)
    for recipe in RECIPES:                  # each child changes its parent's recipe
        variants = {subgenre(recipe, c) for c in recipe.children}
        assert recipe not in variants and len(variants) == len(recipe.children)
    tracks = load_tracks(sample_dir)
    lacking = sorted(_without_genre_top(sample_dir))
    roots = [{int(genres.at[g, "top_level"]) for g in tracks.at[t, ("track", "genres_all")]}
             for t in lacking]
    assert all(len(r) == 2 for r in roots)
    # the clips of two genres are in every split, so the multi-label task scores them
    assert set(tracks.loc[lacking, ("set", "split")]) == {"training", "validation", "test"}


def test_featurize_records_both_labels_and_the_genre_tree(multi_run: Path, sample_dir: Path
                                                          ) -> None:
    labels, genres = read_labels(multi_run)
    features = read_features(multi_run)
    assert set(features.index) <= set(labels.index)
    lacking = _without_genre_top(sample_dir)
    assert lacking & set(features.index) == lacking     # featurized with no genre_top
    assert labels.loc[sorted(lacking), "genre_top"].isna().all()
    assert features.loc[sorted(lacking), "genre_top"].isna().all()
    source = load_genres(sample_dir).sort_index()
    pd.testing.assert_frame_equal(genres[["title", "parent", "top_level"]],
                                  source[["title", "parent", "top_level"]], check_dtype=False)
    assert read_job(multi_run)["params"]["target"] == "genres_all"
    assert (multi_run / LABELS_FILE).is_file() and (multi_run / GENRES_FILE).is_file()


def test_a_track_without_genre_top_is_used_under_genres_all_and_counted_under_genre_top(
        multi_run: Path, sample_dir: Path) -> None:
    lacking = sorted(_without_genre_top(sample_dir) & set(read_features(multi_run).index))
    multi = load_dataset(multi_run, target="genres_all")
    assert multi.target == "genres_all" and set(lacking) <= set(multi.features.index)
    assert multi.labels.shape == (len(multi.features), len(multi.classes))
    assert multi.labels.loc[lacking].sum(axis=1).ge(2).all()     # two genres (and parents)
    X, Y = multi.xy("training")
    assert Y.ndim == 2 and Y.shape[1] == len(multi.label_ids) and Y.dtype == np.uint8
    assert Y.sum(axis=0).min() >= 1                  # every label has a training positive
    single = load_dataset(multi_run)
    assert single.target == "genre_top" and not set(lacking) & set(single.features.index)
    assert single.info["excluded_no_genre"] == len(lacking)
    assert "None" not in single.classes


def test_a_run_without_genres_all_labels_asked_for_them_is_one_line(
        multi_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "old"
    shutil.copytree(multi_run, old)
    (old / LABELS_FILE).unlink()                     # as a run featurized before issue 22
    with pytest.raises(DataError, match="holds no genres_all labels.*featurize it again"):
        load_dataset(old, target="genres_all")
    assert main(["train", str(old), "--target", "genres_all", "--models",
                 "logistic_regression"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "featurize it again" in err[0]
    assert load_dataset(old).target == "genre_top"   # its single-label task still loads


def test_a_split_without_any_positive_is_one_line(multi_run: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    run = tmp_path / "run"
    shutil.copytree(multi_run, run)
    features = read_features(run)
    validation = set(features.index[features["split"] == "validation"])
    table = pq.read_table(run / LABELS_FILE).to_pandas()
    table["genres_all"] = [[] if t in validation else list(ids)
                           for t, ids in zip(table["track_id"], table["genres_all"])]
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), run / LABELS_FILE)
    with pytest.raises(DataError, match="the validation split has no positive of any genre"):
        load_dataset(run, target="genres_all")


# ------------------------------------------------------------------ classical, multi-label

#: Small, fast settings of the multi-label models (the table is tiny).
SMALL = {"random_forest": {"n_estimators": 20}, "xgboost": {"n_estimators": 20}}


def _train(dataset, out: Path, client, models: str) -> pd.DataFrame:
    from fmadask.ml.train import ClassicalConfig, train

    return train(dataset, out, ClassicalConfig(models=models, model_params=SMALL,
                                               unsupervised=False), client=client,
                 progress=False)


def test_multilabel_models_are_scored_against_a_label_prior_and_round_trip_through_predict(
        multi_run: Path, local_client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fmadask.ml.persist import load_classical
    from fmadask.ml.multilabel import label_probabilities
    from fmadask.predict import format_predictions, predict

    dataset = load_dataset(multi_run, target="genres_all")
    results = _train(dataset, tmp_path / "classical", local_client,
                     "logistic_regression,linear_svc,random_forest,xgboost,svc")
    for column in ("validation_roc_auc_macro", "test_roc_auc_macro", "validation_pr_auc_macro",
                   "test_pr_auc_macro", "test_f1_micro", "test_f1_macro", "test_subset_accuracy",
                   "test_top_accuracy"):
        assert column in results.columns
    assert list(results["model"]) == ["label_prior", "logistic_regression", "linear_svc",
                                      "random_forest", "xgboost"]        # svc left out
    assert (results["error"] == "").all()
    prior = results.iloc[0]
    assert prior["test_roc_auc_macro"] == pytest.approx(0.5)
    assert results["validation_roc_auc_macro"].iloc[1:].between(0, 1).all()   # tiny sample
    table = (tmp_path / "classical" / "table.md").read_text()
    assert "subset accuracy LR 13.45 %" in table and "label_prior" in table
    # the saved model: its card, and predict on one of the run's clips gives its row's scores
    model = tmp_path / "classical" / "models" / "logistic_regression"
    pipeline, card = load_classical(model)
    assert card["target"] == "genres_all" and card["label_ids"] == dataset.label_ids
    assert len(card["thresholds"]) == len(dataset.classes)
    with pytest.raises(DataError, match="trained for genres_all, not genre_top"):
        load_classical(model, target="genre_top")
    from fmadask.fma.tracks import track_table

    tid = int(dataset.features.index[dataset.rows("test")][0])
    path = track_table(read_job(multi_run)["data_dir"], target="genres_all").at[tid, "path"]
    predicted = predict(model, [path])
    expected = label_probabilities(pipeline, dataset.features.loc[[tid]].to_numpy(np.float32))[0]
    np.testing.assert_allclose(predicted.loc[0, dataset.classes].to_numpy(float), expected,
                               rtol=1e-4, atol=1e-6)
    line = format_predictions(predicted)[0]
    assert line.startswith(str(path)) and " | below: " in line
    assert main(["predict", str(model), str(path)]) == 0
    assert " | below: " in capsys.readouterr().out


def test_thresholds_are_chosen_on_validation_only(multi_run: Path, local_client,
                                                  tmp_path: Path) -> None:
    """A planted test-set leak: other test labels change the test scores, never the
    thresholds the model keeps."""
    from fmadask.ml.data import Dataset
    from fmadask.ml.persist import load_classical

    dataset = load_dataset(multi_run, target="genres_all")
    test = dataset.rows("test")
    flipped = dataset.labels.copy()
    flipped.iloc[test] = 1 - flipped.iloc[test].to_numpy()
    leaky = Dataset(dataset.features, dataset.genre, dataset.split, dict(dataset.info), flipped,
                    dataset.genres)
    a = _train(dataset, tmp_path / "a", local_client, "logistic_regression")
    b = _train(leaky, tmp_path / "b", local_client, "logistic_regression")
    cards = [load_classical(tmp_path / x / "models" / "logistic_regression")[1]
             for x in ("a", "b")]
    assert cards[0]["thresholds"] == cards[1]["thresholds"]
    assert a.iloc[1]["validation_pr_auc_macro"] == b.iloc[1]["validation_pr_auc_macro"]
    assert a.iloc[1]["test_pr_auc_macro"] != b.iloc[1]["test_pr_auc_macro"]


def test_class_weight_under_genres_all_is_refused_before_any_work(
        multi_run: Path, sample_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "classical"
    assert main(["train", str(multi_run), "--target", "genres_all", "--models",
                 "logistic_regression", "--class-weight", "balanced", "--no-unsupervised",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--class-weight balanced" in err[0] and "genres_all" in err[0]
    assert not (out / "results.csv").exists()
    demo = Path(__file__).resolve().parents[1] / "jobs" / "demo.toml"
    assert main(["run", "--check", str(demo), "--set", f"data.dir={sample_dir}",
                 "--set", f"output.dir={tmp_path / 'run'}", "--set", "data.target=genres_all",
                 "--set", "classical.class_weight=balanced"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "classical.class_weight balanced" in err[0]


def test_xgboost_trained_across_the_workers_learns_every_genre(
        multi_run: Path, local_client, tmp_path: Path) -> None:
    """distributed_xgb under genres_all: XGBoost's multi-label form through xgboost.dask scores
    what the same model trained in one task scores."""
    from fmadask.ml.train import ClassicalConfig, train

    dataset = load_dataset(multi_run, target="genres_all")
    results = {}
    for across in (False, True):
        table = train(dataset, tmp_path / str(across), ClassicalConfig(
            models="xgboost", model_params=SMALL, distributed_xgb=across, unsupervised=False),
            client=local_client, progress=False).set_index("model")
        assert table.at["xgboost", "error"] == ""
        results[across] = table.loc["xgboost"]
    assert results[True]["worker"].startswith("xgboost.dask")
    for column in ("validation_pr_auc_macro", "test_roc_auc_macro"):
        assert results[True][column] == pytest.approx(results[False][column], abs=0.05)


def test_the_search_under_genres_all_scores_macro_average_precision(
        multi_run: Path, local_client, tmp_path: Path) -> None:
    """The search tunes a model's multi-label form on folds of the training rows, scored by
    macro average precision; the refitted model gets a row, a card and its thresholds from
    validation like the others."""
    import json

    from fmadask.ml.persist import load_classical
    from fmadask.ml.train import ClassicalConfig, train

    dataset = load_dataset(multi_run, target="genres_all")
    out = tmp_path / "classical"
    config = ClassicalConfig(models="logistic_regression,xgboost", model_params=SMALL,
                             search="random", search_models="xgboost", n_iter=3, cv=2,
                             unsupervised=False)
    results = train(dataset, out, config, client=local_client, progress=False).set_index("model")
    assert list(results.index) == ["label_prior", "logistic_regression", "xgboost",
                                   "xgboost-random"]
    searched = results.loc["xgboost-random"]
    assert searched["error"] == "" and searched["search"] == "random"
    assert 0.0 < searched["cv_score"] <= 1.0
    assert 0.0 < searched["validation_pr_auc_macro"] <= 1.0
    record = json.loads((out / "train.json").read_text())
    assert record["searches"]["xgboost"]["score"] == "pr_auc_macro"
    assert record["searches"]["xgboost"]["candidates"] == 3
    assert not any("search" in note for note in record["notes"])
    _, card = load_classical(out / "models" / "xgboost-random")
    assert card["search"] == "random" and len(card["thresholds"]) == len(dataset.classes)
    assert (out / "search" / "xgboost-random.csv").is_file()


def test_predict_prints_a_predicted_sub_genres_parent_among_the_predicted(
        multi_run: Path, local_client, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The parent rule at prediction, as in the reports: with every sub-genre's threshold at 0
    and every top-level genre's out of reach, fmadask predict still lists each top-level genre
    among the predicted ones (before '|'), never below."""
    import json

    dataset = load_dataset(multi_run, target="genres_all")
    _train(dataset, tmp_path / "classical", local_client, "logistic_regression")
    model = tmp_path / "classical" / "models" / "logistic_regression"
    card = json.loads((model / "model.json").read_text())
    parents = {int(g): p for g, p in card["parents"].items()}
    top = [g for g in card["label_ids"] if parents[g] == 0]
    card["thresholds"] = [2.0 if g in top else 0.0 for g in card["label_ids"]]
    (model / "model.json").write_text(json.dumps(card))
    tid = int(dataset.features.index[dataset.rows("test")][0])
    path = track_table(read_job(multi_run)["data_dir"], target="genres_all").at[tid, "path"]
    assert main(["predict", str(model), str(path)]) == 0
    predicted, _, below = capsys.readouterr().out.strip().partition(" | below: ")

    def names(part: str) -> set[str]:          # 'Rock 0.12, Punk 0.80' -> {'Rock', 'Punk'}
        return {item.rsplit(" ", 1)[0] for item in part.split(", ") if item}

    titles = dict(zip(card["label_ids"], card["classes"]))
    with_children = {titles[parents[g]] for g in card["label_ids"] if parents[g] in titles}
    assert with_children and with_children <= names(predicted.split(": ", 1)[1])
    assert not with_children & names(below)


def test_a_data_folder_without_genres_all_is_one_line(sample_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    shutil.copytree(sample_dir / "fma_metadata", data / "fma_metadata")
    (data / "fma_small").mkdir()
    tracks = pd.read_csv(data / "fma_metadata" / "tracks.csv", header=[0, 1], index_col=0)
    tracks.drop(columns=[("track", "genres_all")]).to_csv(data / "fma_metadata" / "tracks.csv")
    assert main(["featurize", str(data), "--target", "genres_all", "--out",
                 str(tmp_path / "run"), "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing columns track.genres_all" in err[0]
    assert not (tmp_path / "run" / "features").exists()
