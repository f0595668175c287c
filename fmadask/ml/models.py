"""The ten classifiers of the study, their default settings, search spaces and the scale rule.

Every model is referred to by a short name (``'xgboost'``, ``'linear_svc'``...; see
:data:`MODEL_NAMES`) and built by :func:`make_estimator`. Past :data:`SCALE_THRESHOLD_ROWS`
training rows, :func:`runs_as` (the scale rule, the one place that decides it) swaps the models
whose cost grows fastest for the substitutes of :data:`SUBSTITUTES`. A search space is declared
once, with :class:`Int`, :class:`Float` and :class:`Choice`, which the search asks Optuna's
samplers for (random or TPE, :mod:`fmadask.ml.search`).

All estimators run single-threaded (``n_jobs=1``): they are fitted inside Dask tasks on workers
that run one thread each, and parallelism comes from running many fits at once.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import (AdaBoostClassifier, ExtraTreesClassifier, GradientBoostingClassifier,
                              HistGradientBoostingClassifier, RandomForestClassifier)
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC, LinearSVC, NuSVC
from sklearn.tree import DecisionTreeClassifier

from fmadask.errors import ConfigError
from fmadask.options import OPTIONS, check

# ------------------------------------------------------------------------ search dimensions


@dataclass(frozen=True)
class Int:
    """An integer parameter drawn from ``[low, high]`` (both included), log-uniformly if ``log``."""

    low: int
    high: int
    log: bool = False

    def suggest(self, trial: Any, name: str) -> int:
        """Ask an Optuna trial for a value."""
        return trial.suggest_int(name, self.low, self.high, log=self.log)


@dataclass(frozen=True)
class Float:
    """A real parameter drawn from ``[low, high]``, log-uniformly if ``log``."""

    low: float
    high: float
    log: bool = False

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)


@dataclass(frozen=True)
class Choice:
    """A parameter taking one of a few values (str, int, float, bool or None)."""

    values: tuple

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.values))


Dimension = Int | Float | Choice


# ---------------------------------------------------------------------------------- NuSVC


class FeasibleNuSVC(NuSVC):
    """NuSVC that lowers ``nu`` to the largest feasible value instead of failing.

    libsvm trains one binary NuSVC per pair of classes, and ``nu`` is only feasible for a pair
    with ``n_i`` and ``n_j`` samples when ``nu <= 2 * min(n_i, n_j) / (n_i + n_j)``. With small or
    unbalanced classes (a cross-validation fold, FMA medium's genres) the default 0.5 can break
    that and scikit-learn raises "specified nu is infeasible". This class fits with
    ``min(nu, 0.95 * bound)`` and records the value used in ``nu_``; ``get_params()`` still
    returns the requested ``nu``.
    """

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
            ) -> FeasibleNuSVC:
        requested = self.nu
        self.nu_ = min(requested, 0.95 * nu_bound(y))
        # libsvm reads self.nu during fit; restore the requested value so that clone() and
        # get_params() keep describing what the user asked for.
        self.nu = self.nu_
        try:
            return super().fit(X, y, sample_weight=sample_weight)
        finally:
            self.nu = requested


def nu_bound(y: np.ndarray) -> float:
    """Largest feasible ``nu`` of a one-vs-one NuSVC on labels ``y``: the minimum over all pairs
    of classes of ``2 min(n_i, n_j) / (n_i + n_j)``, which is ``2 n_min / (n_min + n_max)`` (for
    a fixed smaller class, the bound falls as the other class grows)."""
    counts = np.sort(np.unique(np.asarray(y), return_counts=True)[1])
    if len(counts) < 2:
        return 1.0
    return float(2 * counts[0] / (counts[0] + counts[-1]))


# ---------------------------------------------------------------------- RBF SVM approximation


class NystroemSVM(ClassifierMixin, BaseEstimator):
    """An RBF-kernel SVM approximated for large tables: a Nystroem map, then a linear SVM.

    The RBF kernel is approximated on ``n_components`` training rows (Nystroem), and a linear SVM
    (liblinear's primal solver, one-vs-rest) is fitted on the mapped rows. Its cost grows
    linearly with the rows, where libsvm's exact SVC/NuSVC grows about with their square.

    Parameters
    ----------
    C : float
        Inverse regularisation strength of the linear SVM.
    gamma : 'scale' or float
        RBF width; 'scale' is SVC's default ``1 / (n_features * X.var())`` of the training rows.
    n_components : int
        Rows the kernel map is built on (at most the training rows); features after the map.
    random_state : int, optional
        Seed of the choice of rows.
    """

    def __init__(self, C: float = 1.0, gamma: str | float = "scale", n_components: int = 500,
                 random_state: int | None = None) -> None:
        self.C, self.gamma, self.n_components, self.random_state = (C, gamma, n_components,
                                                                    random_state)

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
            ) -> NystroemSVM:
        X = np.asarray(X, dtype=np.float32)
        variance = float(X.var())
        self.gamma_ = (1.0 / (X.shape[1] * variance) if variance > 0 else 1.0
                       ) if self.gamma == "scale" else float(self.gamma)
        self.map_ = Nystroem(kernel="rbf", gamma=self.gamma_,
                             n_components=min(self.n_components, len(X)),
                             random_state=self.random_state).fit(X)
        self.svm_ = LinearSVC(C=self.C, dual=False, max_iter=5000,
                              random_state=self.random_state)
        self.svm_.fit(self.map_.transform(X), y, sample_weight=sample_weight)
        self.classes_ = self.svm_.classes_
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Margins of the linear SVM on the mapped rows, shape (n, k)."""
        return self.svm_.decision_function(self.map_.transform(np.asarray(X, dtype=np.float32)))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.svm_.predict(self.map_.transform(np.asarray(X, dtype=np.float32)))


# ---------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelSpec:
    """How to build one of the study's models and what to search over."""

    label: str
    factory: Callable[..., BaseEstimator]
    defaults: Mapping[str, Any]
    space: Mapping[str, Dimension]


def _xgb_classifier(**params: Any) -> BaseEstimator:
    from xgboost import XGBClassifier

    return XGBClassifier(**params)


def _early_stopping_xgb(**params: Any) -> BaseEstimator:
    from fmadask.ml.xgb_early import EarlyStoppingXGBClassifier

    return EarlyStoppingXGBClassifier(**params)


_FOREST_SPACE = {"n_estimators": Int(100, 500), "max_depth": Choice((None, 10, 20, 40)),
                 "max_features": Choice(("sqrt", "log2", 0.2)), "min_samples_leaf": Int(1, 8)}

#: The study's ten models, in the order of its Table 1 and of our tables. Defaults are
#: scikit-learn's/XGBoost's own except where noted; ``n_jobs=1`` everywhere (see module doc).
MODELS: dict[str, ModelSpec] = {
    "logistic_regression": ModelSpec(
        "Logistic Regression", LogisticRegression,
        # lbfgs needs more than the default 100 iterations to converge on 518 scaled features.
        {"max_iter": 2000},
        {"C": Float(1e-3, 1e2, log=True)}),
    "decision_tree": ModelSpec(
        "Decision Tree", DecisionTreeClassifier, {},
        {"max_depth": Int(3, 30), "min_samples_leaf": Int(1, 20),
         "criterion": Choice(("gini", "entropy"))}),
    "random_forest": ModelSpec(
        "Random Forest", RandomForestClassifier, {"n_jobs": 1}, _FOREST_SPACE),
    "svc": ModelSpec(
        "SVC", SVC, {},
        {"C": Float(0.1, 100.0, log=True), "gamma": Float(1e-4, 1e-1, log=True)}),
    "nusvc": ModelSpec(
        "NuSVC", FeasibleNuSVC, {},
        {"nu": Float(0.05, 0.8), "gamma": Float(1e-4, 1e-1, log=True)}),
    "linear_svc": ModelSpec(
        "Linear SVC", LinearSVC,
        # The dual solver needs many iterations on 518 features; primal is faster when n > d.
        {"max_iter": 5000, "dual": "auto"},
        {"C": Float(1e-3, 10.0, log=True)}),
    "gradient_boosting": ModelSpec(
        "Gradient Boosting", GradientBoostingClassifier, {},
        {"n_estimators": Int(50, 300), "learning_rate": Float(0.01, 0.3, log=True),
         "max_depth": Int(2, 6), "subsample": Float(0.5, 1.0)}),
    "extra_trees": ModelSpec(
        "Extra Trees", ExtraTreesClassifier, {"n_jobs": 1}, _FOREST_SPACE),
    "xgboost": ModelSpec(
        "XGBoost", _xgb_classifier,
        # 'hist' is XGBoost's default tree method; stated so that saved models say so.
        {"n_jobs": 1, "tree_method": "hist"},
        {"gamma": Float(0.0, 5.0), "max_depth": Int(2, 10), "min_child_weight": Float(0.5, 20.0, log=True),
         "learning_rate": Float(0.01, 0.3, log=True), "n_estimators": Int(100, 600),
         "subsample": Float(0.5, 1.0), "colsample_bytree": Float(0.3, 1.0)}),
    "adaboost": ModelSpec(
        "AdaBoost", AdaBoostClassifier, {},
        {"n_estimators": Int(50, 400), "learning_rate": Float(0.01, 2.0, log=True)}),
}

#: Short names of the models, in table order.
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)

# ------------------------------------------------------------------------------ scale rule

#: Training rows past which the study's fastest-growing models are swapped (the scale rule).
#: FMA small's 6,400 training rows stay below it, so the study's Table 1 keeps its exact models;
#: FMA medium (~20,000) and large (~85,000) are above. scikit-learn points to
#: HistGradientBoosting past ~10,000 rows.
SCALE_THRESHOLD_ROWS: int = OPTIONS["classical.scale_threshold"].default

#: What runs instead of a study model past the threshold. Measured growth (synthetic 518-feature
#: tables, one thread; tests/benchmarks/bench_classical.py): sklearn's Gradient Boosting grows
#: linearly but from minutes at 6,400 rows; libsvm's SVC/NuSVC about with the square of the rows;
#: XGBoost linearly but with a fixed number of rounds x 16 genres of trees (a 5-fold search of
#: 100-600 rounds would take hours on FMA medium). The substitutes grow about linearly, from
#: seconds, and XGBoost stops adding rounds once they stop helping.
SUBSTITUTES: dict[str, ModelSpec] = {
    "hist_gradient_boosting": ModelSpec(
        "HistGradientBoosting", HistGradientBoostingClassifier,
        # Early stopping on 10 % of the training rows ('auto' does it past 10,000 rows; stated
        # so that a substitute behaves the same whatever the threshold).
        {"early_stopping": True},
        {"learning_rate": Float(0.02, 0.3, log=True), "max_leaf_nodes": Int(15, 63),
         "min_samples_leaf": Int(10, 100, log=True), "l2_regularization": Float(1e-4, 1.0, log=True)}),
    "xgboost_early_stopping": ModelSpec(
        "XGBoost (hist, early stopping)", _early_stopping_xgb,
        # At most 400 rounds, stopped after 10 without a lower error rate on 10 % of the
        # training rows (the log-loss keeps creeping down for hundreds of rounds; the error rate,
        # what is reported, settles in tens); 64 histogram bins instead of 256 (cheaper splits).
        {"n_jobs": 1, "tree_method": "hist", "n_estimators": 400, "early_stopping_rounds": 10,
         "eval_metric": "merror", "max_bin": 64},
        {"gamma": Float(0.0, 5.0), "max_depth": Int(2, 8),
         "min_child_weight": Float(0.5, 20.0, log=True),
         "learning_rate": Float(0.05, 0.4, log=True), "subsample": Float(0.5, 1.0),
         "colsample_bytree": Float(0.3, 0.8)}),
    "nystroem_svm": ModelSpec(
        "Nystroem + linear SVM", NystroemSVM, {},
        {"C": Float(0.01, 10.0, log=True), "gamma": Float(1e-4, 1e-1, log=True)}),
    "bounded_tree": ModelSpec(
        # A tree grown until its leaves are pure gets deeper with the rows (depth 28 at 6,400
        # rows, 59 at 40,000 on the benchmark's table), so its cost grows faster than n log n
        # (CPU-time exponent 1.29 from 10,000 to 40,000 rows). At most 1,000 leaves, grown best
        # first, bound the depth: 1.01, and no worse on held-out rows there. (The random
        # forest's trees get deeper too, but their cost stayed at n log n's 1.10.)
        "Decision tree of at most 1,000 leaves", DecisionTreeClassifier, {"max_leaf_nodes": 1000},
        {"max_leaf_nodes": Int(100, 3000, log=True), "min_samples_leaf": Int(1, 20),
         "criterion": Choice(("gini", "entropy"))}),
}

#: The scale rule: study model -> substitute, past :data:`SCALE_THRESHOLD_ROWS`.
SCALED: dict[str, str] = {"gradient_boosting": "hist_gradient_boosting",
                          "svc": "nystroem_svm", "nusvc": "nystroem_svm",
                          "xgboost": "xgboost_early_stopping", "decision_tree": "bounded_tree"}


def runs_as(name: str, n_train: int, threshold: int | None = None) -> str:
    """The model that runs under the study's name ``name`` for ``n_train`` training rows.

    Parameters
    ----------
    name : str
        One of :data:`MODEL_NAMES`.
    n_train : int
        Training rows.
    threshold : int, optional
        Rows past which :data:`SCALED` applies (default :data:`SCALE_THRESHOLD_ROWS`); 0 swaps
        always.

    Returns
    -------
    str
        ``name`` itself, or its substitute's key in :data:`SUBSTITUTES`.
    """
    limit = SCALE_THRESHOLD_ROWS if threshold is None else threshold
    return SCALED.get(name, name) if n_train > limit else name


def model_label(key: str) -> str:
    """Display name of a study model or a substitute."""
    return (MODELS.get(key) or SUBSTITUTES[key]).label


def resolve_models(models: str | Sequence[str]) -> list[str]:
    """Model names from ``'all'``, a comma-separated string or a list; :class:`ConfigError` on an
    unknown name."""
    if isinstance(models, str):
        models = list(MODEL_NAMES) if models == "all" else [m.strip() for m in models.split(",")]
    names = [m for m in models if m]
    unknown = [m for m in names if m not in MODELS]
    if unknown or not names:
        raise ConfigError(f"unknown model(s) {', '.join(unknown) or '(none)'}: choose 'all' or "
                          f"some of {', '.join(MODEL_NAMES)}")
    return list(dict.fromkeys(names))


def make_estimator(name: str, seed: int = 0, **params: Any) -> BaseEstimator:
    """A fresh, unfitted estimator ``name`` with the defaults of :data:`MODELS` and ``params``.

    Parameters
    ----------
    name : str
        One of :data:`MODEL_NAMES` or a key of :data:`SUBSTITUTES`.
    seed : int
        ``random_state`` of the estimator (all take one; the SVMs and trees use it to break
        ties and shuffle, so a seed makes every fit repeatable).
    **params
        Overrides of the defaults (e.g. ``n_estimators=20``).
    """
    spec = MODELS.get(name) or SUBSTITUTES[name]
    return spec.factory(**{"random_state": seed, **spec.defaults, **params})


def search_space(name: str, overrides: Mapping[str, Dimension] | None = None
                 ) -> dict[str, Dimension]:
    """The search space of model ``name`` (a study model or a substitute), with ``overrides``
    replacing or adding dimensions."""
    return {**(MODELS.get(name) or SUBSTITUTES[name]).space, **(overrides or {})}


# ---------------------------------------------------------------------------------- scaling

def make_scaler(kind: str = "minmax") -> BaseEstimator:
    """dask-ml's scaler ``kind``: it fits on a NumPy array or, spread over workers, a Dask array.

    'minmax' (the study's) maps each training feature to [0, 1]; 'standard' to zero mean and unit
    variance.
    """
    from dask_ml.preprocessing import MinMaxScaler, StandardScaler

    check("classical.scaler", kind)
    return MinMaxScaler() if kind == "minmax" else StandardScaler()


def make_pipeline(name: str, scaler: str | BaseEstimator = "minmax", seed: int = 0,
                  **params: Any) -> Any:
    """``Pipeline([('scale', scaler), ('model', estimator)])``: what is searched and saved.

    ``scaler`` is a kind (a fresh scaler, fitted with the pipeline: used in cross-validation, so
    each fold is scaled by its own training part) or an already fitted scaler.
    """
    from sklearn.pipeline import Pipeline

    step = make_scaler(scaler) if isinstance(scaler, str) else scaler
    return Pipeline([("scale", step), ("model", make_estimator(name, seed, **params))])


def class_scores(model: Any, X: np.ndarray) -> tuple[np.ndarray, str]:
    """Per-class scores of a fitted classifier or pipeline.

    Parameters
    ----------
    model : estimator or Pipeline
        Fitted; classes are ``0 .. k-1``.
    X : numpy.ndarray, shape (n, d)

    Returns
    -------
    scores : numpy.ndarray, shape (n, k)
        Rows sum to 1.
    kind : {'probability', 'softmax'}
        'probability' from ``predict_proba``. The SVMs have none (scikit-learn 1.9 deprecates
        ``SVC(probability=True)``, which also cost five extra fits): their decision values are
        passed through a softmax, which ranks classes the same way but is not calibrated.
    """
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(X)), "probability"
    decision = np.asarray(model.decision_function(X), dtype=float)
    if decision.ndim == 1:                      # binary: one margin for the positive class
        decision = np.column_stack([-decision, decision])
    decision = decision - decision.max(axis=1, keepdims=True)
    exp = np.exp(decision)
    return exp / exp.sum(axis=1, keepdims=True), "softmax"
