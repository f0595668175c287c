"""Executing a classical plan (:func:`execute_classical`): scale, fit every model as one Dask
task, search and refit, score, save the models, write the table, figures and ``train.json``.
The plan, and :func:`fmadask.ml.train.train` that makes and runs one, are
:mod:`fmadask.ml.train`'s.
"""
from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fmadask.cluster import WORKER_TIMEOUT_S, workers_info
from fmadask import storage
from fmadask.lock import hold
from fmadask.fma.splits import EVAL_SPLITS
from fmadask.records import package_versions
from fmadask.ml.data import Dataset
from fmadask.ml.fit import FitOutcome, fit_and_predict
from fmadask.ml.models import (MODELS, SCALE_THRESHOLD_ROWS, SCALED, SUBSTITUTES, class_scores,
                               make_scaler, model_label)
from fmadask.ml.persist import jsonable, save_classical
from fmadask.ml.search import SearchOutcome, SearchSettings, run_search, score_for
from fmadask.atomic import atomic_path, writable_folder, write_json
from fmadask.report.metrics import SCORE_NAMES, normalized_confusion, scores
from fmadask.report.multilabel import RESULT_COLUMNS as MULTILABEL_SCORES
from fmadask.report.plots import confusion_figure
from fmadask.report.tables import markdown_table
from fmadask.runfolder import (BEST_FILE, CONFUSION_DIR, MODEL_CARD, MODELS_DIR,
                               RESULTS_FILE, SEARCH_DIR, TABLE_FILE,
                               TRAIN_RECORD, UNSUPERVISED_DIR)

if TYPE_CHECKING:
    from fmadask.ml.plan import ClassicalPlan, SearchPlan

#: Files uploaded after all others (they list or vouch for the rest).
MANIFESTS = (MODEL_CARD, BEST_FILE, TRAIN_RECORD)
#: Columns of results.csv.
RESULT_COLUMNS = (["model", "name", "label", "search"]
                  + [f"{s}_{m}" for s in EVAL_SPLITS for m in SCORE_NAMES]
                  + ["cv_score", "search_score", "runs_as", "class_weight", "n_train",
                     "fit_seconds", "worker", "params", "error"])
#: Columns of a multi-label results.csv (``genres_all``): the metrics module's scores.
MULTILABEL_COLUMNS = (["model", "name", "label", "search", *MULTILABEL_SCORES, "cv_score"]
                      + ["runs_as", "n_train", "fit_seconds", "worker", "params", "error"])
# Fit the slowest models first so that a few workers finish the table together (longest
# processing time first); measured on FMA-small-sized tables.
_SLOW_FIRST = ("gradient_boosting", "svc", "nusvc", "random_forest", "xgboost", "adaboost",
               "extra_trees", "logistic_regression", "linear_svc", "decision_tree")


def _fit_order(name: str) -> int:
    """Where model ``name`` is submitted: by :data:`_SLOW_FIRST`; a model not measured there
    (one added to :data:`~fmadask.ml.models.MODELS`) after those."""
    return _SLOW_FIRST.index(name) if name in _SLOW_FIRST else len(_SLOW_FIRST)

#: Packages whose versions train.json and the model cards record.
VERSIONED = ("fmadask", "scikit-learn", "xgboost", "dask", "distributed", "dask-ml", "numpy",
             "pandas")



def execute_classical(plan: ClassicalPlan, dataset: Dataset, client: Any = None, *,
                      scheduler: str | None = None, workers: int | None = None,
                      worker_timeout: float = WORKER_TIMEOUT_S,
                      log: Callable[[str], None] = lambda message: None,
                      storage_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Run a :class:`~fmadask.ml.plan.ClassicalPlan` under its folder's lock: scale, fit,
    search, refit, score, save, and write the table, figures and ``train.json``.

    Plan under the same lock (as :func:`~fmadask.ml.train.train` does: the lock is re-entrant)
    for a plan that still holds when it runs.

    Parameters
    ----------
    plan : ClassicalPlan
    dataset : Dataset
        The data the plan was made for.
    client : distributed.Client, optional
        Cluster to run on; without one, :func:`fmadask.cluster.get_client` connects to
        ``scheduler`` or starts a local cluster of ``workers`` processes.
    scheduler, workers, worker_timeout : optional
        See ``client``.
    log : callable, optional
        Called with a line per step and per finished model (progress).
    storage_options : mapping, optional
        fsspec options when the output folder is a URL: outputs are then written into a local
        temporary folder and uploaded at the end, each file whole, the model cards and
        ``train.json`` last.

    Returns
    -------
    pandas.DataFrame
        results.csv's rows (see :func:`~fmadask.ml.train.train`).
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(hold([plan.owner, plan.out], "fmadask train", storage_options))
        # The client writes the outputs (for object storage into a private local folder,
        # uploaded whole when the stage is done).
        with storage.staged(plan.out, storage_options, last=MANIFESTS) as out:
            writable_folder(out)                      # a file or read-only folder: refused now
            if client is None:
                from fmadask.cluster import get_client

                client = stack.enter_context(get_client(scheduler=scheduler, workers=workers,
                                                        worker_timeout=worker_timeout))
            stage = _Stage if dataset.target == "genre_top" else _MultiLabelStage
            results = stage(plan, dataset, client, out, log).run()
        if storage.is_remote(plan.out):
            log(f"classical: uploaded to {storage.redact(plan.out)}")
        return results


class _Stage:
    """One run of a classical plan (holds the data, scaler and cluster it shares)."""

    def __init__(self, plan: ClassicalPlan, dataset: Dataset, client: Any, out: Path,
                 log: Callable[[str], None]) -> None:
        self.plan, self.config, self.runs = plan, plan.config, plan.runs
        self.client, self.dataset, self.out, self.log = client, dataset, out, log
        self.classes = dataset.classes
        arrays = {s: dataset.xy(s) for s in ("training", *EVAL_SPLITS)}
        self.X = {s: xy[0] for s, xy in arrays.items()}
        self.y = {s: xy[1] for s, xy in arrays.items()}

    # ------------------------------------------------------------------------------- run

    def run(self) -> pd.DataFrame:
        plan, config = self.plan, self.config
        start = time.perf_counter()
        n_workers = len(workers_info(self.client))
        counts = plan.counts
        self.log(f"classical: {len(self.classes)} genres, {counts['training']} training / "
                 f"{counts['validation']} validation / {counts['test']} test tracks, "
                 f"{len(config.models)} model(s), {n_workers} worker(s)")
        self.log(f"classical: {scale_rule_text(counts['training'], plan.threshold, self.runs)}")
        if self.dataset.info.get("excluded_no_genre"):
            self.log(f"classical: {self.dataset.info['excluded_no_genre']} tracks without a "
                     "single top-level genre left out (target genre_top)")
        self.scaler = self._fit_scaler()
        scaled = {s: self.scaler.transform(self.X[s]).astype(np.float32) for s in self.X}
        jobs = [(n, dict(p)) for n, p in plan.fits]
        # The table's fits run on the cluster while the searches run: a search fills the
        # workers that the table's short fits leave idle behind its slowest one.
        pending = self._submit(jobs, scaled)
        searches = {s.name: self._search(s) for s in plan.searches}
        rows = [self._record(outcome, "none", None)
                for outcome in self._gather(jobs, pending, scaled)]
        if searches:
            method = config.search
            refits = [(s.name, {**s.base_params, **searches[s.name].best_params})
                      for s in plan.searches]
            rows += [self._record(o, method, searches[o.name])
                     for o in self._gather(refits, self._submit(refits, scaled), scaled,
                                           tag=f"-{method}")]
        results = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
        self._write_tables(results)
        best = self._write_best(results)
        views = None
        if config.unsupervised:
            from fmadask.ml.unsupervised import unsupervised_views

            self.log("classical: unsupervised views (PCA, t-SNE, K-means)")
            views = unsupervised_views(self.client, self.scaler.transform(
                self.dataset.features.to_numpy(np.float32)), self.dataset.genre.to_numpy(),
                self.out / UNSUPERVISED_DIR, seed=config.seed)
        self._write_record(n_workers, searches, best, views, time.perf_counter() - start)
        self.log(f"classical: table in {self.out / TABLE_FILE}, figures in "
                 f"{self.out / CONFUSION_DIR} and {self.out / UNSUPERVISED_DIR}")
        return results

    # ---------------------------------------------------------------------------- scaling

    def _fit_scaler(self) -> Any:
        """dask-ml scaler fitted on the training rows, which are spread over the workers."""
        from fmadask.ml.unsupervised import to_dask_array

        scaler = make_scaler(self.config.scaler)
        with self.client.as_current():
            scaler.fit(to_dask_array(self.client, self.X["training"]))
        return scaler


    # ---------------------------------------------------------------------------- fitting

    def _submit(self, jobs: list[tuple[str, dict]], scaled: dict[str, np.ndarray]
                ) -> dict[Any, str]:
        """Start fitting each (model, params) as a Dask task, slowest first; return the futures.

        XGBoost with ``distributed_xgb`` is not a task: :meth:`_gather` trains it across the
        workers.
        """
        evaluate = {s: scaled[s] for s in EVAL_SPLITS}
        X_train, y_train, evaluate_f = self.client.scatter(
            [scaled["training"], self.y["training"], evaluate], broadcast=False)
        futures = {}
        for name, params in sorted(jobs, key=lambda job: _fit_order(job[0])):
            if name == "xgboost" and self.config.distributed_xgb:
                continue
            futures[self.client.submit(fit_and_predict, name, params, self.config.seed, X_train,
                                       y_train, evaluate_f, self.runs[name], self.config.weighting,
                                       pure=False,
                                       key=f"fit-{name}-{uuid.uuid4().hex[:8]}")] = name
        return futures

    def _gather(self, jobs: list[tuple[str, dict]], futures: dict[Any, str],
                scaled: dict[str, np.ndarray], tag: str = "") -> list[FitOutcome]:
        """Wait for the fits of :meth:`_submit` (announcing each); results in ``jobs`` order."""
        from distributed import as_completed

        done: dict[str, FitOutcome] = {}
        for name, params in jobs:
            if name == "xgboost" and self.config.distributed_xgb:
                done[name] = self._fit_xgboost_dask(params, scaled)
                self._announce(done[name], tag)
        for future in as_completed(futures):
            done[futures[future]] = future.result()
            self._announce(done[futures[future]], tag)
        return [done[name] for name, _ in jobs]

    def _fit_xgboost_dask(self, params: dict, scaled: dict[str, np.ndarray]) -> FitOutcome:
        from fmadask.ml.distributed_xgb import fit_xgboost_dask

        from fmadask.ml.fit import balanced_weights

        key = self.runs["xgboost"]
        defaults = (MODELS.get(key) or SUBSTITUTES[key]).defaults
        return fit_xgboost_dask(self.client, {**defaults, **params}, self.config.seed,
                                scaled["training"], self.y["training"],
                                {s: scaled[s] for s in EVAL_SPLITS},
                                balanced_weights(self.y["training"], self.config.weighting))

    def _announce(self, outcome: FitOutcome, tag: str = "") -> None:
        name = outcome.name + tag
        if outcome.error:
            self.log(f"  {name:<20} FAILED: {outcome.error}")
            return
        val = _accuracy(self.y["validation"], outcome.predictions.get("validation"))
        test = _accuracy(self.y["test"], outcome.predictions.get("test"))
        self.log(f"  {name:<20} validation {val:.3f}  test {test:.3f}  "
                 f"({outcome.seconds:.1f} s on {outcome.worker})")

    def _search(self, search: SearchPlan) -> SearchOutcome:
        config = self.config
        folder = self.out / SEARCH_DIR / search.folder
        self.log(f"  {search.name}: {search.method} search, {search.n_iter} candidates x "
                 f"{config.cv} folds, successive halving, scored by {search.score}; trials in "
                 f"{folder}")
        settings = SearchSettings(search.runs_as, search.space, search.method,
                                  n_iter=search.n_iter, cv=config.cv, seed=config.seed,
                                  scaler=config.scaler, base_params=dict(search.base_params),
                                  score=search.score, class_weight=config.weighting,
                                  trials_dir=folder)
        outcome = run_search(self.client, self.X["training"], self.y["training"], settings)
        with atomic_path(self.out / SEARCH_DIR / f"{search.name}-{search.method}.csv") as tmp:
            outcome.trials.to_csv(tmp, index=False)
        states = outcome.trials["state"].value_counts().to_dict()
        self.log(f"  {search.name}: best cv {search.score} {outcome.best_score:.3f} with "
                 f"{outcome.best_params} ({outcome.seconds:.1f} s on {len(outcome.fit_workers)} "
                 f"worker(s); {states}; {outcome.resumed} trial(s) read from an earlier run)")
        return outcome

    # ---------------------------------------------------------------------------- outputs

    def _record(self, outcome: FitOutcome, search: str, searched: SearchOutcome | None) -> dict:
        """Score, save and draw one fitted model; return its results row."""
        folder = outcome.name if search == "none" else f"{outcome.name}-{search}"
        key = self.runs[outcome.name]
        label = (MODELS[outcome.name].label
                 + ("" if key == outcome.name else f" (ran as {model_label(key)})")
                 + ("" if search == "none" else f" ({search} search)"))
        row: dict[str, Any] = {
            "model": folder, "name": outcome.name, "label": label, "search": search,
            "cv_score": searched.best_score if searched else np.nan,
            "search_score": searched.score if searched else "",
            "runs_as": key, "class_weight": self.config.class_weight,
            "n_train": len(self.y["training"]), "fit_seconds": round(outcome.seconds, 3),
            "worker": outcome.worker, "params": json.dumps(outcome.params, sort_keys=True,
                                                           default=str),
            "error": outcome.error or ""}
        metrics = {}
        for split in EVAL_SPLITS:
            predicted = outcome.predictions.get(split, np.empty(0, int))
            values = (scores(self.y[split], predicted) if outcome.error is None
                      else dict.fromkeys(SCORE_NAMES, np.nan))
            metrics[split] = values
            row.update({f"{split}_{k}": v for k, v in values.items()})
        if outcome.error is None:
            self._save(folder, label, outcome, search, searched, metrics)
        return row

    def _save(self, folder: str, label: str, outcome: FitOutcome, search: str,
              searched: SearchOutcome | None, metrics: dict) -> None:
        from sklearn.pipeline import Pipeline

        matrix = normalized_confusion(self.y["test"], outcome.predictions["test"],
                                      labels=list(range(len(self.classes))))
        test = metrics["test"]["accuracy"]
        confusion_figure(matrix, self.classes, self.out / CONFUSION_DIR / f"{folder}.png",
                         title=f"{label}: test accuracy {test:.3f}")
        pipeline = Pipeline([("scale", self.scaler), ("model", outcome.estimator)])
        _, outputs = class_scores(pipeline, self.X["test"][:1])
        card = {"name": outcome.name, "label": label, "search": search,
                "params": outcome.params, "classes": self.classes,
                "feature_columns": list(self.dataset.features.columns),
                "features": {k: self.dataset.info.get(k) for k in
                             ("sr", "fma_compat", "decoders", "max_seconds")},
                "scaler": self.config.scaler, "outputs": outputs, "metrics": metrics,
                "cv_score": searched.best_score if searched else None,
                "search_score": searched.score if searched else None,
                "runs_as": self.runs[outcome.name], "class_weight": self.config.weighting,
                "trained_on": self.dataset.info, "seed": self.config.seed,
                "versions": package_versions(VERSIONED)}
        save_classical(self.out / MODELS_DIR / folder, pipeline, card)

    def _write_tables(self, results: pd.DataFrame) -> None:
        with atomic_path(self.out / RESULTS_FILE) as tmp:
            results.to_csv(tmp, index=False)
        with atomic_path(self.out / TABLE_FILE) as tmp:
            tmp.write_text(results_markdown(results, self.dataset.info, self.plan.threshold))

    def _write_best(self, results: pd.DataFrame) -> dict | None:
        """Record the model with the best validation score: accuracy, or balanced accuracy on
        unbalanced genres (:func:`score_for`). Test scores are not used to choose, so that they
        stay unbiased estimates."""
        ok = results[results["error"] == ""]
        if ok.empty:
            return None
        chosen_by = score_for(self.y["training"])
        key = ok[f"validation_{chosen_by}"].fillna(-1.0)
        row = ok.loc[key.idxmax()]
        best = {"model": row["model"], "path": f"models/{row['model']}", "chosen_by": chosen_by,
                "validation_accuracy": row["validation_accuracy"],
                "validation_balanced_accuracy": row["validation_balanced_accuracy"],
                "test_accuracy": row["test_accuracy"],
                "test_balanced_accuracy": row["test_balanced_accuracy"]}
        write_json(jsonable(best), self.out / BEST_FILE)
        return best

    def _write_record(self, n_workers: int, searches: dict[str, SearchOutcome],
                      best: dict | None, views: dict | None, seconds: float) -> None:
        record = {
            **self.plan.record, "workers": n_workers,
            "searches": {n: {"method": s.method, "best_params": s.best_params,
                             "score": s.score, "best_cv_score": s.best_score,
                             "folds": s.n_splits, "candidates": len(s.trials),
                             "states": s.trials["state"].value_counts().to_dict(),
                             "halving_fractions": s.fractions, "resumed": s.resumed,
                             "fit_workers": s.fit_workers,
                             "seconds": round(s.seconds, 3)} for n, s in searches.items()},
            "best": best, "unsupervised": views, "seconds": round(seconds, 3),
            "versions": package_versions(VERSIONED)}
        write_json(jsonable(record), self.out / TRAIN_RECORD)


class _MultiLabelStage(_Stage):
    """One run of a classical plan under the multi-label target (:mod:`fmadask.ml.multilabel`):
    the same scaler and tasks; per-genre thresholds on validation, the metrics module's scores,
    a label-prior baseline row."""

    def run(self) -> pd.DataFrame:
        from fmadask.ml.multilabel import PRIOR, evaluate_scores
        from fmadask.report.multilabel import prior_probabilities

        plan, start = self.plan, time.perf_counter()
        n_workers, counts = len(workers_info(self.client)), plan.counts
        self.log(f"classical: genres_all, {len(self.classes)} genre labels, {counts['training']} "
                 f"training / {counts['validation']} validation / {counts['test']} test tracks, "
                 f"{len(plan.fits)} model(s), {n_workers} worker(s)")
        for line in plan.record.get("notes", []):
            self.log(f"classical: {line}")
        self.scaler = self._fit_scaler()
        scaled = {s: self.scaler.transform(self.X[s]).astype(np.float32) for s in self.X}
        prior = {s: prior_probabilities(self.y["training"], len(self.y[s])) for s in EVAL_SPLITS}
        evaluations = {PRIOR: evaluate_scores(self.dataset, prior)}
        rows = [self._multi_row(PRIOR, "Label prior (baseline)", evaluations[PRIOR])]
        # The table's fits run on the cluster while the searches (scored by macro average
        # precision on folds of the training rows) run; then the searched models are refitted.
        jobs = [(n, dict(p)) for n, p in plan.fits]
        pending = self._submit_multi(jobs, scaled)
        searches = {s.name: self._search(s) for s in plan.searches}
        fitted = [(o, "none") for o in self._gather_multi(jobs, pending, scaled)]
        if searches:
            refits = [(s.name, {**s.base_params, **searches[s.name].best_params})
                      for s in plan.searches]
            fitted += [(o, self.config.search) for o in
                       self._gather_multi(refits, self._submit_multi(refits, scaled), scaled)]
        for outcome, search in fitted:
            name = outcome.name if search == "none" else f"{outcome.name}-{search}"
            label = MODELS[outcome.name].label + ("" if search == "none" else f" ({search} search)")
            evaluation = None if outcome.error else evaluate_scores(self.dataset, outcome.scores)
            rows.append(self._multi_row(name, label, evaluation, outcome, search,
                                        searches.get(outcome.name) if search != "none" else None))
            if evaluation is not None:
                evaluations[name] = evaluation
                scores = evaluation.scores
                self.log(f"  {name:<20} PR-AUC validation {scores['validation']['pr_auc_macro']:.3f}"
                         f"  test {scores['test']['pr_auc_macro']:.3f}  ({outcome.seconds:.1f} s "
                         f"on {outcome.worker})")
                self._save_multi(name, label, search, outcome, evaluation)
        results = pd.DataFrame(rows, columns=list(MULTILABEL_COLUMNS))
        best = self._write_multi_outputs(results, evaluations)
        self._write_record(n_workers, searches, best, None, time.perf_counter() - start)
        self.log(f"classical: table in {self.out / TABLE_FILE}")
        return results

    def _submit_multi(self, jobs: list[tuple[str, dict]], scaled: dict[str, np.ndarray]
                      ) -> dict[Any, str]:
        """Start fitting each (model, params)'s multi-label form as a Dask task, slowest first
        (XGBoost with ``distributed_xgb`` is trained across the workers by
        :meth:`_gather_multi` instead)."""
        from fmadask.ml.multilabel import fit_multilabel

        X_train, Y_train, evaluate = self.client.scatter(
            [scaled["training"], self.y["training"], {s: scaled[s] for s in EVAL_SPLITS}],
            broadcast=False)
        return {self.client.submit(fit_multilabel, name, params, self.config.seed, X_train,
                                   Y_train, evaluate, self.runs[name], pure=False,
                                   key=f"fit-{name}-{uuid.uuid4().hex[:8]}"): name
                for name, params in sorted(jobs, key=lambda job: _fit_order(job[0]))
                if not (name == "xgboost" and self.config.distributed_xgb)}

    def _gather_multi(self, jobs: list[tuple[str, dict]], futures: dict[Any, str],
                      scaled: dict[str, np.ndarray]) -> list[FitOutcome]:
        """The outcomes of :meth:`_submit_multi`'s fits, in ``jobs`` order (failures said)."""
        from distributed import as_completed

        done = {name: self._fit_xgboost_dask(params, scaled) for name, params in jobs
                if name == "xgboost" and self.config.distributed_xgb}
        for future in as_completed(futures):
            done[futures[future]] = future.result()
        for outcome in done.values():
            if outcome.error:
                self.log(f"  {outcome.name:<20} FAILED: {outcome.error}")
        return [done[name] for name, _ in jobs]

    def _multi_row(self, name: str, label: str, evaluation: Any,
                   outcome: FitOutcome | None = None, search: str = "none",
                   searched: SearchOutcome | None = None) -> dict:
        from fmadask.report.multilabel import results_row

        row: dict[str, Any] = {"model": name, "name": outcome.name if outcome else name,
                               "label": label, "search": search,
                               "cv_score": searched.best_score if searched else np.nan,
                               **(results_row(evaluation) if evaluation is not None
                                  else dict.fromkeys(MULTILABEL_SCORES, np.nan)),
                               "runs_as": self.runs.get(outcome.name if outcome else name, ""),
                               "n_train": len(self.y["training"]), "fit_seconds": np.nan,
                               "worker": "", "params": "", "error": ""}
        if outcome is not None:
            row.update(fit_seconds=round(outcome.seconds, 3), worker=outcome.worker,
                       params=json.dumps(outcome.params, sort_keys=True, default=str),
                       error=outcome.error or "")
        return row

    def _save_multi(self, folder: str, label: str, search: str, outcome: FitOutcome,
                    evaluation: Any) -> None:
        from sklearn.pipeline import Pipeline

        from fmadask.ml.multilabel import parents_of

        pipeline = Pipeline([("scale", self.scaler), ("model", outcome.estimator)])
        card = {"name": outcome.name, "label": label, "search": search,
                "params": outcome.params, "target": "genres_all", "classes": self.classes,
                "label_ids": self.dataset.label_ids,
                "thresholds": [float(t) for t in evaluation.thresholds],
                "parents": {str(g): p for g, p in parents_of(self.dataset.genres).items()},
                "feature_columns": list(self.dataset.features.columns),
                "features": {k: self.dataset.info.get(k) for k in
                             ("sr", "fma_compat", "decoders", "max_seconds")},
                "scaler": self.config.scaler,
                "outputs": "probability" if hasattr(pipeline, "predict_proba") else "sigmoid",
                "metrics": evaluation.scores, "runs_as": self.runs[outcome.name],
                "trained_on": self.dataset.info, "seed": self.config.seed,
                "versions": package_versions(VERSIONED)}
        save_classical(self.out / MODELS_DIR / folder, pipeline, card)

    def _write_multi_outputs(self, results: pd.DataFrame, evaluations: dict) -> dict | None:
        """results.csv, table.md with the best model's per-genre table and picture, best.json
        (chosen by validation macro PR-AUC: test scores choose nothing)."""
        from fmadask.ml.multilabel import PRIOR
        from fmadask.report.multilabel import markdown_section, per_label_figure

        with atomic_path(self.out / RESULTS_FILE) as tmp:
            results.to_csv(tmp, index=False)
        ok = results[(results["error"] == "") & (results["model"] != PRIOR)]
        name = (ok.loc[ok["validation_pr_auc_macro"].fillna(-1.0).idxmax(), "model"]
                if len(ok) else PRIOR)
        featured = evaluations[name]
        names = {int(g): str(t) for g, t in self.dataset.genres["title"].items()}
        figure = f"{CONFUSION_DIR}/{name}-per-genre.png"
        per_label_figure(featured.table, featured.n_tracks["test"], self.out / figure,
                         title=f"{name}: test average precision per genre")
        text = (f"# Classical models: multi-label genres\n\nPer-genre table and picture: "
                f"{name}, the best on validation PR-AUC.\n\n"
                + markdown_section(results, featured, names, figure))
        with atomic_path(self.out / TABLE_FILE) as tmp:
            tmp.write_text(text)
        if name == PRIOR:
            return None
        row = results.set_index("model").loc[name]
        best = {"model": name, "path": f"models/{name}", "chosen_by": "validation_pr_auc_macro",
                **{c: row[c] for c in ("validation_pr_auc_macro", "test_pr_auc_macro",
                                       "validation_roc_auc_macro", "test_roc_auc_macro")}}
        write_json(jsonable(best), self.out / BEST_FILE)
        return best


def results_markdown(results: pd.DataFrame, info: Mapping[str, Any] | None = None,
                     threshold: int | None = None) -> str:
    """The study's Table 1 layout: model, validation accuracy, test accuracy, test F1.

    Parameters
    ----------
    results : pandas.DataFrame
        Rows of results.csv.
    info : mapping, optional
        Dataset description (:attr:`fmadask.ml.data.Dataset.info`), summarised above the table.
    threshold : int, optional
        The scale rule's threshold, if not the default; stated under the table.
    """
    lines = ["# Classical models", ""]
    if info:
        sr = info.get("sr") or "native"
        lines += [f"Features: {info.get('kind')} `{info.get('path')}` (sample rate {sr}, "
                  f"FMA-compatible: {info.get('fma_compat')}); split: {info.get('split')}.", ""]
        if info.get("excluded_no_genre"):
            lines += [f"{info['excluded_no_genre']} tracks without a single top-level genre left "
                      "out (target genre_top; genres_all would use them).", ""]
    table = results.assign(model_text=results["label"])
    # The study's columns first (its Table 1 keeps its shape), then the scores for unbalanced
    # genres. The search's score is named in its column's header.
    searched = [s for s in results["search_score"].fillna("") if s]
    cv_header = f"CV {(searched[0] if searched else 'accuracy').replace('_', ' ')} (search)"
    lines.append(markdown_table(
        table, ["model_text", "validation_accuracy", "test_accuracy", "test_f1_macro",
                "test_f1_weighted", "cv_score", "validation_balanced_accuracy",
                "test_balanced_accuracy"],
        ["Model", "Validation accuracy", "Test accuracy", "Test F1 (macro)",
         "Test F1 (weighted)", cv_header, "Validation balanced accuracy",
         "Test balanced accuracy"]))
    n_train = int(results["n_train"].iloc[0]) if len(results) else 0
    runs = dict(zip(results["name"], results["runs_as"]))
    lines.append(scale_rule_text(n_train, threshold, runs))
    weights = set(results["class_weight"].fillna("none"))
    if weights - {"none"}:
        lines.append(f"Class weight: {', '.join(sorted(weights))} (every genre weighs the same "
                     "in the training loss).")
    failed = results[results["error"] != ""]
    for row in failed.itertuples():
        lines.append(f"- {row.label} failed: {row.error}")
    return "\n".join(lines) + "\n"


def scale_rule_text(n_train: int, threshold: int | None, runs: Mapping[str, str]) -> str:
    """One sentence: the scale rule, and which model ran under which name in this run.

    Parameters
    ----------
    n_train : int
        Training rows.
    threshold : int, optional
        The rule's threshold (default :data:`~fmadask.ml.models.SCALE_THRESHOLD_ROWS`).
    runs : mapping of str to str
        Study model name -> the estimator that ran under it (:func:`runs_as`).
    """
    limit = SCALE_THRESHOLD_ROWS if threshold is None else threshold
    swapped = {n: k for n, k in runs.items() if k != n}
    rule = ", ".join(f"{model_label(n)} -> {model_label(k)}" for n, k in SCALED.items())
    if not swapped:
        return (f"Scale rule: the study's exact models ({n_train:,} training rows, not past "
                f"{limit:,}; past it: {rule}).")
    ran = "; ".join(f"{model_label(n)} ran as {model_label(k)}" for n, k in swapped.items())
    return f"Scale rule: {n_train:,} training rows, past {limit:,}: {ran}."


def _accuracy(y: np.ndarray, predicted: np.ndarray | None) -> float:
    if predicted is None or len(y) == 0:
        return float("nan")
    return float(np.mean(predicted == y))
