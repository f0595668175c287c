"""Pooling two models' class probabilities, with a weight chosen on the validation split.

The rule is a weighted geometric mean (a log-linear pool) of the parts' probabilities,
renormalised: ``p ∝ p_classical ** w * p_cnn ** (1 - w)``. It has one parameter, so the few
validation tracks of a small data set can choose it without over-fitting, and unlike an average it
lets a confident part overrule an unsure one. ``w`` is chosen on a grid by validation accuracy,
ties broken by validation log-loss and then by closeness to 0.5. Only validation probabilities and
labels enter :func:`fit_weight`; test predictions are made with the weight it returns.
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
