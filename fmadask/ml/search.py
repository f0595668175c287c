"""Hyper-parameter search on a Dask cluster: random search (dask-ml) and Bayesian (Optuna).

Both score a candidate by stratified k-fold cross-validation accuracy on the training split, with
the scaler fitted inside each fold (so no fold sees its validation rows' minima and maxima), and
both return a :class:`SearchOutcome`; the caller refits the best parameters on the whole training
split and scores them on validation and test.

- :func:`random_search` is dask-ml's ``RandomizedSearchCV`` with the client as scheduler: the
  candidate x fold fits are tasks of one graph, spread over the workers.
- :func:`bayes_search` runs Optuna's TPE sampler in this process (ask-and-tell, in-memory
  storage) and every fold of every trial as a task on the workers, keeping ``parallel`` trials in
  flight. Optuna 5 has no Dask storage of its own (it moved to the separate optuna-integration
  package), and none is needed: only the sampler's state must be shared, and it lives here.
  TPE's "constant liar" (on by default in Optuna 5) keeps concurrent trials apart.

dask-ml's incremental searches (Hyperband, SuccessiveHalving) do not work with current
``distributed`` and are not used.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fmadask.cluster import workers_info
from fmadask.errors import DataError, FmadaskError
from fmadask.ml.fit import fold_score
from fmadask.ml.models import Dimension, make_pipeline

SEARCH_METHODS = ("none", "random", "bayes")


@dataclass
class SearchOutcome:
    """Result of a hyper-parameter search."""

    method: str
    best_params: dict[str, Any]
    #: Mean cross-validation accuracy of the best candidate.
    best_score: float
    #: One row per candidate: its parameters, ``mean_accuracy``, ``std_accuracy``.
    trials: pd.DataFrame
    #: Addresses of the workers that ran the candidates' fits.
    fit_workers: list[str] = field(default_factory=list)
    n_splits: int = 5
    seconds: float = float("nan")


def n_splits_for(y: np.ndarray, cv: int) -> int:
    """Folds to use: ``cv``, but no more than the smallest class has members, so that every fold's
    training part holds every class (XGBoost requires classes ``0 .. k-1`` all present).

    Raises
    ------
    DataError
        When a class has a single training track.
    """
    smallest = int(np.bincount(y).min())
    if smallest < 2:
        raise DataError("a genre has a single training track: cross-validation needs at least 2 "
                        "per genre (use more data or --search none)")
    return min(cv, smallest)


def _key_name(key: Any) -> str:
    return str(key[0] if isinstance(key, tuple) else key)


def random_search(client: Any, name: str, X: np.ndarray, y: np.ndarray,
                  space: Mapping[str, Dimension], n_iter: int = 20, cv: int = 5, seed: int = 0,
                  scaler: str = "minmax", base_params: Mapping[str, Any] | None = None
                  ) -> SearchOutcome:
    """Stratified k-fold random search with dask-ml's ``RandomizedSearchCV`` on ``client``.

    Parameters
    ----------
    client : distributed.Client
        Cluster that runs the fits.
    name : str
        Model name (:data:`fmadask.ml.models.MODEL_NAMES`).
    X : numpy.ndarray, shape (n, d)
        Unscaled training features (each fold fits its own scaler).
    y : numpy.ndarray, shape (n,)
        Class codes.
    space : mapping of str to Dimension
        Parameters to sample.
    n_iter : int
        Candidates.
    cv : int
        Folds (fewer if a class is smaller, see :func:`n_splits_for`).
    seed : int
        Seed of the candidates, the folds and the estimators.
    scaler : {'minmax', 'standard'}
    base_params : mapping, optional
        Fixed overrides of the model's defaults (e.g. ``n_jobs``).

    Returns
    -------
    SearchOutcome
        ``fit_workers`` is read from the scheduler's task stream: the workers that ran the
        estimator's fit tasks.
    """
    from dask_ml.model_selection import RandomizedSearchCV
    from distributed import get_task_stream
    from sklearn.model_selection import StratifiedKFold

    n_splits = n_splits_for(y, cv)
    pipeline = make_pipeline(name, scaler, seed, **dict(base_params or {}))
    distributions = {f"model__{k}": dim.distribution() for k, dim in space.items()}
    search = RandomizedSearchCV(
        pipeline, distributions, n_iter=n_iter, scoring="accuracy", refit=False,
        cv=StratifiedKFold(n_splits, shuffle=True, random_state=seed), random_state=seed,
        error_score=np.nan, return_train_score=False, scheduler=client)
    start = time.perf_counter()
    with get_task_stream(client) as stream, warnings.catch_warnings():
        # dask-ml ranks failed (NaN) candidates by casting NaN to int, which warns; their rank
        # is not used here (the best is taken with nanargmax).
        warnings.filterwarnings("ignore", "invalid value encountered in cast", RuntimeWarning)
        search.fit(X, y)
    seconds = time.perf_counter() - start
    # dask-ml names each fit task '<estimator class>-fit-<token>'.
    prefix = f"{type(pipeline.named_steps['model']).__name__.lower()}-fit"
    workers = sorted({rec["worker"] for rec in stream.data
                      if _key_name(rec["key"]).startswith(prefix)})
    results = search.cv_results_
    trials = pd.DataFrame([{k.removeprefix("model__"): v for k, v in p.items()}
                           for p in results["params"]])
    trials["mean_accuracy"] = results["mean_test_score"]
    trials["std_accuracy"] = results["std_test_score"]
    if trials["mean_accuracy"].isna().all():
        raise FmadaskError(f"{name}: every candidate of the random search failed: check the "
                           "search space (see the workers' logs for the error)")
    best = int(np.nanargmax(trials["mean_accuracy"].to_numpy()))
    params = {k.removeprefix("model__"): _plain(v) for k, v in results["params"][best].items()}
    return SearchOutcome("random", params, float(trials["mean_accuracy"].iloc[best]), trials,
                         workers, n_splits, seconds)


def bayes_search(client: Any, name: str, X: np.ndarray, y: np.ndarray,
                 space: Mapping[str, Dimension], n_iter: int = 20, cv: int = 5, seed: int = 0,
                 scaler: str = "minmax", base_params: Mapping[str, Any] | None = None,
                 parallel: int | None = None) -> SearchOutcome:
    """Bayesian optimisation (Optuna TPE) with each trial's folds run as Dask tasks.

    Parameters are those of :func:`random_search`, plus

    parallel : int, optional
        Trials in flight at once (default: the number of workers, at least 2). More keeps a big
        cluster busy; fewer lets every trial learn from more finished ones.

    Returns
    -------
    SearchOutcome
        ``trials`` also has ``number`` and ``state`` ('COMPLETE' or 'FAIL'); a trial whose
        folds all failed is told to Optuna as failed.
    """
    import optuna
    from distributed import as_completed
    from sklearn.model_selection import StratifiedKFold

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n_splits = n_splits_for(y, cv)
    folds = list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(X, y))
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, n_iter // 3)))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    parallel = parallel or max(2, len(workers_info(client)))
    base = dict(base_params or {})
    X_future, y_future = client.scatter([X, y], broadcast=False)

    running: dict[str, int] = {}                   # task key -> trial number
    trials: dict[int, dict[str, Any]] = {}          # trial number -> record
    done = as_completed()
    start = time.perf_counter()

    def launch() -> None:
        trial = study.ask()
        params = {k: dim.suggest(trial, k) for k, dim in space.items()}
        trials[trial.number] = {"trial": trial, "params": params, "scores": [], "workers": set(),
                                "errors": []}
        for train_idx, test_idx in folds:
            future = client.submit(fold_score, name, {**base, **params}, seed, scaler, X_future,
                                   y_future, train_idx, test_idx, pure=False)
            running[future.key] = trial.number
            done.add(future)

    launched = 0
    while launched < min(parallel, n_iter):
        launch()
        launched += 1
    for future in done:
        record = trials[running.pop(future.key)]
        score, worker, error = future.result()
        record["scores"].append(score)
        record["workers"].add(worker)
        if error:
            record["errors"].append(error)
        if len(record["scores"]) < n_splits:
            continue
        scores = np.asarray(record["scores"], dtype=float)
        if np.isnan(scores).all():
            study.tell(record["trial"], state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(record["trial"], float(np.nanmean(scores)))
        if launched < n_iter:
            launch()
            launched += 1
    seconds = time.perf_counter() - start

    rows = []
    for number, record in sorted(trials.items()):
        scores = np.asarray(record["scores"], dtype=float)
        failed = np.isnan(scores).all()
        rows.append({"number": number, **record["params"],
                     "mean_accuracy": np.nan if failed else float(np.nanmean(scores)),
                     "std_accuracy": np.nan if failed else float(np.nanstd(scores)),
                     "state": "FAIL" if failed else "COMPLETE",
                     "error": record["errors"][0] if record["errors"] else ""})
    table = pd.DataFrame(rows)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        first = table["error"].iloc[0] if len(table) else ""
        raise FmadaskError(f"{name}: every trial of the Bayesian search failed ({first}): check "
                           "the search space")
    best = study.best_trial
    workers = sorted(set().union(*(r["workers"] for r in trials.values())))
    return SearchOutcome("bayes", {k: _plain(v) for k, v in best.params.items()}, best.value,
                         table, workers, n_splits, seconds)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (for JSON and estimator parameters)."""
    return value.item() if isinstance(value, np.generic) else value
