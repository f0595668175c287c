"""Classical machine learning on the 518 FMA features, at scale with Dask.

- :func:`train`: the study's ten models (scikit-learn, XGBoost) with dask-ml scaling, the
  study's Table 1, confusion matrices, distributed random or Bayesian search (one engine on
  Optuna's samplers, successive halving, resumable) and unsupervised views, written under
  ``RUN_DIR/classical``; past 10,000 training rows a scale rule swaps the fastest-growing models;
- :func:`predict`: genre probabilities for new audio files from a saved model of any kind;
- :func:`load_dataset`: the features table of a featurize run or of FMA's ``features.csv``.

Heavy modules (dask-ml, xgboost, optuna) are imported by the functions that use them.
"""
from fmadask.ml.data import Dataset, load_dataset
from fmadask.ml.models import MODEL_NAMES
from fmadask.ml.persist import load_classical, read_card
from fmadask.ml.predict import format_predictions, predict
from fmadask.ml.train import train

__all__ = ["MODEL_NAMES", "Dataset", "format_predictions", "load_classical", "load_dataset",
           "predict", "read_card", "train"]
