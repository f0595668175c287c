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
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from fmadask.errors import DataError

GENRE_TOP = "genre_top"
GENRES_ALL = "genres_all"


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
    parents : mapping of int to int
        ``genres_all``: genre id -> parent id (0 above the top-level genres), for the genre
        tree rule (:mod:`fmadask.report.multilabel`).
    """

    target: str
    classes: tuple[str, ...]
    labels: tuple[int, ...] = ()
    parents: Mapping[int, int] = field(default_factory=dict)

    @property
    def multilabel(self) -> bool:
        """True for ``genres_all``: one independent yes/no output per genre."""
        return self.target == GENRES_ALL

    @property
    def score_name(self) -> str:
        """The training score :meth:`hits` counts, as metrics.csv names it."""
        return "f1_micro" if self.multilabel else "acc"

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


def task_for(target: str, index: pd.DataFrame, genres: pd.DataFrame | None) -> Task:
    """The task of ``target`` on a run's spectrogram index.

    Parameters
    ----------
    target : {'genre_top', 'genres_all'}
        What to learn.
    index : pandas.DataFrame
        The spectrogram index (``genre_top``, ``split`` and, for ``genres_all``,
        ``genres_all``: a list of genre ids per track).
    genres : pandas.DataFrame, optional
        The run's genre tree (``parent``, ``title`` per genre id); ``genres_all`` needs it.

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
        raise DataError("this run's spectrograms record no genres_all: featurize again with "
                        "target genres_all to train the multi-label CNN")
    training = index.loc[index["split"] == "training", "genres_all"]
    labels = sorted({int(g) for ids in training for g in ids if int(g) in genres.index})
    if not labels:
        raise DataError("no training track of this run has a genre: the multi-label CNN has "
                        "nothing to learn")
    parents = {int(g): int(p) for g, p in genres["parent"].items()}
    return Task(GENRES_ALL, tuple(str(genres.at[g, "title"]) for g in labels), tuple(labels),
                parents)
