"""Genre predictions for new audio files from any saved model (classical or CNN).

A model folder's ``model.json`` says its ``kind``; :func:`predict` reads it and hands the files to
that kind's predictor (:data:`PREDICTORS`), so ``fmadask predict MODEL AUDIO...`` needs no option
saying what the model is. Every predictor returns the same frame (one row per file: ``path``,
``genre``, ``error``, then one probability column per genre; a kind may add columns), and a file
that cannot be decoded gets its error in its row while the others are scored.

Classical models featurize a file exactly as the featurize job did: the same decoder entry point
(:func:`fmadask.audio.load_audio`, at the sample rate recorded with the model) and the same
features (:func:`fmadask.features.fma_features`). Models were trained on FMA's 30 s clips, so a
longer file is cut into consecutive 30 s segments (a last piece shorter than half a segment is
dropped) and the segments' probabilities are averaged; ``genre_vote`` is their majority vote
(the study's suggested segment voting).
"""
from __future__ import annotations

import importlib
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmadask import storage
from fmadask.errors import DataError
from fmadask.ml.persist import load_classical, read_card

#: File name suffixes taken from a folder given to :func:`expand_paths` (files named explicitly
#: are always tried, whatever their suffix).
AUDIO_SUFFIXES = (".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif",
                  ".aiff", ".au", ".wma")
#: Length of the clips the classical models were trained on (FMA's clips), in seconds.
SEGMENT_SECONDS = 30.0
#: The predictor of each model kind, as 'module:function'; imported only when used.
PREDICTORS: dict[str, str] = {
    "classical": "fmadask.ml.predict:predict_classical",
    "cnn": "fmadask.dl.predict:predict_cnn",
    "fusion": "fmadask.fusion.stage:predict_fusion",
}
#: File name of a stage's pointer to its best model (``classical/best.json``).
BEST_FILE = "best.json"


def resolve_model_dir(model: str | Path) -> Path:
    """The model folder ``model`` names: the folder itself, or the one its ``best.json`` points to
    (so ``RUN_DIR/classical`` means the classical model with the best validation accuracy)."""
    import json

    from fmadask.integrity import inside

    path = Path(model)
    best = path / BEST_FILE
    if not (path / "model.json").is_file() and best.is_file():
        try:
            name = json.loads(best.read_text(encoding="utf-8"))["path"]
        except (ValueError, UnicodeDecodeError, KeyError, TypeError):
            raise DataError(f"{best} is damaged: train again, or pass a model folder") from None
        return inside(path, name)       # a pointer may not lead out of the stage's folder
    return path


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named in ``paths``; a folder stands for its audio files (recursively, sorted).

    A path that does not exist is kept, so that it gets its own error row.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*")
                            if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
        else:
            files.append(p)
    return files


def predict(model: str | Path, paths: Sequence[str | Path],
            storage_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Genre probabilities of audio files from a saved model of any kind.

    Parameters
    ----------
    model : str or Path
        A model folder (``model.json`` + the kind's files), or a stage folder with a
        ``best.json`` (e.g. ``RUN_DIR/classical``).
    paths : sequence of str or Path
        Audio files or folders of them (see :func:`expand_paths`).
    storage_options : mapping, optional
        fsspec options when ``model`` is a URL (the folder is fetched into a temporary folder
        and verified by its checksums like a local one).

    Returns
    -------
    pandas.DataFrame
        One row per file in order: ``path``, ``genre`` (most probable; None on error),
        ``error`` (None, or ``'<kind>: <message>'``), kind-specific columns (``genre_vote``,
        ``n_segments``), then one float column per genre in ``attrs['classes']`` order.
        ``attrs['outputs']`` is 'probability', or 'softmax' for models without probabilities
        (SVMs: softmax of decision values, same ranking, not calibrated).

    Raises
    ------
    DataError
        The model folder is missing, incomplete or of an unknown kind.
    """
    if storage.is_url(model) and storage.local_path(model) is None:
        # A model folder in object storage is fetched whole and checked like a local one.
        with tempfile.TemporaryDirectory(prefix="fmadask-model-") as local:
            try:
                storage.download_folder(str(model), local, storage_options)
            except FileNotFoundError:
                raise DataError(f"{storage.redact(model)}: no model folder there: pass "
                                "RUN_DIR/classical or a folder with model.json") from None
            return predict(local, paths)
    model_dir = resolve_model_dir(model)
    card = read_card(model_dir)
    target = PREDICTORS.get(card["kind"])
    if target is None:
        raise DataError(f"{model_dir}: unknown model kind {card['kind']!r}: expected one of "
                        f"{', '.join(PREDICTORS)}")
    module, function = target.split(":")
    predictor: Callable[..., pd.DataFrame] = getattr(importlib.import_module(module), function)
    table = predictor(model_dir, expand_paths(paths))
    table.attrs.setdefault("classes", list(card["classes"]))
    table.attrs.setdefault("outputs", card.get("outputs", "probability"))
    return table


def segments(y: np.ndarray, sr: int, seconds: float = SEGMENT_SECONDS) -> list[np.ndarray]:
    """Cut a signal into consecutive ``seconds``-long pieces.

    A signal up to 1.5 segments long is one piece; otherwise a last piece shorter than half a
    segment is dropped (its statistics would be noisier than the clips the model knows).

    Parameters
    ----------
    y : numpy.ndarray, shape (n,)
        Mono samples.
    sr : int
        Sample rate in Hz.
    """
    size = int(round(seconds * sr))
    if len(y) <= 1.5 * size:
        return [y]
    pieces = [y[start:start + size] for start in range(0, len(y), size)]
    return [p for p in pieces if len(p) >= size // 2]


def predict_classical(model_dir: str | Path, paths: Sequence[str | Path]) -> pd.DataFrame:
    """Predictions of a classical model (see :func:`predict` for the returned frame)."""
    from fmadask.features import FEATURE_COLUMNS

    pipeline, card = load_classical(model_dir)
    if list(card["feature_columns"]) != list(FEATURE_COLUMNS):
        raise DataError(f"{model_dir} was trained on other feature columns than this fmadask "
                        "computes: retrain it with 'fmadask train'")
    classes = list(card["classes"])
    rows = [_classical_row(Path(path), pipeline, card) for path in paths]
    table = pd.DataFrame(rows, columns=["path", "genre", "error", "genre_vote", "n_segments",
                                        *classes])
    table.attrs.update(classes=classes, outputs=card.get("outputs", "probability"))
    return table


def clip_features(path: Path, sr: int | None, fma_compat: bool = True,
                  max_seconds: float | None = None) -> np.ndarray:
    """The 518 features of each 30 s segment of an audio file, as the featurize job makes them.

    Returns
    -------
    numpy.ndarray, shape (n_segments, 518), float32

    Raises
    ------
    fmadask.audio.AudioError
        The file cannot be decoded, or is too short or too long.
    """
    from threadpoolctl import threadpool_limits

    from fmadask.audio import load_audio
    from fmadask.features import fma_features

    # One BLAS/OpenMP thread, as on the featurize job's workers: multi-threaded sums change the
    # last bits of some features, enough to move a value across a tree's split threshold. With
    # one thread a clip gets exactly its featurized row.
    with threadpool_limits(1):
        y, rate = load_audio(path, sr=sr, max_seconds=max_seconds)
        return np.stack([fma_features(piece, rate, fma_compat=fma_compat)
                         for piece in segments(y, rate)])


def _classical_row(path: Path, pipeline: object, card: dict) -> dict:
    """One file's row of :func:`predict_classical`: its scores, or its error."""
    from fmadask.audio import AudioError
    from fmadask.ml.models import class_scores

    classes = list(card["classes"])
    features = card.get("features") or {}
    row: dict = {"path": str(path), "genre": None, "error": None, "genre_vote": None,
                 "n_segments": 0}
    try:
        X = clip_features(path, features.get("sr"), features.get("fma_compat", True),
                          features.get("max_seconds"))
    except AudioError as exc:
        row["error"] = f"{exc.kind}: {exc}"
        return row
    except (OSError, ValueError, RuntimeError) as exc:      # anything else the decoder refuses
        row["error"] = f"{type(exc).__name__}: {exc}"
        return row
    finite = np.isfinite(X).all(axis=1)
    if not finite.any():
        row["error"] = (f"features: {int((~np.isfinite(X)).sum(axis=1).min())} of the "
                        f"{X.shape[1]} features are NaN or infinite")
        return row
    scores, _ = class_scores(pipeline, X[finite])   # segments with non-finite features left out
    mean = scores.mean(axis=0)
    votes = np.bincount(scores.argmax(axis=1), minlength=len(classes))
    row.update(genre=classes[int(mean.argmax())], genre_vote=classes[int(votes.argmax())],
               n_segments=int(finite.sum()), **dict(zip(classes, mean.astype(float))))
    return row


def format_predictions(table: pd.DataFrame, top: int = 3) -> list[str]:
    """One line per file: the ``top`` genres with their probabilities, or the file's error.

    Examples of lines::

        song.mp3: Rock 0.62, Pop 0.21, Folk 0.07
        broken.mp3: cannot predict (empty: no audio frames in broken.mp3)
    """
    classes = table.attrs.get("classes") or [c for c in table.columns if c not in
                                             ("path", "genre", "error", "genre_vote",
                                              "n_segments")]
    suffix = " (softmax scores)" if table.attrs.get("outputs") == "softmax" else ""
    lines = []
    for _, row in table.iterrows():
        if isinstance(row["error"], str):          # None/NaN when the file was scored
            lines.append(f"{row['path']}: cannot predict ({row['error']})")
            continue
        probs = row[classes].astype(float).sort_values(ascending=False)[:top]
        ranked = ", ".join(f"{genre} {p:.2f}" for genre, p in probs.items())
        segs = int(row["n_segments"]) if "n_segments" in row and pd.notna(row["n_segments"]) else 1
        extra = f" [{segs} segments]" if segs > 1 else ""
        lines.append(f"{row['path']}: {ranked}{suffix}{extra}")
    return lines
