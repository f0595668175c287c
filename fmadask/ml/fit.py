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


def fit_and_predict(name: str, params: dict[str, Any], seed: int, X_train: np.ndarray,
                    y_train: np.ndarray, evaluate: dict[str, np.ndarray]) -> FitOutcome:
    """Fit model ``name`` on scaled training features and predict the evaluation splits.

    Parameters
    ----------
    name : str
        One of :data:`fmadask.ml.models.MODEL_NAMES`.
    params : dict
        Overrides of the model's defaults.
    seed : int
        The estimator's ``random_state``.
    X_train : numpy.ndarray, shape (n, d), float32
        Already scaled (by the scaler fitted on this training split).
    y_train : numpy.ndarray, shape (n,), int
        Class codes ``0 .. k-1``.
    evaluate : dict of str to numpy.ndarray, shapes (m, d)
        Scaled features of other splits to predict.

    Returns
    -------
    FitOutcome
        With ``error`` set (and no estimator) when the fit failed.
    """
    start = time.perf_counter()
    try:
        estimator = make_estimator(name, seed, **params).fit(X_train, y_train)
        predictions = {split: np.asarray(estimator.predict(X)) if len(X) else np.empty(0, int)
                       for split, X in evaluate.items()}
    except Exception as exc:  # noqa: BLE001 - any estimator failure is this model's result
        return FitOutcome(name, params, None, seconds=time.perf_counter() - start,
                          worker=worker_address(), error=error_line(exc))
    return FitOutcome(name, params, estimator, predictions, time.perf_counter() - start,
                      worker_address())


def fold_score(name: str, params: dict[str, Any], seed: int, scaler: str, X: np.ndarray,
               y: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray
               ) -> tuple[float, str, str | None]:
    """Accuracy of a scaler + model pipeline on one cross-validation fold.

    The scaler is fitted on the fold's training rows only, as in the final model.

    Returns
    -------
    accuracy : float
        NaN when the fit failed.
    worker : str
        Address of the worker that ran it.
    error : str or None
        One line, when the fit failed.
    """
    try:
        pipeline = make_pipeline(name, scaler, seed, **params).fit(X[train_idx], y[train_idx])
        accuracy = float(np.mean(pipeline.predict(X[test_idx]) == y[test_idx]))
    except Exception as exc:  # noqa: BLE001 - a failing candidate is scored NaN, not fatal
        return float("nan"), worker_address(), error_line(exc)
    return accuracy, worker_address(), None


def tsne_embedding(X: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE embedding of ``X`` (shape (n, d)) -> shape (n, 2); single-threaded."""
    from sklearn.manifold import TSNE

    # Perplexity must stay below the number of points; 30 is scikit-learn's default.
    perplexity = float(min(30.0, max(2.0, (len(X) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                n_jobs=1).fit_transform(X)
