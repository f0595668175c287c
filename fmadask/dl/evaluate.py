"""From segment probabilities to track predictions and scores (plain numpy, no torch).

A clip is cut into segments; the net scores each. A track's genre is then either the majority vote
of its segments' top classes (ties broken by the summed probability of the tied classes) or the
top class of its segments' mean probability. Both are reported with the segment accuracy.

Multi-label (``genres_all``): a segment has a probability per label (sigmoid outputs), a track
the mean of its segments' (:func:`score_segments_multilabel`); there is no vote.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fmadask.report.metrics import scores as track_scores


def track_predictions(track_ids: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """Vote and mean-probability prediction per track.

    Parameters
    ----------
    track_ids : numpy.ndarray
        int64 ``(n_segments,)``, the track of each segment.
    probs : numpy.ndarray
        float ``(n_segments, n_classes)``, class probabilities of each segment.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``track_id`` (sorted): ``vote`` and ``mean`` (int class indices),
        ``n_segments`` (int) and ``probs`` (the mean probability vector, float32 array).
    """
    track_ids = np.asarray(track_ids, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    uniq, inverse = np.unique(track_ids, return_inverse=True)
    n_tracks, n_classes = len(uniq), probs.shape[1]
    counts = np.bincount(inverse, minlength=n_tracks)
    prob_sum = np.zeros((n_tracks, n_classes))
    np.add.at(prob_sum, inverse, probs)
    votes = np.zeros((n_tracks, n_classes))
    np.add.at(votes, (inverse, probs.argmax(axis=1)), 1.0)
    # among classes with the most votes, the one of largest summed probability wins
    tied = votes == votes.max(axis=1, keepdims=True)
    vote = np.where(tied, prob_sum, -np.inf).argmax(axis=1)
    mean = prob_sum / counts[:, None]
    return pd.DataFrame({"vote": vote, "mean": mean.argmax(axis=1), "n_segments": counts,
                         "probs": list(mean.astype(np.float32))},
                        index=pd.Index(uniq, name="track_id"))


def score_segments(track_ids: np.ndarray, labels: np.ndarray,
                   probs: np.ndarray) -> tuple[dict, pd.DataFrame]:
    """Segment and track level scores of one split.

    Parameters
    ----------
    track_ids, labels : numpy.ndarray
        int64 ``(n_segments,)``: track and true class of each segment.
    probs : numpy.ndarray
        ``(n_segments, n_classes)`` segment probabilities.

    Returns
    -------
    scores : dict
        ``segment_acc``, ``track_acc_vote``, ``track_acc_mean``, ``track_f1_mean`` (macro F1 of
        the mean-probability prediction), ``n_segments``, ``n_tracks``; NaN when empty.
    tracks : pandas.DataFrame
        :func:`track_predictions` plus the true class ``label``.
    """
    if len(track_ids) == 0:
        nan = float("nan")
        empty = pd.DataFrame(columns=["vote", "mean", "n_segments", "probs", "label"])
        return {"segment_acc": nan, "track_acc_vote": nan, "track_acc_mean": nan,
                "track_f1_mean": nan, "n_segments": 0, "n_tracks": 0}, empty
    tracks = track_predictions(track_ids, probs)
    truth = pd.Series(np.asarray(labels), index=np.asarray(track_ids)).groupby(level=0).first()
    tracks["label"] = truth.loc[tracks.index].to_numpy()
    scores = {
        "segment_acc": float((np.asarray(probs).argmax(axis=1) == np.asarray(labels)).mean()),
        "track_acc_vote": float((tracks["vote"] == tracks["label"]).mean()),
        "track_acc_mean": float((tracks["mean"] == tracks["label"]).mean()),
        "track_f1_mean": track_scores(tracks["label"], tracks["mean"])["f1_macro"],
        "n_segments": int(len(track_ids)), "n_tracks": int(len(tracks)),
    }
    return scores, tracks


def track_mean_probabilities(track_ids: np.ndarray,
                             probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each track's mean segment probabilities.

    Parameters
    ----------
    track_ids : numpy.ndarray
        int64 ``(n_segments,)``.
    probs : numpy.ndarray
        ``(n_segments, k)``.

    Returns
    -------
    tracks : numpy.ndarray
        int64 ``(n_tracks,)``, sorted.
    mean : numpy.ndarray
        float64 ``(n_tracks, k)``.
    counts : numpy.ndarray
        int64 ``(n_tracks,)`` segments per track.
    """
    uniq, inverse = np.unique(np.asarray(track_ids, dtype=np.int64), return_inverse=True)
    probs = np.asarray(probs, dtype=np.float64)
    counts = np.bincount(inverse, minlength=len(uniq))
    total = np.zeros((len(uniq), probs.shape[1]))
    np.add.at(total, inverse, probs)
    return uniq, total / np.maximum(counts, 1)[:, None], counts.astype(np.int64)


def score_segments_multilabel(track_ids: np.ndarray, labels: np.ndarray,
                              probs: np.ndarray) -> tuple[dict, pd.DataFrame]:
    """Segment and track level scores of one split, multi-label.

    Parameters
    ----------
    track_ids : numpy.ndarray
        int64 ``(n_segments,)``.
    labels : numpy.ndarray
        0/1 ``(n_segments, k)``: each segment carries its track's labels.
    probs : numpy.ndarray
        ``(n_segments, k)`` segment probabilities (sigmoid outputs).

    Returns
    -------
    scores : dict
        ``segment_f1_micro`` (micro F1 of the segments at 0.5: a threshold-free run has none
        better), ``track_roc_auc_macro`` and ``track_pr_auc_macro`` (of the tracks' mean
        probabilities, :func:`fmadask.report.multilabel.ranking_scores`), ``n_segments``,
        ``n_tracks``; NaN when empty.
    tracks : pandas.DataFrame
        Indexed by ``track_id`` (sorted): ``n_segments``, ``probs`` (mean probabilities,
        float32 array) and ``labels`` (int8 array).
    """
    from fmadask.report.multilabel import ranking_scores

    nan = float("nan")
    if len(track_ids) == 0:
        empty = pd.DataFrame(columns=["n_segments", "probs", "labels"])
        return {"segment_f1_micro": nan, "track_roc_auc_macro": nan, "track_pr_auc_macro": nan,
                "n_segments": 0, "n_tracks": 0}, empty
    labels = np.asarray(labels) > 0.5
    uniq, mean, counts = track_mean_probabilities(track_ids, probs)
    first = np.unique(np.asarray(track_ids, dtype=np.int64), return_index=True)[1]
    truth = labels[first]
    predicted = np.asarray(probs) >= 0.5
    denominator = labels.sum() + predicted.sum()
    ranking = ranking_scores(truth, mean)
    scores = {"segment_f1_micro": float(2 * (labels & predicted).sum() / denominator)
              if denominator else nan,
              "track_roc_auc_macro": ranking["roc_auc_macro"],
              "track_pr_auc_macro": ranking["pr_auc_macro"],
              "n_segments": int(len(track_ids)), "n_tracks": int(len(uniq))}
    tracks = pd.DataFrame({"n_segments": counts, "probs": list(mean.astype(np.float32)),
                           "labels": list(truth.astype(np.int8))},
                          index=pd.Index(uniq, name="track_id"))
    return scores, tracks
