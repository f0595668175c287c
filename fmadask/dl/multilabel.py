"""The multi-label CNN's final outputs (``genres_all``): thresholds, scores, predictions, report.

Plain numpy and pandas on what the ranks gathered (no torch): each track's mean segment
probabilities per genre, its labels and split. Thresholds are chosen on the validation tracks
only and every score comes from :mod:`fmadask.report.multilabel`, as for the classical models
and the fusion.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fmadask.dl.task import GenreTree
from fmadask.runfolder import PER_LABEL_FIGURE
from fmadask.report.multilabel import (Evaluation, Split, evaluate, markdown_section,
                                       per_label_figure, results_row)



@dataclass(frozen=True)
class Finished:
    """What a multi-label run ends with.

    Attributes
    ----------
    evaluation : Evaluation
        Thresholds (chosen on validation) and the scores of validation and test.
    predictions : pandas.DataFrame
        ``predictions.parquet``: ``track_id``, ``split``, ``genre_top`` (None where the track
        has none), ``genres_all`` (the track's genre ids), ``n_segments``, then ``p_<genre>``
        per output (mean segment probability).
    """

    evaluation: Evaluation
    predictions: pd.DataFrame


def finish(classes: list[str], labels: list[int], genres: GenreTree, tracks: pd.DataFrame,
           index: pd.DataFrame) -> Finished:
    """Choose the thresholds on validation and score validation and test.

    Parameters
    ----------
    classes, labels
        The task's output titles and genre ids (:class:`fmadask.dl.task.Task`).
    genres : GenreTree
        The run's genre tree: parents and titles of every genre id.
    tracks : pandas.DataFrame
        Indexed by track id: ``split``, ``probs`` (mean probabilities, one array per track),
        ``labels`` (0/1 array over the outputs), ``n_segments``
        (:func:`fmadask.dl.evaluate.score_segments_multilabel`'s tracks with their split).
    index : pandas.DataFrame
        The spectrogram index (``track_id``, ``genre_top``, ``genres_all``).

    Returns
    -------
    Finished
    """
    by_id = index.set_index("track_id")
    genre_top = by_id["genre_top"].reindex(tracks.index)
    ids = {title: genre for genre, title in genres.names.items()}
    # (a title genres.csv lacks counts as no genre_top: never a crash after the training)
    top_true = np.array([0 if pd.isna(t) else ids.get(t, 0) for t in genre_top], dtype=np.int64)
    splits = {}
    for split in ("validation", "test"):
        mask = (tracks["split"] == split).to_numpy()
        part = tracks[mask]
        k = len(labels)
        splits[split] = Split(np.stack(part["labels"]).astype(int) if len(part)
                              else np.zeros((0, k), int),
                              np.stack(part["probs"]).astype(float) if len(part)
                              else np.zeros((0, k)), top_true[mask])
    evaluation = evaluate(splits["validation"], splits["test"], labels, genres.parents,
                          genres.names)
    preds = pd.DataFrame({"track_id": tracks.index.to_numpy(dtype=np.int64),
                          "split": tracks["split"].to_numpy(),
                          "genre_top": [None if pd.isna(t) else str(t) for t in genre_top],
                          "genres_all": [list(map(int, g)) for g in
                                         by_id["genres_all"].reindex(tracks.index)],
                          "n_segments": tracks["n_segments"].to_numpy(dtype=np.int64)})
    probs = np.stack(tracks["probs"]) if len(tracks) else np.zeros((0, len(classes)))
    for i, c in enumerate(classes):
        preds[f"p_{c}"] = probs[:, i]
    return Finished(evaluation, preds)


def card_fields(labels: list[int], genres: GenreTree, finished: Finished) -> dict:
    """What a multi-label model card adds: the target, each output's genre id, its threshold
    (chosen on validation) and the genre tree (for the parent rule at prediction)."""
    return {"target": "genres_all", "label_ids": [int(g) for g in labels],
            "thresholds": [float(t) for t in finished.evaluation.thresholds],
            "parents": {str(g): int(p) for g, p in sorted(genres.parents.items())}}


def report_section(out: Path, arch: str, finished: Finished) -> str:
    """The report's multi-label part; draws the per-label picture into ``out``."""
    evaluation = finished.evaluation
    names = dict(zip(evaluation.table["genre_id"], evaluation.table["genre"]))
    per_label_figure(evaluation.table, evaluation.n_tracks["test"], out / PER_LABEL_FIGURE,
                     title=f"CNN {arch}, test: average precision per genre")
    results = pd.DataFrame([{"model": f"cnn {arch}", **results_row(evaluation)}])
    return markdown_section(results, evaluation, names, figure=PER_LABEL_FIGURE)
