"""The classical stage: machine learning on the 518 FMA features, at scale with Dask.

- :func:`fmadask.ml.train.train`: the study's ten models (scikit-learn, XGBoost) with dask-ml
  scaling, the study's Table 1, confusion matrices, distributed random or Bayesian search (one
  engine on Optuna's samplers, successive halving, resumable) and unsupervised views, written under
  ``RUN_DIR/classical``; past 10,000 training rows a scale rule swaps the fastest-growing models
  (its plan: :mod:`fmadask.ml.plan`; running one: :mod:`fmadask.ml.execute`);
- :func:`fmadask.ml.data.load_dataset`: the features table of a featurize run (read through
  :mod:`fmadask.runfolder`) or of FMA's ``features.csv``;
- :mod:`fmadask.ml.models` -- the model registry (:data:`~fmadask.ml.models.MODEL_NAMES`);
  :mod:`fmadask.ml.persist` -- saved models (:func:`~fmadask.ml.persist.load_classical`);
  :mod:`fmadask.ml.predict` -- a classical model's predictions for audio files (``fmadask
  predict`` reaches it through :mod:`fmadask.predict`, which knows every model kind).

This package imports neither :mod:`fmadask.pipeline` nor :mod:`fmadask.dl` (nor do they import
it): the stages meet in the run folder. Nothing is imported here, so that importing one module
(``fmadask.ml.data``) costs only that module; heavy ones (Dask's distributed, dask-ml, xgboost,
optuna, skops) are imported by the modules and functions that use them.
"""
