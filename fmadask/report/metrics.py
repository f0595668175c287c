"""Classification scores: accuracy, balanced accuracy, F1 (macro and weighted), confusion matrices."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

#: Names of the scores :func:`scores` returns, in table order.
SCORE_NAMES = ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted")


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and F1 of predicted labels.

    Parameters
    ----------
    y_true, y_pred : numpy.ndarray, shape (n,)
        True and predicted class labels (any comparable type).

    Returns
    -------
    dict
        ``accuracy``, ``balanced_accuracy`` (mean over the true classes of each class's recall:
        a model that ignores small genres scores low even when they hold few tracks),
        ``f1_macro`` (unweighted mean over classes) and ``f1_weighted`` (weighted by class
        support), each in [0, 1]; NaN for all when ``n == 0`` (an empty split).
    """
    if len(y_true) == 0:
        return dict.fromkeys(SCORE_NAMES, float("nan"))
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            # zero_division=0: a class never predicted scores F1 = 0 instead of warning.
            "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
            "f1_weighted": float(f1_score(y_true, y_pred, average="weighted", zero_division=0))}


def normalized_confusion(y_true: np.ndarray, y_pred: np.ndarray,
                         labels: np.ndarray | list) -> np.ndarray:
    """Confusion matrix normalised per true class (each row sums to 1).

    Parameters
    ----------
    y_true, y_pred : numpy.ndarray, shape (n,)
        True and predicted labels.
    labels : sequence, length k
        Every class, in the order of the matrix's rows and columns.

    Returns
    -------
    numpy.ndarray, shape (k, k), float
        ``m[i, j]``: share of the tracks of class ``labels[i]`` predicted as ``labels[j]``.
        A class absent from ``y_true`` has a row of zeros.
    """
    counts = confusion_matrix(y_true, y_pred, labels=labels).astype(float)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
