"""The classical stage's plan: its config (:class:`ClassicalConfig`), what its output folder holds
(:func:`read_classical_state`) and :func:`plan_classical` (pure: which estimator runs under each
name after the scale rule, what is searched and which trials are already finished, the record
to write). :mod:`fmadask.ml.execute` runs a plan; :func:`fmadask.ml.train.train` does both.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmadask import storage
from fmadask.fma.splits import EVAL_SPLITS
from fmadask.options import ClassicalOptions, OptionError, option_values, setting
from fmadask.ml.data import Dataset
from fmadask.ml.models import MODELS, Dimension, resolve_models, runs_as, search_space
from fmadask.ml.search import ETA, score_for, trial_states, trials_folder
from fmadask.runfolder import SEARCH_DIR



def output_folder(out: str | Path) -> str | Path:
    """The output folder as the stage uses it: a URL string, or a local Path (``file://`` URLs
    included)."""
    return storage.location(out)


def _names(models: Sequence[str]) -> str | list[str]:
    """``['all']`` as :func:`resolve_models` takes it."""
    return "all" if list(models) == ["all"] else list(models)


@dataclass(frozen=True, kw_only=True)
class ClassicalConfig(ClassicalOptions):
    """The settings of the classical stage: the options of
    :class:`~fmadask.options.ClassicalOptions` (defaults, rules and help there) and what only a
    library caller sets, validated when made (the parameters of :func:`train`).

    ``models`` may also be given as 'all' or a comma-separated string; it is kept as a tuple of
    names (:func:`resolve_models`), ``search_models`` as those of them that the search tunes
    (none without a search).
    """

    model_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    search_spaces: Mapping[str, Mapping[str, Dimension]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("models", "search_models"):     # the option's form: a list of names
            value = getattr(self, name)
            object.__setattr__(self, name, [m.strip() for m in value.split(",")]
                               if isinstance(value, str) else list(value))
        super().__post_init__()
        names = resolve_models(_names(self.models))
        tuned = ([] if self.search == "none" else
                 [m for m in resolve_models(_names(self.search_models)) if m in names])
        if self.search != "none" and not tuned:
            raise OptionError("classical.search_models",
                              f"search {self.search} tunes {', '.join(self.search_models)}, which "
                              "is not among the models trained: add it to the models or choose "
                              "other {option}")
        object.__setattr__(self, "models", tuple(names))
        object.__setattr__(self, "search_models", tuple(tuned))

    @classmethod
    def of(cls, options: ClassicalOptions, **others: Any) -> ClassicalConfig:
        """The config of the stage with ``options`` (a job spec's ``[classical]``, the command
        line's) and ``others`` (``model_params``, ``search_spaces``)."""
        return cls(**option_values(options, ClassicalOptions), **others)

    @property
    def weighting(self) -> str | None:
        """``class_weight`` as the fits take it: None or 'balanced'."""
        return None if self.class_weight == "none" else self.class_weight


@dataclass(frozen=True)
class ClassicalState:
    """What the output folder holds, as far as planning the stage needs
    (:func:`read_classical_state`)."""

    #: Trials earlier searches left: trials folder name -> {trial number: state}.
    trials: Mapping[str, Mapping[int, str]] = field(default_factory=dict)


def read_classical_state(out: str | Path) -> ClassicalState:
    """Read what :func:`plan_classical` needs to know of the output folder ``out``: the trials
    of earlier searches (``search/<model>-<method>-<key>/trial-NNNN.json``).

    A URL output is written from a fresh local folder and uploaded: nothing there is resumed.
    """
    search = Path(out) / SEARCH_DIR if not isinstance(out, str) else None
    if search is None or not search.is_dir():
        return ClassicalState()
    return ClassicalState({folder.name: trial_states(folder)
                           for folder in sorted(search.iterdir()) if folder.is_dir()})


@dataclass(frozen=True)
class SearchPlan:
    """One model's hyper-parameter search (:func:`fmadask.ml.search.run_search`)."""

    #: The study's name of the model, and the estimator searched under it (scale rule).
    name: str
    runs_as: str
    method: str
    n_iter: int
    space: Mapping[str, Dimension]
    #: Fixed overrides of the estimator's defaults (``model_params``).
    base_params: Mapping[str, Any]
    #: 'accuracy', 'balanced_accuracy' on unbalanced genres, or 'pr_auc_macro' under
    #: ``genres_all`` (:func:`score_for`).
    score: str
    #: Folder of its trials under ``OUT_DIR/search`` (:func:`fmadask.ml.search.trials_folder`).
    folder: str
    #: Trials an earlier run finished there (complete, pruned or failed); the search reads each
    #: instead of fitting it when its candidate and halving schedule are the same.
    finished: tuple[int, ...] = ()


@dataclass(frozen=True)
class ClassicalPlan:
    """What the classical stage will do: a value (:func:`plan_classical`), run by
    :func:`execute_classical`."""

    #: The output folder (a URL is written into a local folder and uploaded at the end).
    out: str | Path
    #: The folder whose lock the stage holds besides ``out``'s (:func:`lock_owner`).
    owner: str | Path
    config: ClassicalConfig
    #: Tracks per split ('training', 'validation', 'test').
    counts: Mapping[str, int]
    #: The scale rule: its threshold, and the estimator that runs under each study name.
    threshold: int
    runs: Mapping[str, str]
    #: The table's fits: (model, overrides of its estimator's defaults), in model order.
    fits: tuple[tuple[str, Mapping[str, Any]], ...]
    searches: tuple[SearchPlan, ...]
    #: ``train.json`` before the run: parameters, scale rule, data, classes, tracks.
    record: dict

    @property
    def substituted(self) -> dict[str, str]:
        """The trained models that the scale rule swaps: study name -> estimator."""
        return {n: self.runs[n] for n, _ in self.fits if self.runs[n] != n}


def plan_classical(config: ClassicalConfig, dataset: Dataset, state: ClassicalState,
                   out: str | Path, owner: str | Path | None = None) -> ClassicalPlan:
    """Plan the classical stage: which estimator runs under each name, what is searched and
    which of its trials are finished, the record to write.

    Pure: the same inputs give an equal plan, and nothing is read or written.

    Parameters
    ----------
    config : ClassicalConfig
    dataset : Dataset
        The features, labels and splits.
    state : ClassicalState
        What the output folder holds (:func:`read_classical_state`).
    out : str or Path
        The output folder.
    owner : str or Path, optional
        The folder whose lock the stage holds besides ``out``'s (default ``out``).
    """
    out = output_folder(out)
    counts = {s: int(dataset.rows(s).sum()) for s in ("training", *EVAL_SPLITS)}
    threshold = config.scale_threshold
    runs = {n: runs_as(n, counts["training"], threshold) for n in MODELS}
    models, notes = config.models, []
    if dataset.target == "genres_all":
        models, runs, notes = _multilabel_models(config, counts["training"])

    def params(name: str) -> dict[str, Any]:
        """Overrides of the estimator that runs under ``name``."""
        return dict(config.model_params.get(runs[name], {}))

    searches = []
    tuned = [m for m in config.search_models if m in models]    # genres_all: multi-label forms
    if tuned:
        X, y = dataset.xy("training")
        score = score_for(y)
    for name in tuned:
        key = runs[name]
        space = search_space(key, config.search_spaces.get(key))
        settings = {"model": key, "cv": config.cv, "seed": config.seed, "scaler": config.scaler,
                    "score": score, "class_weight": config.weighting, "eta": ETA,
                    "base_params": params(name), "space": {k: repr(d) for k, d in space.items()}}
        folder = trials_folder(SEARCH_DIR, name, config.search, settings, X, y).name
        finished = tuple(sorted(n for n, s in state.trials.get(folder, {}).items()
                                if s != "RUNNING" and n < config.n_iter))
        searches.append(SearchPlan(name, key, config.search, config.n_iter, space, params(name),
                                   score, folder, finished))
    record = {
        "params": {"models": list(config.models), "search": config.search,
                   "search_models": list(config.search_models), "n_iter": config.n_iter,
                   "cv": config.cv, "scaler": config.scaler, "seed": config.seed,
                   "distributed_xgb": config.distributed_xgb,
                   "class_weight": config.class_weight,
                   "model_params": dict(config.model_params)},
        "scale_rule": {"threshold_rows": threshold, "training_rows": counts["training"],
                       "runs_as": {n: runs[n] for n in models}},
        "data": dict(dataset.info), "classes": dataset.classes, "tracks": counts,
        **({"target": dataset.target, "label_ids": dataset.label_ids, "notes": notes}
           if dataset.target != "genre_top" else {})}
    return ClassicalPlan(out=out, owner=out if owner is None else owner, config=config,
                         counts=counts, threshold=threshold, runs=runs,
                         fits=tuple((n, params(n)) for n in models),
                         searches=tuple(searches), record=record)


def _multilabel_models(config: ClassicalConfig, n_train: int
                       ) -> tuple[tuple[str, ...], dict[str, str], list[str]]:
    """Under ``genres_all``: the models trained (those with a multi-label form,
    :data:`fmadask.ml.multilabel.FORMS`), the estimator each runs as, and what the log and
    train.json say of what is left out."""
    from fmadask.ml.multilabel import FORMS, check_options, plan_models, runs

    check_options(config)
    trained, left = plan_models(config.models)
    if not trained:
        raise OptionError("classical.models", f"{{option}} {', '.join(config.models)} have no "
                          f"multi-label form: under {setting('data.target')} genres_all choose "
                          f"some of {', '.join(FORMS)}")
    notes = [f"not trained under genres_all (no multi-label form that scales to 161 genres): "
             f"{', '.join(left)}"] if left else []
    if set(config.search_models) - set(trained):
        notes.append(f"not searched under genres_all: "
                     f"{', '.join(m for m in config.search_models if m not in trained)}")
    return tuple(trained), runs(n_train, config.scale_threshold), notes
