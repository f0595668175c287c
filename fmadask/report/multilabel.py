"""Multi-label genre scores: FMA's ``genres_all`` task (every genre of a track, sub-genres too).

Pure functions of plain inputs, shared by the classical, CNN and fusion stages:

- ``y_true``: a 0/1 label matrix, shape (n tracks, k labels); column ``j`` is genre id
  ``labels[j]``;
- ``proba``: a score matrix of the same shape, higher meaning more likely (a probability for
  every model of fmadask);
- ``parents``: genre id -> parent genre id, 0 above the top-level genres (``genres.csv``'s
  ``parent`` column);
- ``top_true``: each track's ``genre_top`` as a genre id, 0 (or negative) where it has none.

Decision thresholds are chosen on the validation split alone (:func:`choose_thresholds`); the
test split is only scored (:func:`evaluate`). A sub-genre predicted implies its parent
(:func:`enforce_parents`): FMA's ``genres_all`` always lists a genre's ancestors, so a
prediction that breaks the rule is wrong by construction; :func:`parent_violations` counts how
often the raw thresholded predictions broke it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, roc_auc_score

from fmadask.report.plots import _save
from fmadask.report.tables import markdown_table

#: Names of the scores :func:`scores` returns, in table order.
SCORE_NAMES = ("roc_auc_macro", "roc_auc_micro", "pr_auc_macro", "f1_micro", "f1_macro",
               "subset_accuracy", "top_accuracy")
#: Columns of a multi-label ``results.csv`` row (:func:`results_row`), in order.
RESULT_COLUMNS = ("validation_roc_auc_macro", "test_roc_auc_macro", "validation_pr_auc_macro",
                  "test_pr_auc_macro", "test_f1_micro", "test_f1_macro", "test_subset_accuracy",
                  "test_top_accuracy", "test_roc_auc_micro")
#: A label needs this many validation positives for a threshold of its own; rarer labels take
#: the one threshold tuned on all labels pooled (their own F1 curve is noise).
TUNE_MIN_POSITIVES = 5
#: FMA's own figures for the task (its baselines notebook, fma_medium, 151 labels present):
#: exact-match subset accuracy of one-vs-rest logistic regression and SVC.
FMA_BASELINE = "FMA's baselines notebook (fma_medium, 151 labels): subset accuracy LR 13.45 %, SVC 13.64 %"


class Split(NamedTuple):
    """One split's truth and scores, as :func:`evaluate` takes them.

    Attributes
    ----------
    y_true : numpy.ndarray, shape (n, k)
        0/1 labels.
    proba : numpy.ndarray, shape (n, k)
        Scores (probabilities).
    top_true : numpy.ndarray, shape (n,)
        Genre id of each track's ``genre_top``; 0 where it has none.
    """

    y_true: np.ndarray
    proba: np.ndarray
    top_true: np.ndarray


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` measured for one source (a model, the fusion, the prior baseline).

    Attributes
    ----------
    thresholds : numpy.ndarray, shape (k,)
        Per-label decision thresholds, chosen on validation.
    n_fallback : int
        Labels whose threshold is the pooled one (fewer than ``tune_min_positives`` validation
        positives).
    scores : dict
        ``{"validation": {...}, "test": {...}}``, each :func:`scores`'s dict.
    unscored : dict
        Per split, the genre ids left out of the macro scores (too few positives or no
        negative there).
    violations : dict
        Per split, the parent-rule violations of the raw thresholded predictions
        (:func:`parent_violations`), before :func:`enforce_parents` repaired them.
    n_tracks : dict
        Per split, the number of tracks.
    table : pandas.DataFrame
        The test split's :func:`per_label_table`.
    """

    thresholds: np.ndarray
    n_fallback: int
    scores: dict[str, dict[str, float]]
    unscored: dict[str, list[int]]
    violations: dict[str, int]
    n_tracks: dict[str, int]
    table: pd.DataFrame = field(repr=False)


def _check(y_true: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=float)
    if y.ndim != 2 or y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and scores {p.shape} must be matrices of one shape")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("the label matrix must hold only 0 and 1")
    if not np.isfinite(p).all():
        raise ValueError("the score matrix holds NaN or infinite values")
    return y.astype(bool), p


def scored_mask(y_true: np.ndarray, min_positives: int = 1) -> np.ndarray:
    """Which labels a split can score: enough positives, and at least one negative.

    Parameters
    ----------
    y_true : numpy.ndarray, shape (n, k)
        0/1 labels of one split.
    min_positives : int
        Fewest positives a label needs (average precision is undefined without one, ROC-AUC
        without a negative).

    Returns
    -------
    numpy.ndarray of bool, shape (k,)
    """
    y = np.asarray(y_true).astype(bool)
    positives = y.sum(axis=0)
    return (positives >= max(min_positives, 1)) & (positives < len(y))


def unscored_labels(y_true: np.ndarray, labels: Sequence[int], min_positives: int = 1) -> list[int]:
    """The genre ids a split cannot score (see :func:`scored_mask`), in column order."""
    return [int(g) for g, ok in zip(labels, scored_mask(y_true, min_positives)) if not ok]


def _best_f1_cut(y: np.ndarray, p: np.ndarray) -> float:
    """The score at or above which predicting positive maximises F1 on ``(y, p)``.

    Among equal F1s the highest threshold wins (fewest positives predicted). Cuts fall only
    between distinct scores: tracks with equal scores are predicted alike.
    """
    order = np.argsort(-p, kind="stable")
    ranked, hits = p[order], y[order]
    true_pos = np.cumsum(hits)
    predicted = np.arange(1, len(ranked) + 1)
    f1 = 2.0 * true_pos / (predicted + hits.sum())
    end_of_tie = np.r_[ranked[1:] != ranked[:-1], True]
    return float(ranked[int(np.argmax(np.where(end_of_tie, f1, -1.0)))])


def choose_thresholds(y_val: np.ndarray, proba_val: np.ndarray,
                      min_positives: int = TUNE_MIN_POSITIVES) -> tuple[np.ndarray, int]:
    """Per-label decision thresholds that maximise each label's F1 on the validation split.

    Parameters
    ----------
    y_val : numpy.ndarray, shape (n, k)
        0/1 validation labels. Nothing of the test split goes in: thresholds cannot leak it.
    proba_val : numpy.ndarray, shape (n, k)
        Validation scores.
    min_positives : int
        A label with fewer validation positives takes the fallback: the single threshold that
        maximises micro F1 over all labels pooled (tuned on validation too).

    Returns
    -------
    thresholds : numpy.ndarray, shape (k,)
        Predict label ``j`` when ``proba[:, j] >= thresholds[j]``.
    n_fallback : int
        How many labels took the pooled threshold.

    Raises
    ------
    ValueError
        When the validation split holds no positive at all (nothing to tune on).
    """
    y, p = _check(y_val, proba_val)
    if not y.any():
        raise ValueError("the validation split has no positive label: thresholds cannot be chosen")
    pooled = _best_f1_cut(y.ravel(), p.ravel())
    rare = y.sum(axis=0) < min_positives
    thresholds = np.array([pooled if rare[j] else _best_f1_cut(y[:, j], p[:, j])
                           for j in range(y.shape[1])], dtype=float)
    return thresholds, int(rare.sum())


def _ancestors(genre: int, parents: Mapping[int, int]) -> list[int]:
    """``genre``'s parent, grandparent ... up to its top-level genre."""
    chain: list[int] = []
    node = int(genre)
    while int(parents.get(node, 0)) != 0:
        node = int(parents[node])
        if node in chain or len(chain) > len(parents):
            raise ValueError(f"the genre tree has a cycle through genre {node}")
        chain.append(node)
    return chain


def top_level_columns(labels: Sequence[int], parents: Mapping[int, int]) -> np.ndarray:
    """Columns of the top-level genres (parent 0) among ``labels``."""
    return np.array([j for j, g in enumerate(labels) if int(parents.get(int(g), 0)) == 0],
                    dtype=int)


def enforce_parents(pred: np.ndarray, labels: Sequence[int],
                    parents: Mapping[int, int]) -> np.ndarray:
    """Predictions with every predicted genre's ancestors predicted too.

    Parameters
    ----------
    pred : numpy.ndarray of bool, shape (n, k)
        Predicted labels.
    labels : sequence of int, length k
        Genre id of each column.
    parents : mapping of int to int
        Genre id -> parent id (0: top level). Ancestors that are not among ``labels`` are
        skipped (they have no column to set).

    Returns
    -------
    numpy.ndarray of bool, shape (n, k)
        A new matrix; ``pred`` is left as it was.
    """
    out = np.array(pred, dtype=bool, copy=True)
    column = {int(g): j for j, g in enumerate(labels)}
    for j, genre in enumerate(labels):
        # Whole ancestor chains: one pass suffices, whatever the column order.
        up = [column[a] for a in _ancestors(genre, parents) if a in column]
        if up:
            out[:, up] |= out[:, [j]]
    return out


def parent_violations(pred: np.ndarray, labels: Sequence[int],
                      parents: Mapping[int, int]) -> int:
    """Number of (track, genre) pairs where a genre is predicted and its parent is not.

    Only parents that are among ``labels`` count. A broken chain anywhere shows as a broken
    parent link somewhere, so direct parents suffice.
    """
    pred = np.asarray(pred, dtype=bool)
    column = {int(g): j for j, g in enumerate(labels)}
    count = 0
    for j, genre in enumerate(labels):
        parent = int(parents.get(int(genre), 0))
        if parent in column:
            count += int((pred[:, j] & ~pred[:, column[parent]]).sum())
    return count


def predict_labels(proba: np.ndarray, thresholds: np.ndarray, labels: Sequence[int],
                   parents: Mapping[int, int]) -> np.ndarray:
    """Thresholded predictions, parent rule enforced: ``enforce_parents(proba >= thresholds)``.

    Returns
    -------
    numpy.ndarray of bool, shape (n, k)
    """
    return enforce_parents(np.asarray(proba) >= np.asarray(thresholds)[None, :], labels, parents)


def card_genres(proba: np.ndarray, card: Mapping[str, object]) -> list[list[str]]:
    """The genres a multi-label model predicts, named: its card's thresholds, then the parent
    rule (:func:`predict_labels`).

    Parameters
    ----------
    proba : numpy.ndarray, shape (n, k)
        Per-genre probabilities (a file's mean over its segments or pieces, one row per file).
    card : mapping
        A multi-label model card: ``classes`` (titles), ``label_ids``, ``thresholds`` and
        ``parents`` (genre id as text -> parent id), as every kind writes them.

    Returns
    -------
    list of list of str
        Per row, the predicted genres' titles in the card's order.
    """
    parents = {int(g): int(p) for g, p in dict(card["parents"]).items()}
    chosen = predict_labels(np.asarray(proba, dtype=float),
                            np.asarray(card["thresholds"], dtype=float), card["label_ids"],
                            parents)
    return [[c for c, on in zip(card["classes"], row) if on] for row in chosen]


def top_accuracy(proba: np.ndarray, labels: Sequence[int], parents: Mapping[int, int],
                 top_true: np.ndarray) -> float:
    """Top-level genre accuracy: the most probable top-level label against ``genre_top``.

    Parameters
    ----------
    proba : numpy.ndarray, shape (n, k)
        Scores.
    labels, parents
        As for :func:`enforce_parents`.
    top_true : numpy.ndarray, shape (n,)
        Genre id of each track's ``genre_top``; tracks with 0 or less (none) are left out.

    Returns
    -------
    float
        Share of the tracks with a ``genre_top`` whose most probable top-level label is it;
        NaN when no track has one.
    """
    top_true = np.asarray(top_true, dtype=int)
    has = top_true > 0
    columns = top_level_columns(labels, parents)
    if not has.any() or not len(columns):
        return float("nan")
    guess = np.asarray(labels, dtype=int)[columns][np.argmax(np.asarray(proba)[has][:, columns],
                                                             axis=1)]
    return float(np.mean(guess == top_true[has]))


def _f1(y: np.ndarray, pred: np.ndarray, axis: int | None) -> np.ndarray:
    """F1 = 2 TP / (2 TP + FP + FN); NaN where nothing is positive nor predicted."""
    tp = (y & pred).sum(axis=axis)
    denominator = y.sum(axis=axis) + pred.sum(axis=axis)
    return np.divide(2.0 * tp, denominator, out=np.full(np.shape(tp), np.nan),
                     where=np.asarray(denominator) > 0)


def ranking_scores(y_true: np.ndarray, proba: np.ndarray,
                   min_positives: int = 1) -> dict[str, float]:
    """Macro ROC-AUC and macro average precision over the labels a split can score.

    The threshold-free part of :func:`scores` (what a training loop follows per epoch).

    Returns
    -------
    dict
        ``roc_auc_macro`` and ``pr_auc_macro``; NaN when no label can be scored.
    """
    y, p = _check(y_true, proba)
    keep = scored_mask(y, min_positives)
    if not keep.any():
        return {"roc_auc_macro": float("nan"), "pr_auc_macro": float("nan")}
    return {"roc_auc_macro": float(roc_auc_score(y[:, keep], p[:, keep], average="macro")),
            "pr_auc_macro": float(average_precision_score(y[:, keep], p[:, keep],
                                                          average="macro"))}


def scores(y_true: np.ndarray, proba: np.ndarray, pred: np.ndarray, labels: Sequence[int],
           parents: Mapping[int, int], top_true: np.ndarray,
           min_positives: int = 1) -> dict[str, float]:
    """The multi-label scores of one split.

    Parameters
    ----------
    y_true : numpy.ndarray, shape (n, k)
        0/1 labels.
    proba : numpy.ndarray, shape (n, k)
        Scores, for the ranking metrics (ROC-AUC, average precision, top-level accuracy).
    pred : numpy.ndarray of bool, shape (n, k)
        Predicted labels (:func:`predict_labels`), for F1 and subset accuracy.
    labels, parents
        As for :func:`enforce_parents`.
    top_true : numpy.ndarray, shape (n,)
        As for :func:`top_accuracy`.
    min_positives : int
        Macro averages run over the labels :func:`scored_mask` keeps; list the others with
        :func:`unscored_labels` (they are reported, never silently dropped).

    Returns
    -------
    dict
        :data:`SCORE_NAMES`, each in [0, 1] or NaN where undefined: ``roc_auc_macro`` and
        ``pr_auc_macro`` (unweighted means over scored labels of ROC-AUC and average
        precision), ``roc_auc_micro`` (all (track, label) pairs pooled), ``f1_micro`` (pooled
        over all labels), ``f1_macro`` (mean over scored labels), ``subset_accuracy`` (share
        of tracks whose every label is right), ``top_accuracy`` (:func:`top_accuracy`).
    """
    y, p = _check(y_true, proba)
    pred = np.asarray(pred, dtype=bool)
    if pred.shape != y.shape:
        raise ValueError(f"predictions {pred.shape} and labels {y.shape} differ in shape")
    if len(y) == 0:
        return dict.fromkeys(SCORE_NAMES, float("nan"))
    keep = scored_mask(y, min_positives)
    nan = float("nan")
    ranking = ranking_scores(y, p, min_positives)
    return {
        "roc_auc_macro": ranking["roc_auc_macro"],
        "roc_auc_micro": float(roc_auc_score(y.ravel(), p.ravel()))
        if y.any() and not y.all() else nan,
        "pr_auc_macro": ranking["pr_auc_macro"],
        "f1_micro": float(_f1(y, pred, None)),
        "f1_macro": float(np.mean(_f1(y[:, keep], pred[:, keep], 0))) if keep.any() else nan,
        "subset_accuracy": float(np.mean((y == pred).all(axis=1))),
        "top_accuracy": top_accuracy(p, labels, parents, top_true),
    }


def prior_probabilities(y_train: np.ndarray, n_rows: int) -> np.ndarray:
    """The label-prior baseline: every track scored by each label's training prevalence.

    Parameters
    ----------
    y_train : numpy.ndarray, shape (n_train, k)
        0/1 training labels.
    n_rows : int
        Tracks to score.

    Returns
    -------
    numpy.ndarray, shape (n_rows, k)
        Row after row the same prevalences: ROC-AUC 0.5 and average precision = the split's
        prevalence per label, the floor any model must clear.
    """
    y = np.asarray(y_train, dtype=float)
    if y.ndim != 2 or len(y) == 0:
        raise ValueError("the training label matrix must be a non-empty (n, k) matrix")
    return np.repeat(y.mean(axis=0, keepdims=True), int(n_rows), axis=0)


def per_label_table(y_true: np.ndarray, proba: np.ndarray, pred: np.ndarray,
                    labels: Sequence[int], parents: Mapping[int, int],
                    names: Mapping[int, str], thresholds: np.ndarray) -> pd.DataFrame:
    """One row per label: its support, average precision and F1 in one split.

    Parameters
    ----------
    y_true, proba, pred
        As for :func:`scores`.
    labels, parents
        As for :func:`enforce_parents`.
    names : mapping of int to str
        Genre titles (``genres.csv``'s ``title``); an id without one shows as its number.
    thresholds : numpy.ndarray, shape (k,)
        The labels' decision thresholds.

    Returns
    -------
    pandas.DataFrame
        Columns ``genre_id``, ``genre``, ``top_level`` (title of its top-level genre),
        ``depth`` (0 for a top-level genre), ``support`` (positives), ``ap`` (NaN without a
        positive), ``f1`` (NaN with no positive and nothing predicted), ``threshold``; sorted
        by top-level genre, then support (largest first).
    """
    y, p = _check(y_true, proba)
    pred = np.asarray(pred, dtype=bool)
    rows = []
    for j, genre in enumerate(labels):
        chain = _ancestors(int(genre), parents)
        root = chain[-1] if chain else int(genre)
        positives = int(y[:, j].sum())
        ap = (float(average_precision_score(y[:, j], p[:, j])) if positives else float("nan"))
        rows.append({"genre_id": int(genre), "genre": str(names.get(int(genre), genre)),
                     "top_level": str(names.get(root, root)), "depth": len(chain),
                     "support": positives, "ap": ap,
                     "f1": float(_f1(y[:, j], pred[:, j], None)),
                     "threshold": float(thresholds[j])})
    table = pd.DataFrame(rows, columns=["genre_id", "genre", "top_level", "depth", "support",
                                        "ap", "f1", "threshold"])
    return table.sort_values(["top_level", "support", "genre_id"],
                             ascending=[True, False, True], ignore_index=True)


def evaluate(validation: Split, test: Split, labels: Sequence[int], parents: Mapping[int, int],
             names: Mapping[int, str], min_positives: int = 1,
             tune_min_positives: int = TUNE_MIN_POSITIVES) -> Evaluation:
    """Thresholds from validation, then every score on validation and test.

    Parameters
    ----------
    validation, test : Split
        The two splits' labels, scores and ``genre_top`` ids. ``test`` is only scored: nothing
        chosen here depends on it.
    labels, parents, names
        As for :func:`per_label_table`.
    min_positives : int
        As for :func:`scores`.
    tune_min_positives : int
        As ``min_positives`` of :func:`choose_thresholds`.

    Returns
    -------
    Evaluation
    """
    thresholds, n_fallback = choose_thresholds(validation.y_true, validation.proba,
                                               tune_min_positives)
    measured: dict[str, dict[str, float]] = {}
    unscored: dict[str, list[int]] = {}
    violations: dict[str, int] = {}
    n_tracks: dict[str, int] = {}
    table = pd.DataFrame()
    for name, split in (("validation", validation), ("test", test)):
        raw = np.asarray(split.proba) >= thresholds[None, :]
        pred = enforce_parents(raw, labels, parents)
        measured[name] = scores(split.y_true, split.proba, pred, labels, parents,
                                split.top_true, min_positives)
        unscored[name] = unscored_labels(split.y_true, labels, min_positives)
        violations[name] = parent_violations(raw, labels, parents)
        n_tracks[name] = len(split.y_true)
        if name == "test":
            table = per_label_table(split.y_true, split.proba, pred, labels, parents, names,
                                    thresholds)
    return Evaluation(thresholds, n_fallback, measured, unscored, violations, n_tracks, table)


def results_row(evaluation: Evaluation) -> dict[str, float]:
    """The :data:`RESULT_COLUMNS` of one source, for its ``results.csv`` row."""
    row = {}
    for column in RESULT_COLUMNS:
        split, _, score = column.partition("_")
        row[column] = evaluation.scores[split][score]
    return row


def per_label_figure(table: pd.DataFrame, n_tracks: int, path: str | Path,
                     title: str = "") -> Path:
    """Average precision of every label against its support, coloured by top-level genre.

    Each point is a genre (large, outlined: a top-level genre; small: a sub-genre). The dashed
    curve is what the label prior scores (AP = support / ``n_tracks``): distance above it is
    what the model learnt, and rare sub-genres show where it learnt least.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`per_label_table` of one split.
    n_tracks : int
        Tracks in that split.
    path : str or Path
        PNG file to write.
    title : str
        Figure title (the source and split).

    Returns
    -------
    Path
        ``path``.
    """
    shown = table[table["support"] > 0]
    fig = Figure(figsize=(9.5, 6.0))
    ax = fig.subplots()
    groups = sorted(shown["top_level"].unique())
    palette = [f"C{i}" for i in range(10)] + ["black", "grey", "olive", "navy", "maroon", "teal"]
    for i, group in enumerate(groups):
        rows = shown[shown["top_level"] == group]
        colour = palette[i % len(palette)]
        top = rows["depth"] == 0
        ax.scatter(rows.loc[~top, "support"], rows.loc[~top, "ap"], s=18, alpha=0.75,
                   color=colour, linewidths=0)
        ax.scatter(rows.loc[top, "support"], rows.loc[top, "ap"], s=70, color=colour,
                   edgecolors="black", linewidths=0.8, label=group)
    if len(shown) and n_tracks > 0:
        support = np.geomspace(int(shown["support"].min()),
                               max(int(shown["support"].max()), 2), 50)
        ax.plot(support, support / n_tracks, linestyle="--", color="grey",
                label="label prior (chance)")
    ax.set_xscale("log")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("positives in the split (log scale)")
    ax.set_ylabel("average precision")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5),
              title="top-level genre (outlined)", title_fontsize=7)
    ax.set_title(title or "average precision per genre")
    return _save(fig, path)


def _genre_list(ids: Sequence[int], names: Mapping[int, str], most: int = 20) -> str:
    shown = ", ".join(str(names.get(g, g)) for g in ids[:most])
    return shown + (f" and {len(ids) - most} more" if len(ids) > most else "")


def markdown_section(results: pd.DataFrame, featured: Evaluation, names: Mapping[int, str],
                     figure: str | None = None, min_positives: int = 1) -> str:
    """The multi-label part of a report: sources' scores, what was left out, the picture.

    Parameters
    ----------
    results : pandas.DataFrame
        One row per source (models, the label-prior baseline, ...): a ``model`` column and
        :data:`RESULT_COLUMNS`.
    featured : Evaluation
        The source whose thresholds, left-out labels, parent-rule count and per-label table
        are shown (the best one).
    names : mapping of int to str
        Genre titles.
    figure : str, optional
        File name of :func:`per_label_figure`'s picture, relative to the report.
    min_positives : int
        The ``min_positives`` the scores were computed with (for the text).

    Returns
    -------
    str
        Markdown, ending with a newline.
    """
    k = len(featured.thresholds)
    lines = [
        f"Multi-label genres (`genres_all`): {k} labels; validation "
        f"{featured.n_tracks['validation']} tracks, test {featured.n_tracks['test']}. "
        "ROC-AUC and PR-AUC (average precision) are macro means over labels; F1 and subset "
        "accuracy use per-label thresholds chosen on validation (maximum F1; the "
        f"{featured.n_fallback} labels with fewer than {TUNE_MIN_POSITIVES} validation "
        "positives take one threshold tuned on all labels pooled), with every predicted "
        "sub-genre's parent predicted too; top-level accuracy takes the most probable "
        "top-level genre against the track's `genre_top`, where it has one.",
        "",
        markdown_table(results, ["model", *RESULT_COLUMNS],
                       ["model", "val ROC-AUC", "test ROC-AUC", "val PR-AUC", "test PR-AUC",
                        "test F1 micro", "test F1 macro", "test subset acc.", "test top-level acc.",
                        "test ROC-AUC micro"]),
        f"For comparison, {FMA_BASELINE}.",
        "",
    ]
    for split in ("validation", "test"):
        left = featured.unscored[split]
        rule = ("no positive" if min_positives <= 1
                else f"fewer than {min_positives} positives")
        lines.append(f"- {split}: {len(left)} of {k} labels not in the macro scores ({rule} "
                     "or no negative)"
                     + (f": {_genre_list(left, names)}" if left else ""))
    lines.append(f"- genre tree: the thresholded predictions broke 'a sub-genre implies its "
                 f"parent' {featured.violations['test']} times on test "
                 f"({featured.violations['validation']} on validation); the scores above are "
                 "of the predictions with the rule enforced")
    lines.append("")
    if figure:
        lines += [f"![average precision per genre]({figure})", ""]
    table = featured.table
    lines.append(markdown_table(table, ["genre", "top_level", "support", "ap", "f1", "threshold"],
                                ["genre", "top-level genre", "test support", "AP", "F1",
                                 "threshold"]))
    return "\n".join(lines)
