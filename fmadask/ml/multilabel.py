"""The classical stage under the multi-label target (``genres_all``, issue 22).

The study's models where they have a multi-label form (:data:`FORMS`): logistic regression and
the linear SVC one-vs-rest (one binary model per genre), the trees and forests and XGBoost
natively (one model with a leaf value or output per genre). SVC and NuSVC (one kernel machine
per genre: their cost grows with the square of the rows, times 161 genres on FMA large),
Gradient Boosting and AdaBoost (161 sequential ensembles) are left out, and said so.

Everything else is the single-label stage's: the scaler fitted on the training split only, one
Dask task per model. Decision thresholds are chosen per genre on the validation split
(:func:`fmadask.report.multilabel.evaluate`; genres too rare there take one pooled threshold),
and a predicted sub-genre implies its parent. Scores and reports are the metrics module's.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from fmadask.ml.fit import Candidate, FitOutcome, error_line, worker_address
from fmadask.ml.models import make_estimator

#: How each study model learns many labels at once; the others are not trained under
#: ``genres_all`` (see the module's docstring).
FORMS: dict[str, str] = {"logistic_regression": "one-vs-rest", "linear_svc": "one-vs-rest",
                         "decision_tree": "native", "random_forest": "native",
                         "extra_trees": "native", "xgboost": "native"}
#: The scale rule under ``genres_all``: only the bounded tree, which is natively multi-output
#: too (XGBoost's early-stopping substitute and the kernel approximations are single-label).
SCALED: dict[str, str] = {"decision_tree": "bounded_tree"}
#: Name of the label-prior baseline's row in results.csv.
PRIOR = "label_prior"


def multilabel_estimator(name: str, seed: int = 0, **params: Any) -> Any:
    """An unfitted multi-label estimator of model ``name`` (a key of :data:`FORMS`, or the
    bounded tree that runs as a decision tree past the scale threshold)."""
    from sklearn.multiclass import OneVsRestClassifier

    estimator = make_estimator(name, seed, **params)
    return OneVsRestClassifier(estimator) if FORMS.get(name) == "one-vs-rest" else estimator


def label_probabilities(model: Any, X: np.ndarray) -> np.ndarray:
    """Per-label scores in [0, 1] of a fitted multi-label estimator or pipeline.

    Returns
    -------
    numpy.ndarray, shape (n, k), float
        Probabilities; for the linear SVC (no probabilities) the logistic function of its
        margins, which ranks as they do but is not calibrated.
    """
    if not hasattr(model, "predict_proba"):
        return 1.0 / (1.0 + np.exp(-np.asarray(model.decision_function(X), dtype=float)))
    proba = model.predict_proba(X)
    if isinstance(proba, list):           # a native multi-output forest: one (n, 2) per label
        return np.column_stack([_positive(p, c) for p, c in zip(proba, _classes(model))])
    return np.asarray(proba, dtype=float)


def _classes(model: Any) -> list[np.ndarray]:
    estimator = model.steps[-1][1] if hasattr(model, "steps") else model
    return list(estimator.classes_)


def _positive(proba: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The positive class's column of one label (a label that was all 0 or all 1 in training
    has one column)."""
    classes = list(np.asarray(classes).tolist())
    return proba[:, classes.index(1)] if 1 in classes else np.zeros(len(proba))


def fit_multilabel(name: str, params: dict[str, Any], seed: int, X_train: np.ndarray,
                   Y_train: np.ndarray, evaluate: dict[str, np.ndarray],
                   runs_as: str | None = None) -> FitOutcome:
    """Fit model ``name``'s multi-label form on scaled training features; score other splits.

    Parameters
    ----------
    name : str
        A key of :data:`FORMS`.
    params : dict
        Overrides of the estimator's defaults.
    seed : int
        ``random_state``.
    X_train : numpy.ndarray, shape (n, d), float32
        Scaled by the scaler fitted on this training split.
    Y_train : numpy.ndarray, shape (n, k), uint8
        0/1 labels.
    evaluate : dict of str to numpy.ndarray
        Scaled features of the splits to score.
    runs_as : str, optional
        The estimator that runs under ``name`` (:data:`SCALED`).

    Returns
    -------
    FitOutcome
        ``scores``: per split, the label probabilities (float32, shape (m, k)); ``error`` set
        when the fit failed.
    """
    start = time.perf_counter()
    try:
        estimator = multilabel_estimator(runs_as or name, seed, **params)
        estimator.fit(X_train, Y_train)
        scores = {split: label_probabilities(estimator, X).astype(np.float32)
                  for split, X in evaluate.items() if len(X)}
    except Exception as exc:  # noqa: BLE001 - any estimator failure is this model's result
        return FitOutcome(name, params, None, seconds=time.perf_counter() - start,
                          worker=worker_address(), error=error_line(exc))
    return FitOutcome(name, params, estimator, {}, time.perf_counter() - start, worker_address(),
                      scores=scores)


def parents_of(genres: Any) -> dict[int, int]:
    """Genre id -> parent id (0 at the top) of a genre tree table."""
    return {int(g): int(p) for g, p in genres["parent"].items()}


def top_ids(dataset: Any, split: str) -> np.ndarray:
    """Genre id of each track's ``genre_top`` in ``split`` (0 where it has none)."""
    ids = {str(t): int(g) for g, t in dataset.genres["title"].items()
           if int(dataset.genres.at[g, "parent"]) == 0}
    return np.array([ids.get(g, 0) if isinstance(g, str) else 0
                     for g in dataset.genre[dataset.rows(split)]], dtype=int)


def check_options(options: Any) -> None:
    """Refuse, before any work, classical options that have no multi-label meaning.

    ``class_weight = 'balanced'`` weighs each row by its one genre's rarity: a track of
    ``genres_all`` has several genres, so no row weight balances them all (per-genre weights are
    the one-vs-rest models' business, not a row's).

    Parameters
    ----------
    options : ClassicalOptions
        The stage's options (a job spec's ``[classical]``, the command line's).

    Raises
    ------
    OptionError
        Naming the option, as the user wrote it.
    """
    from fmadask.options import OptionError, setting

    if options.class_weight != "none":
        raise OptionError("classical.class_weight",
                          f"{{option}} {options.class_weight} weighs each track by its one genre: "
                          f"under {setting('data.target')} genres_all a track has several, so "
                          "set {option} none")


def plan_models(models: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The models trained under ``genres_all`` (those of :data:`FORMS`) and those left out."""
    return [m for m in models if m in FORMS], [m for m in models if m not in FORMS]


def runs(n_train: int, threshold: int) -> dict[str, str]:
    """The estimator that runs under each model of :data:`FORMS` for ``n_train`` rows."""
    return {n: SCALED.get(n, n) if n_train > threshold else n for n in FORMS}


def evaluate_scores(dataset: Any, scores: Mapping[str, np.ndarray]) -> Any:
    """Thresholds on validation, scores on validation and test, of one model's probabilities
    (:func:`fmadask.report.multilabel.evaluate`)."""
    from fmadask.report.multilabel import Split, evaluate

    splits = [Split(dataset.xy(s)[1], scores[s], top_ids(dataset, s))
              for s in ("validation", "test")]
    names = {int(g): str(t) for g, t in dataset.genres["title"].items()}
    return evaluate(*splits, dataset.label_ids, parents_of(dataset.genres), names)


def fold_pr_auc(c: Candidate, X_fit: np.ndarray, Y_fit: np.ndarray, X_held: np.ndarray,
                Y_held: np.ndarray) -> float:
    """Macro average precision on the held-out rows of the candidate's multi-label form, its
    scaler fitted on the fitted rows (the search's score under ``genres_all``: a
    ``held_score`` of :func:`fmadask.ml.fit.fold_score`)."""
    from sklearn.pipeline import Pipeline

    from fmadask.ml.models import make_scaler
    from fmadask.report.multilabel import ranking_scores

    pipeline = Pipeline([("scale", make_scaler(c.scaler)),
                         ("model", multilabel_estimator(c.name, c.seed, **c.params))])
    pipeline.fit(X_fit, Y_fit)
    return ranking_scores(Y_held, label_probabilities(pipeline, X_held))["pr_auc_macro"]
