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

    table = pd.DataFrame({"path": ["a.mp3", "b.mp3", "c.mp3"], "genre": ["Rock", None, None],
                          "error": [None, None, "empty: no audio"], "n_segments": [10, 1, 0],
                          "Rock": [0.91, 0.2, None], "Punk": [0.30, 0.1, None],
                          "Pop": [0.31, 0.3, None], "Folk": [0.12, 0.05, None]})
    table.attrs.update(classes=["Rock", "Punk", "Pop", "Folk"],
                       thresholds={"Rock": 0.5, "Punk": 0.25, "Pop": 0.4, "Folk": 0.5})
    assert format_predictions(table, top=2) == [
        "a.mp3: Rock 0.91, Punk 0.30 | below: Pop 0.31, Folk 0.12 [10 segments]",
        "b.mp3: no genre above its threshold | below: Pop 0.30, Rock 0.20",
        "c.mp3: cannot predict (empty: no audio)"]
