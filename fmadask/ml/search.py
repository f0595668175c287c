"""Hyper-parameter search on a Dask cluster: one engine for random and Bayesian search.

:func:`run_search` asks Optuna for candidates (``RandomSampler`` for 'random', the TPE sampler
for 'bayes'; ask-and-tell in this process, no storage server) and runs every cross-validation fold
of every candidate as a task on the workers:

- **data sent once**: the training rows and the folds are scattered to every worker before the
  first fit (a task carries only a fold number and parameters), so the scheduler may place any
  fit on any worker and a worker killed mid-search leaves copies on the others;
- **successive halving on rows**: candidates are run in waves; each wave first fits every
  candidate on a small stratified part of each fold's training rows, keeps the best third, fits
  those on three times more rows, and so on up to all the rows, so clearly losing candidates
  cost a ninth (or a third) of a full fit;
- **resumable**: each finished trial (pruned, complete or failed) is written atomically to
  ``trials_dir/trial-NNNN.json``. Run again with the same settings, the search replays the same
  candidates (seeded samplers, results told in a fixed order) and reads the finished trials instead
  of fitting them, so a killed search carries on where it stopped;
- **survives a lost worker**: Dask re-runs a lost worker's fits elsewhere; a fit that keeps
  killing workers scores NaN for that fold instead of stopping the search.

The score is accuracy, or balanced accuracy when the genres are unbalanced, or macro average
precision for the multi-label target (:func:`score_for`),
each fold scaled by a scaler fitted on its own training part.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmadask.atomic import write_json
from fmadask.cluster import workers_info
from fmadask.errors import DataError, FmadaskError
from fmadask.ml.fit import Candidate, error_line, fold_score
from fmadask.ml.models import Dimension
from fmadask.ml.multilabel import fold_pr_auc
from fmadask.ml.persist import jsonable
from fmadask.options import setting

#: Successive halving keeps the best 1/ETA of the candidates at each rung, on ETA times the rows.
ETA = 3
#: At most this many rungs (fractions 1/9, 1/3, 1 of the fold's training rows).
MAX_RUNGS = 3
#: A rung fits on at least this many rows per genre on average (smaller parts rank noisily).
MIN_RUNG_ROWS_PER_CLASS = 10
#: Classes are 'unbalanced' (the search scores balanced accuracy) past this largest / smallest
#: count ratio. FMA small's genres are equal; FMA medium's go from 7,103 to 21 tracks.
UNBALANCED_RATIO = 1.5


@dataclass
class SearchOutcome:
    """Result of a hyper-parameter search."""

    method: str
    best_params: dict[str, Any]
    #: Mean cross-validation score (``score``) of the best candidate on all rows.
    best_score: float
    #: One row per trial: ``number``, its parameters, ``mean_score``, ``std_score`` (on the last
    #: rung it reached), ``fraction`` (of the rows, on that rung), ``state``, ``error``.
    trials: pd.DataFrame
    #: Addresses of the workers that ran the candidates' fits.
    fit_workers: list[str] = field(default_factory=list)
    n_splits: int = 5
    seconds: float = float("nan")
    #: 'accuracy' or 'balanced_accuracy'.
    score: str = "accuracy"
    #: Successive halving's row fractions, smallest first.
    fractions: list[float] = field(default_factory=lambda: [1.0])
    #: Trials read from ``trials_dir`` instead of being fitted.
    resumed: int = 0


def n_splits_for(y: np.ndarray, cv: int) -> int:
    """Folds to use: ``cv``, but no more than the smallest class has members, so that every fold's
    training part holds every class (XGBoost requires classes ``0 .. k-1`` all present).

    Multi-label ``y`` (0/1 rows, ``genres_all``): ``cv``, at most one fold per row (a fold's
    held-out rows score the labels they hold, :func:`fmadask.ml.fit.fold_score`).

    Raises
    ------
    DataError
        When a class has a single training track.
    """
    if np.ndim(y) == 2:
        return max(2, min(cv, len(y)))
    smallest = int(np.bincount(y).min())
    if smallest < 2:
        raise DataError("a genre has a single training track: cross-validation needs at least 2 "
                        f"per genre (use more data or set {setting('classical.search')} to "
                        "none)")
    return min(cv, smallest)


def score_for(y: np.ndarray) -> str:
    """'balanced_accuracy' when the classes of ``y`` are unbalanced (largest / smallest count
    above :data:`UNBALANCED_RATIO`), else 'accuracy' (the study's score on FMA small);
    'pr_auc_macro' (macro average precision) for multi-label ``y`` (``genres_all``)."""
    if np.ndim(y) == 2:
        return "pr_auc_macro"
    counts = np.bincount(y)
    counts = counts[counts > 0]
    return "balanced_accuracy" if counts.max() > UNBALANCED_RATIO * counts.min() else "accuracy"


def halving_fractions(n_candidates: int, fold_rows: int, n_classes: int) -> list[float]:
    """Row fractions of successive halving's rungs for a wave of ``n_candidates``.

    As many rungs as halving can prune (``1 + log_ETA(n)``, at most :data:`MAX_RUNGS`), dropping
    those whose part of a fold would hold fewer than :data:`MIN_RUNG_ROWS_PER_CLASS` rows per
    class; the last rung is always all the rows.
    """
    rungs = min(MAX_RUNGS, 1 + int(math.floor(math.log(max(n_candidates, 1), ETA) + 1e-9)))
    fractions = [float(ETA) ** -k for k in range(rungs - 1, -1, -1)]
    return [f for f in fractions
            if f == 1.0 or f * fold_rows >= MIN_RUNG_ROWS_PER_CLASS * n_classes]


@dataclass(frozen=True)
class SearchSettings:
    """What :func:`run_search` tunes and how.

    Attributes
    ----------
    name : str
        Estimator to tune: a study model or a substitute (:mod:`fmadask.ml.models`).
    space : mapping of str to Dimension
        Parameters to tune.
    method : {'random', 'bayes'}
        Optuna's ``RandomSampler`` or TPE sampler (``constant_liar``, so that candidates asked
        together differ).
    n_iter : int
        Candidates.
    cv : int
        Folds (fewer if a class is smaller, see :func:`n_splits_for`).
    seed : int
        Seed of the sampler, the folds, the row parts and the estimators.
    scaler : {'minmax', 'standard'}
    base_params : mapping
        Fixed overrides of the model's defaults.
    score : {'accuracy', 'balanced_accuracy', 'pr_auc_macro'}, optional
        Default :func:`score_for` ``(y)``.
    class_weight : {None, 'balanced'}
        Passed to every fit (:func:`fmadask.ml.fit.balanced_weights`).
    trials_dir : str or Path, optional
        Folder of the finished trials, read on start (resume) and written as they finish.
        Pass one folder per search setting (see :func:`trials_folder`).
    wave : int, optional
        Candidates halved together. Default: all ``n_iter`` for a random search (one wave); for
        a Bayesian one ``max(9, 2 x workers)``, so TPE learns between waves.
    """

    name: str
    space: Mapping[str, Dimension]
    method: str = "random"
    n_iter: int = 20
    cv: int = 5
    seed: int = 0
    scaler: str = "minmax"
    base_params: Mapping[str, Any] = field(default_factory=dict)
    score: str | None = None
    class_weight: str | None = None
    trials_dir: str | Path | None = None
    wave: int | None = None


def run_search(client: Any, X: np.ndarray, y: np.ndarray,
               settings: SearchSettings) -> SearchOutcome:
    """Stratified k-fold random or Bayesian search with successive halving, on ``client``.

    Parameters
    ----------
    client : distributed.Client
        Cluster that runs the fits.
    X : numpy.ndarray, shape (n, d)
        Unscaled training features (each fold fits its own scaler).
    y : numpy.ndarray, shape (n,) or (n, k)
        Class codes ``0 .. k-1``, or 0/1 labels (``genres_all``: shuffled folds, scored by
        macro average precision).
    settings : SearchSettings
        The estimator, its space, the sampler, the folds, the scoring and where trials are kept.

    Returns
    -------
    SearchOutcome

    Raises
    ------
    FmadaskError
        When every candidate failed.
    """
    import optuna
    from sklearn.model_selection import KFold, StratifiedKFold

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name, space, method, n_iter, seed = (settings.name, settings.space, settings.method,
                                         settings.n_iter, settings.seed)
    score = settings.score or score_for(y)
    # Multi-label candidates are fitted and scored in their multi-label form.
    held_score = fold_pr_auc if score == "pr_auc_macro" else None
    n_splits = n_splits_for(y, settings.cv)
    # (a genres_all label set is no class to stratify by: plain shuffled folds)
    splitter = KFold if np.ndim(y) == 2 else StratifiedKFold
    folds = [(a.astype(np.int64), b.astype(np.int64))
             for a, b in splitter(n_splits, shuffle=True, random_state=seed).split(X, y)]
    if method == "random":
        sampler: Any = optuna.samplers.RandomSampler(seed=seed)
        wave = settings.wave or n_iter
    elif method == "bayes":
        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True,
                                             n_startup_trials=min(10, max(2, n_iter // 3)))
        wave = settings.wave or max(ETA ** 2, 2 * len(workers_info(client)))
    else:
        raise FmadaskError(f"unknown search method {method!r}")
    study = optuna.create_study(direction="maximize", sampler=sampler)
    # Sent once, to every worker: tasks then carry a fold number, never the rows.
    X_f, y_f, folds_f = client.scatter([X, y, folds], broadcast=True, hash=False)
    base = dict(settings.base_params)
    folder = Path(settings.trials_dir) if settings.trials_dir is not None else None
    records: dict[int, dict[str, Any]] = {}
    resumed = 0
    start = time.perf_counter()
    fold_rows = min(len(train) for train, _ in folds)
    n_classes = y.shape[1] if np.ndim(y) == 2 else len(np.unique(y))
    for first in range(0, n_iter, wave):
        asked = [study.ask() for _ in range(min(wave, n_iter - first))]
        params = {t.number: {k: dim.suggest(t, k) for k, dim in space.items()} for t in asked}
        stored = {n: _read_trial(folder, n, p) for n, p in params.items()}
        stored = {n: r for n, r in stored.items() if r is not None}
        resumed += sum(1 for r in stored.values() if r["state"] != "RUNNING")
        fractions = halving_fractions(len(asked), fold_rows, n_classes)

        def fit(number: int, fraction: float, priority: float) -> list[Any]:
            candidate = Candidate(name, {**base, **params[number]}, seed, settings.scaler,
                                  score, settings.class_weight)
            return [client.submit(fold_score, candidate, X_f, y_f, folds_f, fold, fraction,
                                  held_score, pure=False, priority=priority)
                    for fold in range(n_splits)]

        wave_records = _halve(fit, params, stored, fractions,
                              lambda record: _write_trial(folder, record))
        for number in sorted(params):              # a fixed order: replays tell TPE the same
            _tell(study, asked[number - first], wave_records[number])
            records[number] = wave_records[number]
    seconds = time.perf_counter() - start
    return _outcome(name, method, records, n_splits, seconds, score, resumed,
                    halving_fractions(min(wave, n_iter), fold_rows, n_classes))


def _halve(fit: Any, params: dict[int, dict], stored: dict[int, dict],
           fractions: list[float], save: Any) -> dict[int, dict]:
    """Run successive halving over one wave of candidates.

    ``fit(number, fraction, priority)`` submits a candidate's folds and returns their futures;
    ``save(record)`` persists a record. A record read from an earlier run (``stored``) keeps the
    rungs it finished, which are not fitted again. Returns one record per trial: ``number``,
    ``params``, ``rungs`` (per rung: ``fraction``, ``scores``, ``seconds``), ``state``
    ('COMPLETE', 'PRUNED' or 'FAIL'), ``workers``, ``errors``.
    """
    from distributed import as_completed

    records = {}
    for number, p in params.items():
        record = stored.get(number) or {"number": number, "params": p, "rungs": [],
                                        "workers": [], "errors": [], "state": "RUNNING"}
        # Rungs of another halving schedule (a different number of candidates) are not reused.
        kept = [r for r, f in zip(record["rungs"], fractions) if r["fraction"] == f]
        if len(kept) < len(record["rungs"]):
            record["rungs"], record["state"] = kept, "RUNNING"
        records[number] = record
    alive = sorted(params)
    for rung, fraction in enumerate(fractions):
        pending: dict[Any, int] = {}               # future -> trial number
        results: dict[int, list] = {}
        expected: dict[int, int] = {}
        for number in alive:
            record = records[number]
            if len(record["rungs"]) > rung:
                continue                            # finished by an earlier run
            # Longest first, so that the rung's last fits end together: a candidate's time on
            # the previous rung predicts its time on this one.
            last = record["rungs"][-1]["seconds"] if record["rungs"] else 0.0
            futures = fit(number, fraction, priority=last)
            pending.update(dict.fromkeys(futures, number))
            results[number], expected[number] = [], len(futures)
        for future in as_completed(list(pending)):
            number = pending[future]
            results[number].append(_result(future))
            if len(results[number]) < expected[number]:
                continue
            record = records[number]
            done = results[number]
            record["rungs"].append({"fraction": fraction, "scores": [r[0] for r in done],
                                    "seconds": float(sum(r[3] for r in done))})
            record["workers"] = sorted(set(record["workers"]) | {r[1] for r in done if r[1]})
            record["errors"] += [r[2] for r in done if r[2]]
            save(record)                           # a killed search restarts after this rung
        means = {n: _mean(records[n]["rungs"][rung]["scores"]) for n in alive}
        last_rung = rung == len(fractions) - 1
        keep = len(alive) if last_rung else max(1, math.ceil(len(alive) / ETA))
        # Failed candidates (NaN) rank last; ties by trial number, so that replays agree.
        ranked = sorted(alive, key=lambda n: (-np.nan_to_num(means[n], nan=-np.inf), n))
        for number in alive:
            record = records[number]
            state = ("FAIL" if np.isnan(means[number]) else
                     "COMPLETE" if last_rung else
                     "RUNNING" if number in ranked[:keep] else "PRUNED")
            if state != record["state"]:
                record["state"] = state
                save(record)
        alive = [n for n in ranked[:keep] if records[n]["state"] == "RUNNING"]
    return records


def _result(future: Any) -> tuple[float, str, str | None, float]:
    """A fold's result; a fit that could not run (a worker lost too often) scores NaN."""
    try:
        return tuple(future.result())  # type: ignore[return-value]
    except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: this fold failed, not the search
        return float("nan"), "", error_line(exc), 0.0


def _mean(scores: list[float]) -> float:
    values = np.asarray(scores, dtype=float)
    return float("nan") if np.isnan(values).all() else float(np.nanmean(values))


def _tell(study: Any, trial: Any, record: dict) -> None:
    """Tell Optuna a finished trial: its value, or PRUNED with its rungs' means, or FAIL."""
    from optuna.trial import TrialState

    for step, rung in enumerate(record["rungs"]):
        value = _mean(rung["scores"])
        if not np.isnan(value):
            trial.report(value, step)
    if record["state"] == "COMPLETE":
        study.tell(trial, _mean(record["rungs"][-1]["scores"]))
    else:
        study.tell(trial, state=TrialState[record["state"]])


def trials_folder(root: str | Path, name: str, method: str, settings: Mapping[str, Any],
                  X: np.ndarray, y: np.ndarray) -> Path:
    """``root/<name>-<method>-<key>``: the folder of a search's finished trials.

    ``key`` hashes everything that decides the trials (``settings``: seed, folds, space, score...
    and the data) except the number of candidates, so that the same search resumes and a longer
    one carries on from a shorter one's trials.
    """
    digest = hashlib.sha1(json.dumps(jsonable(settings), sort_keys=True, default=repr).encode())
    digest.update(np.ascontiguousarray(X).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    return Path(root) / f"{name}-{method}-{digest.hexdigest()[:10]}"


def _trial_path(folder: Path, number: int) -> Path:
    return folder / f"trial-{number:04d}.json"


def _read_trial(folder: Path | None, number: int, params: dict) -> dict | None:
    """A finished trial written by an earlier run, if its candidate is the one asked now."""
    if folder is None or not _trial_path(folder, number).is_file():
        return None
    try:
        record = json.loads(_trial_path(folder, number).read_text())
    except (OSError, json.JSONDecodeError):
        return None                            # unreadable: fit it again (and rewrite it)
    if record.get("params") != jsonable(params) or record.get("state") not in (
            "RUNNING", "COMPLETE", "PRUNED", "FAIL"):
        return None
    for rung in record["rungs"]:               # JSON has no NaN: failed folds were written null
        rung["scores"] = [float("nan") if s is None else s for s in rung["scores"]]
    return record


def trial_states(folder: str | Path) -> dict[int, str]:
    """The trials an earlier search left in ``folder`` (:func:`trials_folder`): number -> state
    ('COMPLETE', 'PRUNED', 'FAIL', or 'RUNNING' for one stopped between rungs). Unreadable
    files are left out: the search fits those again."""
    states = {}
    for path in sorted(Path(folder).glob("trial-*.json")):
        try:
            number = int(path.stem.removeprefix("trial-"))
            state = json.loads(path.read_text())["state"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if state in ("RUNNING", "COMPLETE", "PRUNED", "FAIL"):
            states[number] = state
    return states


def _write_trial(folder: Path | None, record: dict) -> None:
    if folder is not None:
        write_json(jsonable(record), _trial_path(folder, record["number"]))


def _outcome(name: str, method: str, records: dict[int, dict], n_splits: int, seconds: float,
             score: str, resumed: int, fractions: list[float]) -> SearchOutcome:
    rows = []
    for number, record in sorted(records.items()):
        last = record["rungs"][-1] if record["rungs"] else {"scores": [np.nan], "fraction": 0}
        values = np.asarray(last["scores"], dtype=float)
        failed = np.isnan(values).all()
        rows.append({"number": number, **record["params"],
                     "mean_score": np.nan if failed else float(np.nanmean(values)),
                     "std_score": np.nan if failed else float(np.nanstd(values)),
                     "fraction": last["fraction"], "state": record["state"],
                     "error": record["errors"][0] if record["errors"] else ""})
    table = pd.DataFrame(rows)
    complete = table[table["state"] == "COMPLETE"]
    if complete.empty:
        first = table["error"].iloc[0] if len(table) else ""
        raise FmadaskError(f"{name}: every candidate of the {method} search failed ({first}): "
                           "check the search space")
    best = complete.loc[complete["mean_score"].idxmax()]
    workers = sorted(set().union(*(r["workers"] for r in records.values())))
    return SearchOutcome(method, {k: _plain(v) for k, v in records[int(best["number"])]["params"]
                                  .items()},
                         float(best["mean_score"]), table, workers, n_splits, seconds, score,
                         fractions, resumed)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (for JSON and estimator parameters)."""
    return value.item() if isinstance(value, np.generic) else value
