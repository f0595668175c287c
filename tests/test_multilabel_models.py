"""Multi-label (``genres_all``) CNN and fusion: the pure parts, then the stages end to end."""
from __future__ import annotations

import numpy as np
import pytest

from fmadask.fusion.pool import fit_label_weight, pool_labels

# ------------------------------------------------------------------------------ pooling


def test_label_pool_is_a_weighted_mean_of_log_odds():
    a = np.array([[0.9, 0.2], [0.5, 0.99]])
    b = np.array([[0.1, 0.2], [0.7, 0.5]])
    np.testing.assert_allclose(pool_labels([a, b], [1.0, 0.0]), a)
    np.testing.assert_allclose(pool_labels([a, b], [0.0, 1.0]), b)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    fused = pool_labels([a, b], [0.3, 0.7])
    np.testing.assert_allclose(logit(fused), 0.3 * logit(a) + 0.7 * logit(b))
    assert fused[0, 0] == pytest.approx(1 / (1 + np.exp(-0.3 * logit(0.9) - 0.7 * logit(0.1))))


def test_label_weight_follows_the_informative_part_on_validation():
    rng = np.random.default_rng(0)
    y = rng.random((300, 6)) < 0.3
    good = np.clip(np.where(y, 0.7, 0.3) + rng.normal(0, 0.15, y.shape), 0.01, 0.99)
    noise = rng.random(y.shape)
    weight, trials = fit_label_weight(good, noise, y)
    assert weight >= 0.8 and len(trials) == 21
    assert fit_label_weight(noise, good, y)[0] <= 0.2
    with pytest.raises(ValueError, match="positive and a negative"):
        fit_label_weight(good, noise, np.zeros_like(y))


# ------------------------------------------------------------------------- augmentation


def test_multi_label_targets_are_mixed_not_smoothed():
    import torch

    from fmadask.dl.augment import Augmentation, augment_batch, batch_generator

    x = torch.randn(4, 1, 8, 10)
    y = torch.tensor([[1, 0, 1], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=torch.float32)
    _, plain = augment_batch(x, y, 3, Augmentation(gain_db=3.0, label_smoothing=0.1),
                             batch_generator(0, 0, 0, 0))
    assert torch.equal(plain, y)                       # no smoothing of 0/1 labels
    _, mixed = augment_batch(x, y, 3, Augmentation(mixup=0.4), batch_generator(0, 0, 0, 0))
    assert not torch.equal(mixed, y) and mixed.min() >= 0 and mixed.max() <= 1
    # each row is lam * its own labels + (1 - lam) * another row's, lam >= 0.5
    assert ((mixed >= 0.5) | (y == 0)).all()


# -------------------------------------------------------------------- segments -> tracks


def test_a_tracks_probabilities_are_its_segments_mean():
    from sklearn.metrics import average_precision_score

    from fmadask.dl.evaluate import score_segments_multilabel

    track_ids = np.array([7, 3, 7, 3, 3, 9])
    labels = np.array([[1, 0], [0, 1], [1, 0], [0, 1], [0, 1], [1, 1]])
    probs = np.array([[0.9, 0.1], [0.2, 0.6], [0.5, 0.3], [0.4, 0.8], [0.0, 0.1], [0.6, 0.7]])
    scores, tracks = score_segments_multilabel(track_ids, labels, probs)
    assert list(tracks.index) == [3, 7, 9] and list(tracks["n_segments"]) == [3, 2, 1]
    np.testing.assert_allclose(tracks.loc[3, "probs"], [0.2, 0.5], rtol=1e-6)
    np.testing.assert_allclose(tracks.loc[7, "probs"], [0.7, 0.2], rtol=1e-6)
    assert list(tracks.loc[9, "labels"]) == [1, 1]
    mean = np.stack(tracks["probs"])
    truth = np.stack(tracks["labels"])
    # label 1 is positive on every track: not scored (listed by unscored_labels)
    assert scores["track_pr_auc_macro"] == pytest.approx(
        average_precision_score(truth[:, 0], mean[:, 0]))
    # segments at 0.5: 6 predicted (0.9, 0.6, 0.5, 0.8, 0.6, 0.7), all right; 7 positives
    assert scores["segment_f1_micro"] == pytest.approx(2 * 6 / (7 + 6))
    assert scores["n_tracks"] == 3 and scores["n_segments"] == 6


def test_a_multi_label_prediction_lists_the_genres_above_their_thresholds():
    import pandas as pd

    from fmadask.predict import format_predictions

    table = pd.DataFrame({"path": ["a.mp3", "b.mp3", "c.mp3"], "genre": ["Rock", "Pop", None],
                          "error": [None, None, "empty: no audio"],
                          "genres": [["Rock", "Punk"], [], None], "n_segments": [10, 1, 0],
                          "Rock": [0.91, 0.2, None], "Punk": [0.30, 0.1, None],
                          "Pop": [0.31, 0.3, None], "Folk": [0.12, 0.05, None]})
    table.attrs.update(classes=["Rock", "Punk", "Pop", "Folk"])
    assert format_predictions(table, top=2) == [
        "a.mp3: Rock 0.91, Punk 0.30 | below: Pop 0.31, Folk 0.12 [10 segments]",
        "b.mp3: no genre above its threshold | below: Pop 0.30, Rock 0.20",
        "c.mp3: cannot predict (empty: no audio)"]


# --------------------------------------------------------------------- the CNN, end to end

#: Small, fast settings (see test_cnn.SMALL): 1 s segments of 32 mel bands, a narrow net.
SMALL = dict(segment_seconds=1.0, crops=1, batch_size=8, width=8, lr=3e-3, patience=100,
             dist_timeout_s=120)


@pytest.fixture(scope="module")
def multilabel_cnn(tmp_path_factory, local_client):
    """A multi-label CNN trained by 2 DDP ranks on the synthetic multi-label set."""
    from fmadask.dl.config import TrainConfig
    from fmadask.dl.launch import run_cnn
    from fmadask.dl.synthetic import write_synthetic_multilabel

    run_dir = tmp_path_factory.mktemp("multilabel_cnn")
    write_synthetic_multilabel(run_dir, tracks_per_genre=20)
    config = TrainConfig(arch="naive_bn", epochs=6, target="genres_all", device="cpu",
                         out_dir=str(run_dir / "cnn"), **SMALL)
    result = run_cnn(run_dir, config, local_client, ranks=2, progress=False)
    return run_dir, result


def test_the_multi_label_cnn_learns_every_genre_and_writes_its_outputs(multilabel_cnn):
    import json

    import pandas as pd

    from fmadask.dl.synthetic import GENRE_TREE
    from fmadask.runlabels import read_labels

    run_dir, result = multilabel_cnn
    out = run_dir / "cnn"
    card = json.loads((out / "model.json").read_text())
    assert card["target"] == "genres_all" and card["label_ids"] == [1, 2, 3, 4, 11, 12, 13]
    assert card["classes"] == [dict((g, t) for g, t, _ in GENRE_TREE)[g]
                               for g in card["label_ids"]]
    assert len(card["thresholds"]) == 7 and card["parents"]["13"] == 3
    preds = pd.read_parquet(out / "predictions.parquet")
    assert {f"p_{c}" for c in card["classes"]} <= set(preds.columns)
    # every track with a genre is used, with or without a genre_top
    labels, _ = read_labels(run_dir)
    evaluated = labels.index[labels.index % 1000 >= 12]        # validation and test: k >= 12
    assert sorted(preds["track_id"]) == sorted(evaluated)
    assert preds["genre_top"].isna().sum() == sum(k % 4 == 3 for k in evaluated % 1000)
    test = result["scores"]["test"]
    prevalence = np.stack([[g in ids for g in card["label_ids"]]
                           for ids in preds.loc[preds["split"] == "test", "genres_all"]]).mean(0)
    assert test["pr_auc_macro"] > prevalence.mean() + 0.2         # well above the label prior
    assert test["roc_auc_macro"] > 0.75
    metrics = pd.read_csv(out / "metrics.csv")
    assert {"train_f1_micro", "val_f1_micro", "val_track_pr_auc_macro"} <= set(metrics.columns)
    assert len(metrics) == 6
    report = (out / "report.md").read_text()
    assert "label smoothing off" in report and "13.45 %" in report
    assert (out / "per_label_ap.png").is_file()


def test_the_multi_label_cnn_round_trips_through_predict(multilabel_cnn, sample_dir, capsys):
    import pandas as pd
    import torch

    from fmadask.cli import main
    from fmadask.dl.dataset import open_spectrograms, standardise_clip
    from fmadask.dl.predict import load_model
    from fmadask.fma.tracks import track_table
    from fmadask.predict import predict
    from fmadask.report.multilabel import parent_violations

    run_dir, _ = multilabel_cnn
    out = run_dir / "cnn"
    net, meta = load_model(out)
    # the saved net scores a stored clip as training scored it (predictions.parquet)
    preds = pd.read_parquet(out / "predictions.parquet").set_index("track_id")
    spec = open_spectrograms(run_dir)
    row = spec.tracks("test").iloc[0]
    stored = np.load(spec.root / row["shard"], mmap_mode="r")[row["row"]]
    batch = standardise_clip(stored, int(row["frames"]), meta["segment_frames"],
                             meta["norm"]["mean"], meta["norm"]["std"])
    with torch.no_grad():
        mean = torch.sigmoid(net(torch.from_numpy(batch))).numpy().mean(axis=0)
    np.testing.assert_allclose(preds.loc[row["track_id"], [f"p_{c}" for c in meta["classes"]]]
                               .to_numpy(float), mean, atol=1e-5)
    # predict on real audio: the genres at or above their thresholds, with their parents
    paths = list(track_table(sample_dir)["path"][:3]) + [str(sample_dir / "missing.mp3")]
    table = predict(out, paths)
    classes = meta["classes"]
    assert table.attrs["thresholds"] == dict(zip(classes, meta["thresholds"]))
    probs = table.loc[:2, classes].to_numpy(float)
    assert ((probs >= 0) & (probs <= 1)).all()
    chosen = np.array([[c in genres for c in classes] for genres in table.loc[:2, "genres"]])
    above = probs >= np.array(meta["thresholds"])
    assert (chosen >= above).all()                              # every genre above is listed
    parents = {int(g): int(p) for g, p in meta["parents"].items()}
    assert parent_violations(chosen, meta["label_ids"], parents) == 0
    assert isinstance(table.loc[3, "error"], str)
    assert main(["predict", str(out), *paths[:2]]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(" | below: " in line for line in lines)


def test_a_run_without_genres_all_or_a_checkpoint_of_another_target_is_refused(tmp_path):
    import dataclasses

    from fmadask.dl.checkpoint import check_resume
    from fmadask.dl.config import TrainConfig
    from fmadask.dl.launch import run_cnn
    from fmadask.dl.synthetic import write_synthetic_spectrograms
    from fmadask.errors import ConfigError, DataError

    write_synthetic_spectrograms(tmp_path, tracks_per_genre=3, n_mels=16, seconds=2.0)
    with pytest.raises(DataError, match="records no genres_all"):
        run_cnn(tmp_path, TrainConfig(arch="naive", epochs=1, target="genres_all"))  # no worker
    saved = dataclasses.asdict(TrainConfig())
    with pytest.raises(ConfigError, match="target='genre_top', not 'genres_all'"):
        check_resume({"config": saved, "world_size": 2}, TrainConfig(target="genres_all"), 2,
                     tmp_path / "last.pt")
    del saved["target"]                 # a checkpoint from before the option: genre_top
    with pytest.raises(ConfigError, match="target='genre_top'"):
        check_resume({"config": saved, "world_size": 2}, TrainConfig(target="genres_all"), 2,
                     tmp_path / "last.pt")


@pytest.mark.parametrize("split", ["validation", "test"])
def test_a_split_without_a_positive_is_refused_before_the_cnn_trains(split):
    import pandas as pd

    from fmadask.dl.task import GenreTree, task_for
    from fmadask.errors import DataError

    tree = GenreTree({10: 0, 11: 10, 20: 0}, {10: "Rock", 11: "Punk", 20: "Folk"})
    index = pd.DataFrame({"split": ["training", "training", "validation", "test"],
                          "genre_top": ["Rock", "Folk", "Rock", "Folk"],
                          "genres_all": [[10, 11], [20], [10], [20]]})
    assert task_for("genres_all", index, tree).labels == (10, 11, 20)
    index.loc[index["split"] == split, "genres_all"] = pd.Series([[]], index=index.index[
        index["split"] == split])
    with pytest.raises(DataError, match=f"no {split} track of this run has a genre"):
        task_for("genres_all", index, tree)


@pytest.mark.parametrize("kind", ["classical", "cnn", "fusion"])
@pytest.mark.parametrize("damage, words", [
    ({"thresholds": None}, "thresholds must be a finite number per class (2 classes)"),
    ({"thresholds": [0.5, float("nan")]}, "thresholds must be a finite number per class"),
    ({"thresholds": [0.5]}, "thresholds must be a finite number per class"),
    ({"label_ids": [10, 10]}, "label_ids must be a distinct genre id per class"),
    ({"label_ids": ["10", "11"]}, "label_ids must be a distinct genre id per class"),
    ({"parents": [[11, 10]]}, "parents must map each genre id"),
])
def test_a_damaged_multi_label_card_is_one_line_for_every_kind(kind, damage, words, tmp_path,
                                                                capsys):
    """Every model kind's card is checked before its loader runs: a multi-label card without
    a usable genre id, threshold or genre tree is refused by fmadask predict in one line."""
    import json

    from fmadask.cli import main

    card = {"kind": kind, "classes": ["Rock", "Punk"], "target": "genres_all",
            "label_ids": [10, 11], "thresholds": [0.4, 0.3], "parents": {"10": 0, "11": 10},
            **damage}
    (tmp_path / "model.json").write_text(json.dumps(card))
    assert main(["predict", str(tmp_path), str(tmp_path / "song.mp3")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "the card is damaged" in err[0]


# --------------------------------------------------------------------------- the fusion


def _parts(rng, n=240, k=5, flip_test=False):
    from fmadask.fusion.multilabel import Parts

    split = np.array(["validation", "test"] * (n // 2))
    y = (rng.random((n, k)) < 0.3).astype(np.int8)
    y[:, 0] |= y[:, 1]                                        # label 1 is a sub-genre of 0
    classical = np.clip(0.25 + 0.4 * y + rng.normal(0, 0.2, y.shape), 0.01, 0.99)
    cnn = np.clip(0.3 + 0.2 * y + rng.normal(0, 0.25, y.shape), 0.01, 0.99)
    if flip_test:                       # the planted leak: test labels the CNN predicts exactly
        test = split == "test"
        y = y.copy()
        y[test] = (cnn[test] > 0.5).astype(np.int8)
    return Parts(track_ids=np.arange(n), split=split, y=y, top_true=np.where(y[:, 0], 10, 0),
                 probs={"classical": classical, "cnn": cnn}, prior=np.full(k, 0.3),
                 labels=[10, 11, 20, 30, 40], parents={10: 0, 11: 10, 20: 0, 30: 0, 40: 0},
                 names={10: "Rock", 11: "Punk", 20: "Folk", 30: "Pop", 40: "Jazz"})


def test_fusion_weight_and_thresholds_use_validation_only():
    from fmadask.fusion.multilabel import fit, results_table

    honest = fit(_parts(np.random.default_rng(1)))
    leaked = fit(_parts(np.random.default_rng(1), flip_test=True))
    assert leaked.weight == honest.weight and leaked.trials == honest.trials
    for source in ("classical", "cnn", "fusion", "prior"):
        np.testing.assert_array_equal(leaked.evaluations[source].thresholds,
                                      honest.evaluations[source].thresholds)
        assert leaked.evaluations[source].scores["validation"] == \
            honest.evaluations[source].scores["validation"]
    # the leak is real: tuned on test, the CNN alone would score (nearly) perfectly there
    assert leaked.evaluations["cnn"].scores["test"]["pr_auc_macro"] > 0.99
    names = {s: s for s in ("classical", "cnn", "fusion", "prior")}
    table = results_table(honest, names, _parts(np.random.default_rng(1)))
    assert list(table["source"]) == ["classical", "cnn", "fusion", "prior"]
    assert table.loc[3, "test_roc_auc_macro"] == pytest.approx(0.5)
    assert table.loc[2, "test_pr_auc_macro"] >= table.loc[:1, "test_pr_auc_macro"].max() - 0.02


def test_fuse_refuses_a_part_made_for_another_target_in_one_line(multilabel_cnn, tmp_path,
                                                                   capsys):
    import json
    import shutil

    from fmadask.cli import main

    run_dir, _ = multilabel_cnn
    run = tmp_path / "run"
    shutil.copytree(run_dir / "cnn", run / "cnn" / "naive_bn")     # a genres_all CNN
    model = run / "classical" / "models" / "logistic_regression"
    model.mkdir(parents=True)
    (model / "model.json").write_text(json.dumps({"kind": "classical",
                                                  "classes": ["Folk", "Rock"]}))  # genre_top
    (run / "classical" / "best.json").write_text(json.dumps({"path": str(model)}))
    assert main(["fuse", str(run), "--target", "genres_all"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "classical model was trained for target genre_top, not " \
        "genres_all" in err[0]
    assert main(["fuse", str(run)]) == 2                                # target genre_top
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CNN trained for target genre_top" in err[0]
    assert main(["fuse", str(run), "--cnn", "naive_bn"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the CNN was trained for target genres_all, not genre_top" in err[0]
    assert not (run / "fusion" / "model.json").exists()


@pytest.fixture(scope="module")
def fused_multilabel(sample_dir, local_client, tmp_path_factory):
    """The sample featurized for genres_all (real mp3s), a one-vs-rest logistic regression, a
    tiny multi-label CNN and their fusion."""
    from fmadask.dl.config import TrainConfig
    from fmadask.dl.launch import run_cnn
    from fmadask.fusion.stage import fuse
    from fmadask.ml.data import DatasetOptions
    from fmadask.ml.train import ClassicalConfig, train
    from fmadask.pipeline import run_featurize
    from fmadask.pipeline.featurize import FeaturizeConfig

    run = tmp_path_factory.mktemp("multilabel_fusion") / "run"
    run_featurize(sample_dir, out=run, client=local_client, progress=False,
                  config=FeaturizeConfig(target="genres_all"))
    train(run, config=ClassicalConfig(models=["logistic_regression"], unsupervised=False),
          data=DatasetOptions(target="genres_all"), client=local_client, progress=False)
    run_cnn(run, TrainConfig(arch="naive_bn", epochs=3, target="genres_all", device="cpu",
                             out_dir=str(run / "cnn" / "naive_bn"), mixup=0.4, masks=2,
                             **{**SMALL, "batch_size": 4}),
            local_client, ranks=2, progress=False)
    return run, fuse(run, target="genres_all")


@pytest.mark.slow
def test_multi_label_fusion_end_to_end(fused_multilabel, sample_dir, tmp_path, capsys):
    import json
    import shutil

    import pandas as pd

    from fmadask.cli import main
    from fmadask.fma.tracks import track_table
    from fmadask.fusion.stage import fuse
    from fmadask.predict import predict
    from fmadask.report.multilabel import RESULT_COLUMNS

    run, results = fused_multilabel
    out = run / "fusion"
    written = pd.read_csv(out / "results.csv")
    assert list(written["source"]) == ["classical", "cnn", "fusion", "prior"]
    assert set(RESULT_COLUMNS) <= set(written.columns)
    assert written.loc[3, "test_roc_auc_macro"] == pytest.approx(0.5)
    card = json.loads((out / "model.json").read_text())
    assert card["target"] == "genres_all" and len(card["thresholds"]) == len(card["classes"])
    report = (out / "report.md").read_text()
    assert "13.45 %" in report and (out / "per_label_ap.png").is_file()
    # a planted leak in the CNN's test predictions moves neither the weight nor the thresholds
    leaky = tmp_path / "run"
    shutil.copytree(run, leaky, ignore=shutil.ignore_patterns("fusion"))
    preds = pd.read_parquet(leaky / "cnn" / "naive_bn" / "predictions.parquet")
    test = preds["split"] == "test"
    for c in card["classes"]:
        preds.loc[test, f"p_{c}"] = preds.loc[test, "genres_all"].map(
            lambda ids, g=c: 1.0 if g in [card["classes"][card["label_ids"].index(i)]
                                          for i in ids if i in card["label_ids"]] else 0.0)
    preds.to_parquet(leaky / "cnn" / "naive_bn" / "predictions.parquet", index=False)
    leaked = fuse(leaky, target="genres_all")
    leaked_card = json.loads((leaky / "fusion" / "model.json").read_text())
    assert leaked_card["weights"] == card["weights"]
    assert leaked_card["thresholds"] == card["thresholds"]
    assert leaked["validation_pr_auc_macro"].tolist() == results["validation_pr_auc_macro"].tolist()
    assert leaked.loc[1, "test_pr_auc_macro"] == pytest.approx(1.0)   # the leak is real
    # the fused model predicts audio files; the command prints genres above their thresholds
    paths = list(track_table(sample_dir, target="genres_all")["path"][:2])
    table = predict(out, paths)
    assert list(table.attrs["classes"]) == card["classes"] and "genres" in table
    assert main(["predict", str(out), *paths]) == 0
    assert all(" | below: " in line for line in capsys.readouterr().out.strip().splitlines())
