"""Functions that run inside Dask tasks: fit one model, score one cross-validation fold.

They take and return plain NumPy arrays and picklable objects, never a Client, so the scheduler
can send them to any worker. A model that fails (a solver that cannot converge, an infeasible
parameter) returns its error instead of raising, so one bad model or candidate never stops a job.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fmadask.ml.models import make_estimator, make_pipeline


def worker_address() -> str:
    """Address of the Dask worker running the caller, or 'local' outside a worker."""
    try:
        from distributed import get_worker

        return get_worker().address
    except ValueError:
        return "local"


def error_line(exc: BaseException) -> str:
    """One line naming the exception (full tracebacks of estimator internals help nobody)."""
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return last.splitlines()[0][:300]


def balanced_weights(y: np.ndarray, class_weight: str | None) -> np.ndarray | None:
    """Per-row weights for ``class_weight``: None, or 'balanced' (``n / (k * n_class)``, so that
    every class weighs the same in the loss, as scikit-learn's ``class_weight='balanced'``).

    Passed as ``sample_weight`` to every estimator's ``fit``: all of them (XGBoost, AdaBoost,
    Gradient Boosting included, which have no ``class_weight``) take it, so one mechanism serves
    the ten models.
    """
    if class_weight is None:
        return None
    from sklearn.utils.class_weight import compute_sample_weight

    return compute_sample_weight(class_weight, y)


@dataclass
class FitOutcome:
    """A model fitted on the training split, with its predictions on the evaluation splits."""

    name: str
    params: dict[str, Any]
    estimator: Any | None
    #: Predicted class codes per split name, e.g. ``{'validation': array, 'test': array}``.
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = float("nan")
    worker: str = ""
    error: str | None = None
    #: Multi-label models (:func:`fmadask.ml.multilabel.fit_multilabel`): per split, the label
    #: probabilities of shape (m, k), which thresholds and scores are computed from.
    scores: dict[str, np.ndarray] = field(default_factory=dict)


def fit_and_predict(name: str, params: dict[str, Any], seed: int, X_train: np.ndarray,
                    y_train: np.ndarray, evaluate: dict[str, np.ndarray], runs_as: str | None = None,
                    class_weight: str | None = None) -> FitOutcome:
    """Fit model ``name`` on scaled training features and predict the evaluation splits.

    Parameters
    ----------
    name : str
        One of :data:`fmadask.ml.models.MODEL_NAMES`.
    params : dict
        Overrides of the defaults of the model that runs.
    seed : int
        The estimator's ``random_state``.
    X_train : numpy.ndarray, shape (n, d), float32
        Already scaled (by the scaler fitted on this training split).
    y_train : numpy.ndarray, shape (n,), int
        Class codes ``0 .. k-1``.
    evaluate : dict of str to numpy.ndarray, shapes (m, d)
        Scaled features of other splits to predict.
    runs_as : str, optional
        The estimator that runs under ``name`` (:func:`fmadask.ml.models.runs_as`); default
        ``name``.
    class_weight : {None, 'balanced'}
        Weight the training rows so that every class counts the same (:func:`balanced_weights`).

    Returns
    -------
    FitOutcome
        With ``error`` set (and no estimator) when the fit failed.
    """
    start = time.perf_counter()
    try:
        estimator = make_estimator(runs_as or name, seed, **params)
        estimator.fit(X_train, y_train, sample_weight=balanced_weights(y_train, class_weight))
        predictions = {}
        for split, X in evaluate.items():
            if len(X):
                predictions[split] = np.asarray(estimator.predict(X))
            else:
                predictions[split] = np.empty(0, int)
    except Exception as exc:  # noqa: BLE001 - any estimator failure is this model's result
        return FitOutcome(name, params, None, seconds=time.perf_counter() - start,
                          worker=worker_address(), error=error_line(exc))
    return FitOutcome(name, params, estimator, predictions, time.perf_counter() - start,
                      worker_address())


def stratified_head(train_idx: np.ndarray, y: np.ndarray, fraction: float, seed: int
                    ) -> np.ndarray:
    """The first ``fraction`` of each class's rows of ``train_idx``, in a seeded shuffled order.

    Successive halving trains on growing parts of each fold: a smaller part is a subset of a
    larger one, and every class keeps at least one row (XGBoost needs classes ``0 .. k-1``).
    Multi-label ``y`` (0/1 rows, ``genres_all``) has no classes to keep: the first
    ``fraction`` of the shuffled rows.
    """
    if fraction >= 1.0:
        return train_idx
    order = np.random.default_rng(seed).permutation(len(train_idx))
    shuffled = train_idx[order]
    if np.ndim(y) == 2:
        return np.sort(shuffled[:max(1, int(np.ceil(fraction * len(shuffled))))])
    keep = []
    for code in np.unique(y[shuffled]):
        rows = shuffled[y[shuffled] == code]
        keep.append(rows[:max(1, int(np.ceil(fraction * len(rows))))])
    return np.sort(np.concatenate(keep))


@dataclass(frozen=True)
class Candidate:
    """What a cross-validation fit fits (:func:`fold_score`) and how it is scored.

    Attributes
    ----------
    name : str
        The estimator to fit (a study model or a substitute).
    params : dict
        Its parameters.
    seed : int
        The estimator's ``random_state`` and the seed of the row subsample.
    scaler : {'minmax', 'standard'}
    score : {'accuracy', 'balanced_accuracy', 'pr_auc_macro'}
        The last for ``genres_all`` (:func:`fmadask.ml.multilabel.fold_score_multilabel`).
    class_weight : {None, 'balanced'}
    """

    name: str
    params: dict[str, Any]
    seed: int
    scaler: str
    score: str = "accuracy"
    class_weight: str | None = None


def fold_score(candidate: Candidate, X: np.ndarray, y: np.ndarray,
               folds: list[tuple[np.ndarray, np.ndarray]], fold: int, fraction: float = 1.0
               ) -> tuple[float, str, str | None, float]:
    """Score of a scaler + model pipeline on one cross-validation fold.

    The scaler is fitted on the fold's training rows only, as in the final model.

    Parameters
    ----------
    candidate : Candidate
        The estimator, its parameters, seed and scaler, and the score.
    X, y : numpy.ndarray
        The whole training split (scattered once to every worker).
    folds : list of (train_idx, test_idx)
        The cross-validation folds (scattered once too).
    fold : int
        Which fold.
    fraction : float
        Share of the fold's training rows to fit on (successive halving's budget); the fold's
        validation rows are all scored.

    Returns
    -------
    value : float
        NaN when the fit failed.
    worker : str
        Address of the worker that ran it.
    error : str or None
        One line, when the fit failed.
    seconds : float
        Time of the fit and the scoring.
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    c = candidate
    start = time.perf_counter()
    train_idx, test_idx = folds[fold]
    rows = stratified_head(train_idx, y, fraction, c.seed + fold)
    metric = balanced_accuracy_score if c.score == "balanced_accuracy" else accuracy_score
    try:
        pipeline = make_pipeline(c.name, c.scaler, c.seed, **c.params)
        pipeline.fit(X[rows], y[rows],
                     model__sample_weight=balanced_weights(y[rows], c.class_weight))
        value = float(metric(y[test_idx], pipeline.predict(X[test_idx])))
    except Exception as exc:  # noqa: BLE001 - a failing candidate is scored NaN, not fatal
        return float("nan"), worker_address(), error_line(exc), time.perf_counter() - start
    return value, worker_address(), None, time.perf_counter() - start


def tsne_embedding(X: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE embedding of ``X`` (shape (n, d)) -> shape (n, 2); single-threaded."""
    from sklearn.manifold import TSNE

    # Perplexity must stay below the number of points; 30 is scikit-learn's default.
    perplexity = float(min(30.0, max(2.0, (len(X) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                n_jobs=1).fit_transform(X)
