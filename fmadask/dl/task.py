"""What the CNN learns: one top-level genre per track, or every genre of a track.

- ``genre_top`` (the study's task): one softmax over the top-level genres, cross-entropy, a
  track's genre the vote or the mean probability of its segments;
- ``genres_all`` (FMA's multi-label task, issue 22): one sigmoid per genre id (top-level genres
  and sub-genres), binary cross-entropy, a track's probabilities the mean of its segments'.

:class:`Task` holds the difference, so the trainer's loop is one loop: its outputs (names and,
multi-label, genre ids and the genre tree), the targets of index rows, the loss, the
probabilities of logits and the running training score. The labels come from the run's
spectrogram index (``genre_top``, ``genres_all``), never from tracks.csv.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from fmadask import storage
from fmadask.dl.dataset import Spectrograms
from fmadask.errors import DataError

GENRE_TOP = "genre_top"
GENRES_ALL = "genres_all"


@dataclass(frozen=True)
class GenreTree:
    """FMA's genre hierarchy as plain maps (from the run's ``genres`` record).

    Attributes
    ----------
    parents : mapping of int to int
        Genre id -> parent id (0 above the top-level genres).
    names : mapping of int to str
        Genre id -> title.
    """

    parents: Mapping[int, int]
    names: Mapping[int, str]

    @classmethod
    def from_frame(cls, genres: pd.DataFrame) -> GenreTree:
        """From a genres table indexed by genre id with ``parent`` and ``title``."""
        return cls({int(g): int(p) for g, p in genres["parent"].items()},
                   {int(g): str(t) for g, t in genres["title"].items()})


@dataclass(frozen=True)
class Task:
    """The net's outputs and how they are trained and read.

    Attributes
    ----------
    target : {'genre_top', 'genres_all'}
        The task.
    classes : tuple of str
        Name of each output, in order: genre titles.
    labels : tuple of int
        ``genres_all``: the genre id of each output (empty for ``genre_top``).
    genres : GenreTree, optional
        ``genres_all``: the genre tree (the parent rule, titles).
    """

    target: str
    classes: tuple[str, ...]
    labels: tuple[int, ...] = ()
    genres: GenreTree | None = None

    @property
    def multilabel(self) -> bool:
        """True for ``genres_all``: one independent yes/no output per genre."""
        return self.target == GENRES_ALL

    @property
    def score_name(self) -> str:
        """The training score :meth:`hits` counts, as metrics.csv names it."""
        return "f1_micro" if self.multilabel else "acc"

    @property
    def epoch_columns(self) -> dict[str, str]:
        """metrics.csv's validation columns of each epoch -> their key in the split's scores
        (:func:`fmadask.dl.evaluate.score_segments` or ``score_segments_multilabel``); the last
        is the track-level figure the epoch's log line shows."""
        if self.multilabel:
            return {"val_f1_micro": "segment_f1_micro",
                    "val_track_roc_auc_macro": "track_roc_auc_macro",
                    "val_track_pr_auc_macro": "track_pr_auc_macro"}
        return {"val_acc": "segment_acc", "val_track_acc_vote": "track_acc_vote",
                "val_track_acc_mean": "track_acc_mean"}

    def usable(self, tracks: pd.DataFrame) -> pd.DataFrame:
        """The index rows this task can learn from: those with a ``genre_top``, or with at
        least one genre."""
        if self.multilabel:
            return tracks[tracks["genres_all"].map(len) > 0]
        return tracks[tracks["genre_top"].notna()]

    def targets(self, tracks: pd.DataFrame) -> np.ndarray:
        """Each row's target: int64 class indices ``(n,)``, or float32 0/1 rows ``(n, k)``
        (genre ids outside :attr:`labels` are ignored: no output learns them).

        Raises
        ------
        DataError
            A ``genre_top`` that is not among :attr:`classes`.
        """
        if self.multilabel:
            column = {g: j for j, g in enumerate(self.labels)}
            out = np.zeros((len(tracks), len(self.labels)), dtype=np.float32)
            for i, ids in enumerate(tracks["genres_all"]):
                out[i, [column[int(g)] for g in ids if int(g) in column]] = 1.0
            return out
        lookup = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted(set(tracks["genre_top"]) - set(lookup))
        if unknown:
            raise DataError(f"genres {unknown} of the spectrogram index are not among the "
                            f"model's classes {list(self.classes)}")
        return tracks["genre_top"].map(lookup).to_numpy(dtype=np.int64)

    def loss(self, logits: torch.Tensor, target: torch.Tensor,
             reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy (class indices or soft class targets), or binary cross-entropy
        averaged over the labels; ``reduction='none'`` gives one value per segment."""
        if not self.multilabel:
            return F.cross_entropy(logits, target, reduction=reduction)
        per_label = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none")
        per_segment = per_label.mean(dim=1)
        return per_segment if reduction == "none" else per_segment.mean()

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax over the classes, or one sigmoid per label."""
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, 1)

    def hits(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Numerator and denominator of the training score of a batch, to be summed over
        batches and ranks: correct and segments (accuracy), or twice the true positives and
        positives plus predictions at 0.5 (micro F1)."""
        if not self.multilabel:
            return (logits.argmax(1) == y).sum().double(), torch.tensor(
                float(len(y)), dtype=torch.float64, device=logits.device)
        truth = y > 0.5
        predicted = logits > 0.0            # sigmoid(logit) > 0.5
        return (2 * (truth & predicted).sum()).double(), (truth.sum() + predicted.sum()).double()


def task_for(target: str, index: pd.DataFrame, genres: GenreTree | None) -> Task:
    """The task of ``target`` on a run's spectrogram index.

    Parameters
    ----------
    target : {'genre_top', 'genres_all'}
        What to learn.
    index : pandas.DataFrame
        The spectrogram index (``genre_top``, ``split`` and, for ``genres_all``,
        ``genres_all``: a list of genre ids per track).
    genres : GenreTree, optional
        The run's genre tree; ``genres_all`` needs it.

    Returns
    -------
    Task
        ``genre_top``: the sorted genres of the rows that have one. ``genres_all``: every genre
        id with a positive among the training rows, ascending, named by their titles.

    Raises
    ------
    DataError
        The index cannot serve ``target`` (no ``genres_all`` recorded, no genre tree, no
        training positive).
    """
    if target != GENRES_ALL:
        present = index["genre_top"].dropna()
        return Task(GENRE_TOP, tuple(sorted(present.unique().tolist())))
    if "genres_all" not in index or genres is None:
        raise DataError("the spectrogram index carries no genres_all: open it with open_task")
    training = index.loc[index["split"] == "training", "genres_all"]
    labels = sorted({int(g) for ids in training for g in ids if int(g) in genres.names})
    if not labels:
        raise DataError("no training track of this run has a genre: the multi-label CNN has "
                        "nothing to learn")
    for split, why in (("validation", "the multi-label CNN's thresholds cannot be chosen"),
                       ("test", "the multi-label CNN would score nothing")):
        ids_of = index.loc[index["split"] == split, "genres_all"]
        if not any(int(g) in labels for ids in ids_of for g in ids):
            raise DataError(f"no {split} track of this run has a genre the training tracks "
                            f"have: {why}")
    return Task(GENRES_ALL, tuple(genres.names[g] for g in labels), tuple(labels), genres)



def open_task(target: str, data: Spectrograms, run_dir: str | Path,
              storage_options: Mapping[str, Any] | None = None) -> tuple[Task, Spectrograms]:
    """The task of ``target`` on a run's spectrograms, read from what featurize recorded.

    Parameters
    ----------
    target : {'genre_top', 'genres_all'}
        What to learn.
    data : Spectrograms
        The run's spectrograms (:func:`fmadask.dl.dataset.open_spectrograms`).
    run_dir : str or Path
        The run folder: ``labels.parquet`` and ``genres.parquet`` (multi-label).
    storage_options : mapping, optional
        fsspec options of a URL run folder.

    Returns
    -------
    task : Task
    data : Spectrograms
        ``data``, its index with each clip's ``genres_all`` for the multi-label task.

    Raises
    ------
    DataError
        The run cannot serve ``target`` (see :func:`task_for`).
    """
    if target != GENRES_ALL:
        return task_for(target, data.index, None), data
    from fmadask.runlabels import read_labels

    recorded = read_labels(run_dir, storage_options)
    if recorded is None:
        raise DataError(f"{storage.redact(run_dir)} records no genres_all (featurized by an "
                        "older fmadask): featurize it again to train the multi-label CNN")
    labels, genres = recorded
    by_track = labels["genres_all"].to_dict()
    index = data.index.assign(genres_all=[by_track.get(int(t), []) for t in data.index["track_id"]])
    return task_for(target, index, GenreTree.from_frame(genres)), replace(data, index=index)
