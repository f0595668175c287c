"""Pooling two models' class probabilities, with a weight chosen on the validation split.

The rule is a weighted geometric mean (a log-linear pool) of the parts' probabilities,
renormalised: ``p ∝ p_classical ** w * p_cnn ** (1 - w)``. It has one parameter, so the few
validation tracks of a small data set can choose it without over-fitting, and unlike an average it
lets a confident part overrule an unsure one. ``w`` is chosen on a grid by validation accuracy,
ties broken by validation log-loss and then by closeness to 0.5. Only validation probabilities and
labels enter :func:`fit_weight`; test predictions are made with the weight it returns.

Multi-label (``genres_all``): each label is a yes/no question of its own, so the same log-linear
pool runs per label on its two outcomes, which is a weighted mean of the parts' log-odds
(:func:`pool_labels`); the weight is chosen by validation macro average precision, ties broken
by validation binary cross-entropy and closeness to 0.5 (:func:`fit_label_weight`).
"""
from __future__ import annotations

import numpy as np

#: Probabilities are floored here before the logarithm (a part that says 0 must not veto).
FLOOR = 1e-6
#: Candidate weights of the first part.
GRID = np.round(np.linspace(0.0, 1.0, 21), 2)


def pool(probs: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Weighted geometric mean of class probabilities, renormalised per row.

    Parameters
    ----------
    probs : list of numpy.ndarray
        Each ``(n, n_classes)``, rows summing to 1 (the parts' probabilities, same rows and
        class order).
    weights : list of float
        One per part, non-negative.

    Returns
    -------
    numpy.ndarray
        float64 ``(n, n_classes)``, rows summing to 1.
    """
    log = sum(w * np.log(np.clip(np.asarray(p, dtype=np.float64), FLOOR, 1.0))
              for w, p in zip(weights, probs))
    log = log - log.max(axis=1, keepdims=True)
    out = np.exp(log)
    return out / out.sum(axis=1, keepdims=True)


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true classes."""
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, FLOOR, 1.0))))


def fit_weight(first: np.ndarray, second: np.ndarray, labels: np.ndarray) -> tuple[float, list]:
    """The weight of ``first`` (``1 - w`` goes to ``second``) that pools validation best.

    Parameters
    ----------
    first, second : numpy.ndarray
        ``(n, n_classes)`` validation probabilities of the two parts.
    labels : numpy.ndarray
        int ``(n,)`` true classes of the validation tracks.

    Returns
    -------
    weight : float
        In [0, 1].
    trials : list of dict
        Every candidate: ``weight``, ``accuracy``, ``log_loss`` (validation).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError("no validation tracks to fit the fusion weight on")
    trials = []
    for w in GRID:
        fused = pool([first, second], [float(w), 1.0 - float(w)])
        trials.append({"weight": float(w),
                       "accuracy": float(np.mean(fused.argmax(axis=1) == labels)),
                       "log_loss": log_loss(fused, labels)})
    best = min(trials, key=lambda t: (-t["accuracy"], round(t["log_loss"], 9),
                                      abs(t["weight"] - 0.5)))
    return best["weight"], trials


def pool_labels(probs: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Weighted geometric pool of independent per-label probabilities (multi-label).

    For each label, ``p ∝ prod p_i ** w_i`` and ``1 - p ∝ prod (1 - p_i) ** w_i``, renormalised:
    ``logit(p) = sum w_i * logit(p_i)``.

    Parameters
    ----------
    probs : list of numpy.ndarray
        Each ``(n, k)``, probabilities in [0, 1] (the parts' per-label probabilities, same rows
        and label order).
    weights : list of float
        One per part, non-negative.

    Returns
    -------
    numpy.ndarray
        float64 ``(n, k)`` in (0, 1).
    """
    logit = sum(w * _logit(p) for w, p in zip(weights, probs))
    return 1.0 / (1.0 + np.exp(-logit))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), FLOOR, 1.0 - FLOOR)
    return np.log(p) - np.log1p(-p)


def binary_log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy over every (track, label) pair."""
    p = np.clip(np.asarray(probs, dtype=np.float64), FLOOR, 1.0 - FLOOR)
    y = np.asarray(y, dtype=bool)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def fit_label_weight(first: np.ndarray, second: np.ndarray,
                     y: np.ndarray) -> tuple[float, list]:
    """The weight of ``first`` (``1 - w`` to ``second``) that pools validation best, multi-label.

    Parameters
    ----------
    first, second : numpy.ndarray
        ``(n, k)`` validation per-label probabilities of the two parts.
    y : numpy.ndarray
        ``(n, k)`` 0/1 validation labels. Nothing of the test split goes in.

    Returns
    -------
    weight : float
        In [0, 1].
    trials : list of dict
        Every candidate: ``weight``, ``pr_auc_macro`` (mean average precision over the labels
        with a validation positive), ``log_loss`` (binary cross-entropy), on validation.
    """
    from sklearn.metrics import average_precision_score

    y = np.asarray(y, dtype=bool)
    if len(y) == 0:
        raise ValueError("no validation tracks to fit the fusion weight on")
    scored = y.any(axis=0) & ~y.all(axis=0)
    if not scored.any():
        raise ValueError("no label has both a positive and a negative validation track: "
                         "the fusion weight cannot be fitted")
    trials = []
    for w in GRID:
        fused = pool_labels([first, second], [float(w), 1.0 - float(w)])
        trials.append({"weight": float(w),
                       "pr_auc_macro": float(average_precision_score(
                           y[:, scored], fused[:, scored], average="macro")),
                       "log_loss": binary_log_loss(fused, y)})
    best = min(trials, key=lambda t: (-round(t["pr_auc_macro"], 12), round(t["log_loss"], 9),
                                      abs(t["weight"] - 0.5)))
    return best["weight"], trials
