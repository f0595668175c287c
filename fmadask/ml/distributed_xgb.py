"""XGBoost trained across all Dask workers with ``xgboost.dask`` (for FMA large and full).

Each worker holds a block of the training rows and XGBoost's collective (Rabit) syncs the
gradient histograms between them, so no worker needs the whole table. The fitted booster is then
moved into a plain ``xgboost.XGBClassifier`` (through XGBoost's JSON format), which predicts
without a cluster and is saved like every other model.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from fmadask.cluster import workers_info
from fmadask.ml.fit import FitOutcome, error_line


def fit_xgboost_dask(client: Any, params: dict[str, Any], seed: int, X_train: np.ndarray,
                     y_train: np.ndarray, evaluate: dict[str, np.ndarray],
                     sample_weight: np.ndarray | None = None) -> FitOutcome:
    """Fit ``xgboost.dask.DaskXGBClassifier`` on the workers and predict the evaluation splits.

    Parameters
    ----------
    client : distributed.Client
    params : dict
        XGBoost parameters (``n_jobs`` is the threads per worker). With
        ``early_stopping_rounds`` (the scale rule's XGBoost), a stratified 10 % of the training
        rows is held out to stop on, as :class:`~fmadask.ml.xgb_early.EarlyStoppingXGBClassifier`
        does in one task.
    seed : int
        ``random_state``.
    X_train : numpy.ndarray, shape (n, d)
        Scaled training features, scattered to the workers in blocks.
    y_train : numpy.ndarray, shape (n,) or (n, k)
        Class codes ``0 .. k-1``, or 0/1 labels (``genres_all``: XGBoost's multi-label form,
        one output per genre).
    evaluate : dict of str to numpy.ndarray
        Scaled features of other splits.
    sample_weight : numpy.ndarray, shape (n,), optional
        Row weights (``class_weight='balanced'``), blocked like the rows.

    Returns
    -------
    FitOutcome
        ``estimator`` is a local ``xgboost.XGBClassifier``; ``worker`` says how many workers
        trained it. Multi-label: ``scores`` holds each split's label probabilities (as
        :func:`fmadask.ml.multilabel.fit_multilabel`'s), not ``predictions``.
    """
    import xgboost as xgb
    import xgboost.dask  # noqa: F401 - registers xgb.dask

    from fmadask.ml.multilabel import label_probabilities
    from fmadask.ml.unsupervised import to_dask_array

    start = time.perf_counter()
    multilabel = np.ndim(y_train) == 2
    n_workers = len(workers_info(client))
    workers = f"xgboost.dask ({n_workers} workers)"
    # One block per worker at least, so that every worker takes part.
    block = max(1, -(-len(X_train) // max(1, n_workers)))
    try:
        rows = np.arange(len(y_train))
        held_out = np.empty(0, dtype=int)
        if params.get("early_stopping_rounds"):
            from sklearn.model_selection import train_test_split

            # (stratified by genre; a genres_all label set is not a class to stratify by)
            rows, held_out = train_test_split(rows, test_size=0.1, random_state=seed,
                                              stratify=None if multilabel else y_train)

        def blocks(values: np.ndarray | None, part: np.ndarray) -> Any:
            return None if values is None else to_dask_array(client, values[part],
                                                             block_rows=block)

        model = xgb.dask.DaskXGBClassifier(**{"random_state": seed, **params})
        model.client = client
        extra = {}
        if len(held_out):
            extra["eval_set"] = [(blocks(X_train, held_out), blocks(y_train, held_out))]
            extra["verbose"] = False
            if sample_weight is not None:
                extra["sample_weight_eval_set"] = [blocks(sample_weight, held_out)]
        model.fit(blocks(X_train, rows), blocks(y_train, rows),
                  sample_weight=blocks(sample_weight, rows), **extra)
        local = xgb.XGBClassifier()
        local.load_model(model.get_booster().save_raw(raw_format="json"))
        # Keep the parameters on the local copy, so that the saved model describes itself.
        # The booster's JSON carries its best round (early stopping): the local copy predicts
        # with it, as a model trained in one task would.
        local.set_params(**{"random_state": seed, **params})
        if multilabel:
            scores = {s: label_probabilities(local, Xe).astype(np.float32)
                      for s, Xe in evaluate.items() if len(Xe)}
        else:
            predictions = {s: np.asarray(local.predict(Xe)) if len(Xe) else np.empty(0, int)
                           for s, Xe in evaluate.items()}
    except Exception as exc:  # noqa: BLE001 - a failed model is a result, not a crash
        return FitOutcome("xgboost", params, None, seconds=time.perf_counter() - start,
                          worker=workers, error=error_line(exc))
    if multilabel:
        return FitOutcome("xgboost", params, local, {}, time.perf_counter() - start, workers,
                          scores=scores)
    return FitOutcome("xgboost", params, local, predictions, time.perf_counter() - start,
                      workers)
