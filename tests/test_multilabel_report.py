"""The multi-label scores (fmadask.report.multilabel), checked against scikit-learn and by hand.

A small genre tree: Rock (12) > Punk (25) > Post-Punk (114); Rock > Indie-Rock (66);
Electronic (15) > Techno (181); Folk (17), with no sub-genre.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

from fmadask.report.multilabel import (RESULT_COLUMNS, SCORE_NAMES, Split, choose_thresholds,
                                       enforce_parents, evaluate, markdown_section,
                                       parent_violations, per_label_figure,
                                       predict_labels, prior_probabilities, results_row, scores,
                                       top_accuracy, unscored_labels)

PARENTS = {12: 0, 25: 12, 114: 25, 66: 12, 15: 0, 181: 15, 17: 0}
NAMES = {12: "Rock", 25: "Punk", 114: "Post-Punk", 66: "Indie-Rock", 15: "Electronic",
         181: "Techno", 17: "Folk"}
#: Columns in an order that puts children before their parents.
LABELS = [114, 25, 66, 12, 181, 15, 17]


def tree_labels(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Random tracks that obey the tree (genres_all lists ancestors), and their genre_top."""
    y = np.zeros((n, len(LABELS)), dtype=int)
    col = {g: j for j, g in enumerate(LABELS)}
    top = np.zeros(n, dtype=int)
    for i in range(n):
        leaves = rng.choice([114, 25, 66, 12, 181, 15, 17], size=rng.integers(1, 3), replace=False)
        for leaf in leaves:
            node = int(leaf)
            while node:
                y[i, col[node]] = 1
                node = PARENTS[node]
        roots = {g for g in (12, 15, 17) if y[i, col[g]]}
        top[i] = roots.pop() if len(roots) == 1 else 0
    return y, top


def noisy_scores(rng: np.random.Generator, y: np.ndarray, noise: float = 0.35) -> np.ndarray:
    return np.clip(0.6 * y + rng.normal(0.2, noise, y.shape), 0.0, 1.0)


def brute_force_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold among the scores maximising F1 (tried one by one); the highest among ties."""
    y = y.astype(bool)
    candidates = np.unique(p)[::-1]
    f1 = [2 * (y & (p >= t)).sum() / (y.sum() + (p >= t).sum()) for t in candidates]
    return float(candidates[int(np.argmax(f1))])


def test_thresholds_maximise_each_labels_f1_on_validation():
    rng = np.random.default_rng(0)
    y, _ = tree_labels(rng, 200)
    p = np.round(noisy_scores(rng, y), 2)  # rounded: ties between tracks happen
    thresholds, n_fallback = choose_thresholds(y, p, min_positives=5)
    assert n_fallback == 0
    for j in range(y.shape[1]):
        assert thresholds[j] == pytest.approx(brute_force_f1_threshold(y[:, j], p[:, j]))


def test_hand_computed_threshold():
    y = np.array([[1], [1], [0], [0], [1]])
    p = np.array([[0.9], [0.8], [0.7], [0.3], [0.6]])
    # F1 at each cut: 0.9 -> 2/4, 0.8 -> 4/5, 0.7 -> 4/6, 0.6 -> 6/7 (best), 0.3 -> 6/8.
    assert choose_thresholds(y, p, min_positives=1)[0].tolist() == [0.6]


def test_rare_labels_take_the_pooled_threshold():
    rng = np.random.default_rng(1)
    y, _ = tree_labels(rng, 120)
    y[:, LABELS.index(17)] = 0
    y[:3, LABELS.index(17)] = 1  # Folk: 3 validation positives, too few to tune on
    p = np.round(noisy_scores(rng, y), 2)
    thresholds, n_fallback = choose_thresholds(y, p, min_positives=5)
    assert n_fallback == 1
    pooled = brute_force_f1_threshold(y.ravel(), p.ravel())
    assert thresholds[LABELS.index(17)] == pytest.approx(pooled)
    assert thresholds[LABELS.index(12)] == pytest.approx(
        brute_force_f1_threshold(y[:, LABELS.index(12)], p[:, LABELS.index(12)]))


def test_no_validation_positive_is_refused():
    with pytest.raises(ValueError, match="no positive"):
        choose_thresholds(np.zeros((4, 2)), np.full((4, 2), 0.5))


def test_planted_test_leak_changes_neither_thresholds_nor_validation_scores():
    rng = np.random.default_rng(2)
    y_val, top_val = tree_labels(rng, 150)
    y_test, top_test = tree_labels(rng, 150)
    validation = Split(y_val, noisy_scores(rng, y_val), top_val)
    proba_test = noisy_scores(rng, y_test)
    honest = evaluate(validation, Split(y_test, proba_test, top_test), LABELS, PARENTS, NAMES)
    # The leak: test labels equal to the test predictions a threshold of 0.5 would make, so a
    # threshold tuned on test would move to 0.5 and score perfectly.
    leaked_y = enforce_parents(proba_test >= 0.5, LABELS, PARENTS).astype(int)
    leaked = evaluate(validation, Split(leaked_y, proba_test, top_test), LABELS, PARENTS, NAMES)
    np.testing.assert_array_equal(honest.thresholds, leaked.thresholds)
    assert honest.scores["validation"] == leaked.scores["validation"]
    assert leaked.scores["test"] != honest.scores["test"]  # the test split was really changed
    assert leaked.scores["test"]["subset_accuracy"] < 1.0


def test_scores_agree_with_scikit_learn_and_list_unscorable_labels():
    rng = np.random.default_rng(3)
    y, top = tree_labels(rng, 300)
    y[:, LABELS.index(181)] = 0  # Techno: no positive in this split
    p = noisy_scores(rng, y)
    pred = p >= 0.5
    got = scores(y, p, pred, LABELS, PARENTS, top)
    assert tuple(got) == SCORE_NAMES
    assert unscored_labels(y, LABELS) == [181]
    keep = [j for j in range(len(LABELS)) if LABELS[j] != 181]
    assert got["roc_auc_macro"] == pytest.approx(
        np.mean([roc_auc_score(y[:, j], p[:, j]) for j in keep]))
    assert got["pr_auc_macro"] == pytest.approx(
        np.mean([average_precision_score(y[:, j], p[:, j]) for j in keep]))
    assert got["roc_auc_micro"] == pytest.approx(roc_auc_score(y.ravel(), p.ravel()))
    assert got["f1_micro"] == pytest.approx(f1_score(y, pred, average="micro"))
    assert got["f1_macro"] == pytest.approx(
        np.mean([f1_score(y[:, j], pred[:, j]) for j in keep]))
    assert got["subset_accuracy"] == pytest.approx(accuracy_score(y, pred))
    perfect = scores(y, y.astype(float), y.astype(bool), LABELS, PARENTS, top)
    assert all(v == 1.0 for v in perfect.values())


def test_a_label_positive_on_every_track_is_not_scored():
    y = np.array([[1, 1], [1, 0], [1, 1]])
    assert unscored_labels(y, [12, 25]) == [12]
    assert unscored_labels(y, [12, 25], min_positives=3) == [12, 25]


def test_top_level_accuracy_takes_the_most_probable_top_level_genre():
    # Columns: Post-Punk, Punk, Indie-Rock, Rock, Techno, Electronic, Folk.
    proba = np.array([[0.99, 0.1, 0.1, 0.6, 0.0, 0.7, 0.1],   # Electronic beats Rock: wrong
                      [0.00, 0.0, 0.0, 0.4, 0.9, 0.3, 0.2],   # Rock (sub-genres ignored): right
                      [0.00, 0.0, 0.0, 0.1, 0.0, 0.2, 0.3],   # Folk: right
                      [0.00, 0.0, 0.0, 0.9, 0.0, 0.0, 0.0]])  # no genre_top: left out
    assert top_accuracy(proba, LABELS, PARENTS, np.array([12, 12, 17, 0])) == pytest.approx(2 / 3)
    assert np.isnan(top_accuracy(proba, LABELS, PARENTS, np.zeros(4, dtype=int)))


def test_a_predicted_sub_genre_implies_its_parents():
    pred = np.zeros((3, len(LABELS)), dtype=bool)
    pred[0, LABELS.index(114)] = True          # Post-Punk alone: Punk and Rock missing
    pred[1, LABELS.index(181)] = True          # Techno alone: Electronic missing
    pred[2, [LABELS.index(66), LABELS.index(12)]] = True  # Indie-Rock and Rock: fine
    assert parent_violations(pred, LABELS, PARENTS) == 2  # Post-Punk->Punk, Techno->Electronic
    fixed = enforce_parents(pred, LABELS, PARENTS)
    assert parent_violations(fixed, LABELS, PARENTS) == 0
    assert {LABELS[j] for j in np.flatnonzero(fixed[0])} == {114, 25, 12}
    assert {LABELS[j] for j in np.flatnonzero(fixed[1])} == {181, 15}
    np.testing.assert_array_equal(fixed[2], pred[2])
    assert pred.sum() == 4  # the input is left as it was
    # Thresholded predictions go through the rule.
    proba = np.where(pred, 0.9, 0.1)
    np.testing.assert_array_equal(predict_labels(proba, np.full(len(LABELS), 0.5), LABELS,
                                                 PARENTS), fixed)


def test_a_cycle_in_the_genre_tree_is_refused():
    with pytest.raises(ValueError, match="cycle"):
        enforce_parents(np.ones((1, 2), dtype=bool), [1, 2], {1: 2, 2: 1})


def test_label_prior_baseline_scores_chance():
    rng = np.random.default_rng(4)
    y_train, _ = tree_labels(rng, 200)
    y_test, top = tree_labels(rng, 100)
    proba = prior_probabilities(y_train, len(y_test))
    assert proba.shape == y_test.shape
    np.testing.assert_allclose(proba[17], y_train.mean(axis=0))
    got = scores(y_test, proba, proba >= 0.5, LABELS, PARENTS, top)
    assert got["roc_auc_macro"] == pytest.approx(0.5)
    assert got["pr_auc_macro"] == pytest.approx(y_test.mean(axis=0).mean())


def test_per_label_table_figure_and_markdown(tmp_path):
    rng = np.random.default_rng(5)
    y_val, top_val = tree_labels(rng, 150)
    y_test, top_test = tree_labels(rng, 150)
    y_test[:, LABELS.index(181)] = 0  # Techno has no test positive: listed, not dropped
    validation = Split(y_val, noisy_scores(rng, y_val), top_val)
    test = Split(y_test, noisy_scores(rng, y_test), top_test)
    model = evaluate(validation, test, LABELS, PARENTS, NAMES)
    prior = evaluate(Split(y_val, prior_probabilities(y_val, 150), top_val),
                     Split(y_test, prior_probabilities(y_val, 150), top_test),
                     LABELS, PARENTS, NAMES)
    assert model.unscored == {"validation": [], "test": [181]}
    table = model.table
    # By top-level genre, then support: a parent holds at least its children's positives.
    assert list(table["genre"][:4]) == ["Electronic", "Techno", "Folk", "Rock"]
    punk = table.set_index("genre").loc["Punk"]
    j = LABELS.index(25)
    assert punk["top_level"] == "Rock" and punk["depth"] == 1
    assert punk["support"] == y_test[:, j].sum()
    assert punk["ap"] == pytest.approx(average_precision_score(y_test[:, j], test.proba[:, j]))
    assert np.isnan(table.set_index("genre").loc["Techno", "ap"])
    row = results_row(model)
    assert tuple(row) == RESULT_COLUMNS
    assert row["test_pr_auc_macro"] == model.scores["test"]["pr_auc_macro"]
    assert row["test_roc_auc_macro"] > results_row(prior)["test_roc_auc_macro"]
    figure = per_label_figure(table, 150, tmp_path / "per_label_ap.png", title="model, test")
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = pd.DataFrame([{"model": "model", **row},
                            {"model": "label prior", **results_row(prior)}])
    text = markdown_section(results, model, NAMES, figure="per_label_ap.png")
    assert "13.45 %" in text and "label prior" in text
    assert "test: 1 of 7 labels not in the macro scores" in text and "Techno" in text
    assert "![average precision per genre](per_label_ap.png)" in text
    assert "| Post-Punk | Rock |" in text
