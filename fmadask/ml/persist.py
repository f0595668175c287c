"""Saved models: a folder per model with a card (``model.json``) that says what it is.

::

    MODEL_DIR/model.json        kind, classes, feature columns, how features are made, metrics,
                                and each file's name, size and SHA-256
    MODEL_DIR/pipeline.skops    the fitted scaler + estimator (sklearn Pipeline), classical only
    MODEL_DIR/xgboost.json      XGBoost's own JSON format of the booster (XGBoost models only),
                                loadable without fmadask by ``xgboost.XGBClassifier().load_model``

``model.json``'s ``kind`` tells a reader which code loads the folder ('classical' here; the CNN
stage writes 'cnn'), so ``fmadask predict MODEL_DIR`` needs no other option.

Loading a model runs no code from the folder: the pipeline is stored with skops, which rebuilds
objects only of the types it is told to trust (:data:`TRUSTED_TYPES`: scikit-learn's own and the
few below, never ``os.system`` or ``eval``), file names must stay inside the folder, and every
file must match the size and checksum its ``model.json`` records before it is opened. Models saved
by earlier fmadask versions as pickles (``pipeline.joblib``) are refused: train them again.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from fmadask.atomic import atomic_path, write_json
from fmadask.errors import DataError
from fmadask.integrity import describe, verified_files
from fmadask.runfolder import MODEL_CARD, PIPELINE_FILE, XGBOOST_FILE, read_card

#: Version of the card's layout; bumped when a field changes meaning (2: skops, checksums).
CARD_FORMAT = 2
#: Types besides scikit-learn's own that a saved pipeline may hold: the scalers, fmadask's NuSVC
#: and the scale rule's substitutes, a decision tree's nodes and XGBoost's model (a byte buffer in
#: XGBoost's format).
TRUSTED_TYPES = (
    "dask_ml.preprocessing.data.MinMaxScaler", "dask_ml.preprocessing.data.StandardScaler",
    "fmadask.ml.models.FeasibleNuSVC", "fmadask.ml.models.NystroemSVM",
    "fmadask.ml.xgb_early.EarlyStoppingXGBClassifier", "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "xgboost.core.Booster", "xgboost.sklearn.XGBClassifier",
    # genres_all: the one-vs-rest wrapper's constant predictor (a genre all of whose training
    # tracks are positive, or none)
    "sklearn.multiclass._ConstantPredictor",
)


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
    import skops.io as sio

    model_dir = Path(model_dir)
    names = {"pipeline": PIPELINE_FILE}
    with atomic_path(model_dir / PIPELINE_FILE) as tmp:
        tmp.write_bytes(stable_skops(sio.dumps(pipeline)))
    estimator = pipeline.named_steps["model"]
    if hasattr(estimator, "get_booster"):
        raw = estimator.get_booster().save_raw(raw_format="json")
        with atomic_path(model_dir / XGBOOST_FILE) as tmp:
            tmp.write_bytes(bytes(raw))
        names["xgboost"] = XGBOOST_FILE
    files = describe(model_dir, names)
    write_json(jsonable({**card, "kind": "classical", "format": CARD_FORMAT, "files": files}),
               model_dir / MODEL_CARD)
    return model_dir


def stable_skops(data: bytes) -> bytes:
    """The same skops file, its bytes fixed by its content alone.

    skops names objects and their array files by ``id()`` (memory addresses) or a random UUID
    and stamps each zip member with the time of writing, so identical models gave different
    files (and checksums). Here every id and every member name becomes its rank of first
    appearance in the schema (equal ids stay equal: shared objects stay shared) and every
    timestamp 1980-01-01.

    Examples
    --------
    >>> import skops.io as sio
    >>> stable_skops(sio.dumps([1.5, {"a": 2}])) == stable_skops(sio.dumps([1.5, {"a": 2}]))
    True
    """
    source = zipfile.ZipFile(io.BytesIO(data))
    ids: dict[int, int] = {}
    renames: dict[str, str] = {}   # old member name -> new

    def renumber(node: Any) -> Any:
        if isinstance(node, list):
            return [renumber(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            if key == "__id__" and isinstance(value, int):
                value = ids.setdefault(value, len(ids))
            elif key == "file" and isinstance(value, str):
                renamed = renames.setdefault(value, f"{len(renames)}{Path(value).suffix}")
                files[renamed] = value
                value = renamed
            else:
                value = renumber(value)
            out[key] = value
        return out

    files: dict[str, str] = {}     # new member name -> old
    schema = renumber(json.loads(source.read("schema.json")))
    for name in set(source.namelist()) - set(files.values()) - {"schema.json"}:
        files[name] = name         # not named by id: kept as it is
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for name, data in [*((new, source.read(old)) for new, old in sorted(files.items())),
                           ("schema.json", json.dumps(schema, indent=2).encode())]:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = source.getinfo(files.get(name, name)).compress_type
            target.writestr(info, data)
    return buffer.getvalue()


def load_classical(model_dir: str | Path, target: str | None = None
                   ) -> tuple[Any, dict[str, Any]]:
    """Load a model saved by :func:`save_classical`.

    Parameters
    ----------
    model_dir : str or Path
    target : {'genre_top', 'genres_all'}, optional
        The task the caller needs (a fusion of one target): a model trained for the other is
        refused in one line. Its card's ``target`` (absent: ``genre_top``) says which it is.

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        Fitted scaler + estimator; input: features in ``card['feature_columns']`` order.
    card : dict
        The model's ``model.json``.
    """
    # skops is imported here, not above: it lists scikit-learn's estimators by importing every
    # sklearn module, torch's and Dask's array adapters included (seconds, and torch in memory).
    import skops.io as sio

    card = read_card(model_dir)
    if card["kind"] != "classical":
        raise DataError(f"{model_dir} holds a {card['kind']!r} model, not a classical one")
    _check_target(card, model_dir, target)
    files = card.get("files")
    if card.get("format") != CARD_FORMAT or not isinstance(files, dict) or "pipeline" not in files:
        raise DataError(f"{model_dir} was saved by an older fmadask (a pickle, which fmadask no "
                        "longer loads) or is damaged: train the model again")
    path = verified_files(model_dir, {"pipeline": files["pipeline"]}, MODEL_CARD)["pipeline"]
    try:
        untrusted = [t for t in sio.get_untrusted_types(file=path) if t not in TRUSTED_TYPES]
        if untrusted:
            raise DataError(f"{path} holds types fmadask does not load ({', '.join(untrusted[:3])})"
                            ": it was not written by fmadask; train the model again")
        return sio.load(path, trusted=list(TRUSTED_TYPES)), card
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file: one line, not a traceback
        raise DataError(f"{path} cannot be read ({type(exc).__name__}): train the model "
                        "again") from None


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


def _check_target(card: dict[str, Any], model_dir: str | Path, target: str | None) -> None:
    """A card trained for ``target`` (when given). (A multi-label card's genre ids, thresholds
    and tree are checked with every card, :func:`fmadask.runfolder.check_card`.)"""
    trained_for = card.get("target", "genre_top")
    if target is not None and trained_for != target:
        raise DataError(f"{model_dir} was trained for {trained_for}, not {target}: choose a "
                        f"model trained with --target {target} (data.target)")
