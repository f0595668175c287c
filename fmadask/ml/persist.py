"""Saved models: a folder per model with a card (``model.json``) that says what it is.

::

    MODEL_DIR/model.json        kind, classes, feature columns, how features are made, metrics...
    MODEL_DIR/pipeline.joblib   the fitted scaler + estimator (sklearn Pipeline), classical only
    MODEL_DIR/xgboost.json      XGBoost's own JSON format of the booster (XGBoost models only),
                                loadable without fmadask by ``xgboost.XGBClassifier().load_model``

``model.json``'s ``kind`` tells a reader which code loads the folder ('classical' here; the CNN
stage writes 'cnn'), so ``fmadask predict MODEL_DIR`` needs no other option.

A ``.joblib`` file is a pickle: load models only from folders you trust.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from fmadask.errors import DataError
from fmadask.atomic import atomic_path, write_json

MODEL_CARD = "model.json"
PIPELINE_FILE = "pipeline.joblib"
XGBOOST_FILE = "xgboost.json"
#: Version of the card's layout; bumped when a field changes meaning.
CARD_FORMAT = 1


def read_card(model_dir: str | Path) -> dict[str, Any]:
    """The parsed ``model.json`` of a saved model of any kind.

    Raises
    ------
    DataError
        No such folder or card.
    """
    path = Path(model_dir) / MODEL_CARD
    if not path.is_file():
        raise DataError(f"{path} not found: pass a model folder written by 'fmadask train' "
                        "(e.g. RUN_DIR/classical/models/xgboost)")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg}): re-run 'fmadask train'") from None
    if "kind" not in card:
        raise DataError(f"{path} does not say its kind: re-run 'fmadask train'")
    return card


def save_classical(model_dir: str | Path, pipeline: Any, card: dict[str, Any]) -> Path:
    """Save a fitted scaler + estimator pipeline and its card.

    Parameters
    ----------
    model_dir : str or Path
        Folder to write (created; files in it are replaced atomically).
    pipeline : sklearn.pipeline.Pipeline
        Fitted, with steps ``scale`` and ``model``.
    card : dict
        JSON-serialisable description; ``kind``, ``format`` and ``files`` are filled in here.

    Returns
    -------
    Path
        ``model_dir``.
    """
    model_dir = Path(model_dir)
    files = {"pipeline": PIPELINE_FILE}
    with atomic_path(model_dir / PIPELINE_FILE) as tmp:
        joblib.dump(pipeline, tmp)
    estimator = pipeline.named_steps["model"]
    if hasattr(estimator, "get_booster"):
        raw = estimator.get_booster().save_raw(raw_format="json")
        with atomic_path(model_dir / XGBOOST_FILE) as tmp:
            tmp.write_bytes(bytes(raw))
        files["xgboost"] = XGBOOST_FILE
    write_json(jsonable({**card, "kind": "classical", "format": CARD_FORMAT, "files": files}),
               model_dir / MODEL_CARD)
    return model_dir


def load_classical(model_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """Load a model saved by :func:`save_classical`.

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        Fitted scaler + estimator; input: features in ``card['feature_columns']`` order.
    card : dict
        The model's ``model.json``.
    """
    card = read_card(model_dir)
    if card["kind"] != "classical":
        raise DataError(f"{model_dir} holds a {card['kind']!r} model, not a classical one")
    path = Path(model_dir) / card.get("files", {}).get("pipeline", PIPELINE_FILE)
    if not path.is_file():
        raise DataError(f"{path} not found: the model folder is incomplete, re-run 'fmadask train'")
    return joblib.load(path), card


def jsonable(value: Any) -> Any:
    """A JSON-ready copy of ``value``: numpy scalars/arrays and tuples become JSON types, NaN and
    infinities become None (strict JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
