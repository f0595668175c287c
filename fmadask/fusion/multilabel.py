"""Multi-label fusion (``genres_all``): a multi-label classical model and a multi-label CNN.

The same shape as the single-label fusion (:mod:`fmadask.fusion.stage`): on the tracks both
parts scored, one weight is fitted on validation only
(:func:`fmadask.fusion.pool.fit_label_weight`), the parts are pooled label by label
(:func:`fmadask.fusion.pool.pool_labels`), and every source -- each part, the fusion and the
label-prior baseline -- gets its own thresholds chosen on validation and its scores on validation
and test (:func:`fmadask.report.multilabel.evaluate`). Writes into the fusion folder::

    model.json            kind 'fusion', target 'genres_all', labels, the fusion's thresholds,
                          the genre tree, weights, the parts' folders
    results.csv           one row per source: source, model, the multi-label result columns
                          (fmadask.report.multilabel.RESULT_COLUMNS), validation/test tracks
    weights.csv           validation macro PR-AUC and binary cross-entropy of every weight
    predictions.parquet   per track: split, genre_top, genres_all, p_<genre> of the fusion
    per_label_ap.png      the fusion's test average precision per genre
    report.md             the table, the weight, what the scores left out, the picture
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fmadask.atomic import atomic_path, write_json
from fmadask.errors import DataError
from fmadask.fusion.pool import fit_label_weight, pool_labels
from fmadask.report.multilabel import (RESULT_COLUMNS, Evaluation, Split, evaluate,
                                       markdown_section, per_label_figure, results_row)
from fmadask.runfolder import (MODEL_CARD, PREDICTIONS_FILE, REPORT_FILE, RESULTS_FILE,
                               PER_LABEL_FIGURE, WEIGHTS_TABLE)

#: Columns of a multi-label fusion's results.csv.
COLUMNS = ("source", "model", *RESULT_COLUMNS, "validation_tracks", "test_tracks")


@dataclass(frozen=True)
class Parts:
    """What the two parts say about the same tracks, in the same order.

    Attributes
    ----------
    track_ids : numpy.ndarray
        int64 ``(n,)``.
    split : numpy.ndarray
        ``'validation'`` or ``'test'`` per track.
    y : numpy.ndarray
        0/1 ``(n, k)``: each track's genres among ``labels``.
    top_true : numpy.ndarray
        int64 ``(n,)``: the genre id of each track's ``genre_top``, 0 where it has none.
    probs : dict
        ``{'classical': (n, k), 'cnn': (n, k)}`` per-label probabilities.
    prior : numpy.ndarray
        ``(k,)`` each label's prevalence among the training tracks (the label-prior baseline).
    labels : list of int
        Genre id of each column.
    parents, names : dict
        The genre tree: genre id -> parent id (0 at the top), genre id -> title.
    """

    track_ids: np.ndarray
    split: np.ndarray
    y: np.ndarray
    top_true: np.ndarray
    probs: dict[str, np.ndarray]
    prior: np.ndarray
    labels: list[int]
    parents: dict[int, int]
    names: dict[int, str]


@dataclass(frozen=True)
class Fused:
    """The fitted fusion: its weight and every source's evaluation and probabilities."""

    weight: float
    trials: list[dict]
    evaluations: dict[str, Evaluation]
    probs: dict[str, np.ndarray]


def fit(parts: Parts) -> Fused:
    """Fit the weight on the validation tracks, pool, and evaluate every source.

    The weight and each source's thresholds see the validation rows only; the test rows are
    scored with them afterwards.
    """
    val, test = parts.split == "validation", parts.split == "test"
    weight, trials = fit_label_weight(parts.probs["classical"][val], parts.probs["cnn"][val],
                                      parts.y[val])
    probs = {**parts.probs,
             "fusion": pool_labels([parts.probs["classical"], parts.probs["cnn"]],
                                   [weight, 1.0 - weight]),
             "prior": np.repeat(parts.prior[None, :], len(parts.y), axis=0)}
    evaluations = {source: evaluate(Split(parts.y[val], p[val], parts.top_true[val]),
                                    Split(parts.y[test], p[test], parts.top_true[test]),
                                    parts.labels, parts.parents, parts.names)
                   for source, p in probs.items()}
    return Fused(weight, trials, evaluations, probs)


def results_table(fused: Fused, names: dict[str, str], parts: Parts) -> pd.DataFrame:
    """results.csv: the parts, the fusion and the label-prior baseline, one row each."""
    tracks = {"validation_tracks": int((parts.split == "validation").sum()),
              "test_tracks": int((parts.split == "test").sum())}
    rows = [{"source": source, "model": names[source],
             **results_row(fused.evaluations[source]), **tracks}
            for source in ("classical", "cnn", "fusion", "prior")]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def write(out: Path, card: dict, fused: Fused, results: pd.DataFrame, parts: Parts,
          genres_all: list[list[int]], genre_top: list[str | None]) -> None:
    """model.json (with ``card``'s parts, weights and sources), results.csv, weights.csv,
    predictions.parquet, the per-label picture and report.md of a multi-label fusion."""
    evaluation = fused.evaluations["fusion"]
    write_json({**card, "target": "genres_all", "label_ids": [int(g) for g in parts.labels],
                "thresholds": [float(t) for t in evaluation.thresholds],
                "parents": {str(g): int(p) for g, p in sorted(parts.parents.items())},
                "results": json.loads(results.to_json(orient="records"))},
               out / MODEL_CARD)
    with atomic_path(out / RESULTS_FILE) as tmp:
        results.to_csv(tmp, index=False)
    with atomic_path(out / WEIGHTS_TABLE) as tmp:
        pd.DataFrame(fused.trials).to_csv(tmp, index=False)
    preds = pd.DataFrame({"track_id": parts.track_ids, "split": parts.split,
                          "genre_top": genre_top, "genres_all": genres_all})
    for i, c in enumerate(card["classes"]):
        preds[f"p_{c}"] = fused.probs["fusion"][:, i]
    with atomic_path(out / PREDICTIONS_FILE) as tmp:
        preds.to_parquet(tmp, index=False)
    per_label_figure(evaluation.table, evaluation.n_tracks["test"], out / PER_LABEL_FIGURE,
                     title="fusion, test: average precision per genre")
    shown = results.assign(model=[f"{s}: {m}" for s, m in zip(results["source"],
                                                               results["model"])])
    lines = ["# Fusion of the classical model and the CNN (multi-label, `genres_all`)", "",
             f"Per genre, a weighted mean of the parts' log-odds: classical "
             f"`{results['model'].iloc[0]}` x {fused.weight:.2f}, CNN "
             f"`{results['model'].iloc[1]}` x {1 - fused.weight:.2f}; the weight was chosen on "
             "the validation split only, by macro average precision (weights.csv). Each source "
             "has its own thresholds, chosen on validation. Scores on the tracks both parts "
             "scored; 'prior' scores every track by each genre's training prevalence.", "",
             markdown_section(shown, evaluation, parts.names, figure=PER_LABEL_FIGURE)]
    with atomic_path(out / REPORT_FILE) as tmp:
        tmp.write_text("\n".join(lines))


def top_ids(genre_top: pd.Series, names: dict[int, str]) -> np.ndarray:
    """Genre id of each ``genre_top`` title, 0 where a track has none."""
    ids = {title: genre for genre, title in names.items()}
    return np.array([ids.get(t, 0) if isinstance(t, str) else 0 for t in genre_top],
                    dtype=np.int64)


def check_labels(classical: list[int], cnn: list[int]) -> None:
    """Refuse parts that learnt different genre sets (other runs or splits)."""
    if list(classical) != list(cnn):
        raise DataError(f"the classical model's genres {list(classical)} differ from the "
                        f"CNN's {list(cnn)}: train both on the same run folder and split")
