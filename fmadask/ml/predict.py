"""Genre predictions of a classical model for new audio files.

A file is featurized exactly as the featurize job did: the same decoder entry point
(:func:`fmadask.audio.load_audio`, at the sample rate recorded with the model) and the same
features (:func:`fmadask.features.fma_features`). Models were trained on FMA's 30 s clips, so a
longer file is cut into consecutive 30 s segments (:func:`fmadask.audio.segments`: a last piece
shorter than half a segment is dropped) and the segments' probabilities are averaged;
``genre_vote`` is their majority vote (the study's suggested segment voting).

:func:`fmadask.predict.predict` reads a model folder's kind and calls :func:`predict_classical`
for a classical one; this module knows no other kind.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fmadask.errors import DataError
from fmadask.ml.persist import load_classical


def predict_classical(model_dir: str | Path, paths: Sequence[str | Path]) -> pd.DataFrame:
    """Predictions of a classical model (see :func:`fmadask.predict.predict` for the frame)."""
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
    if card.get("target") == "genres_all":       # each genre's threshold, chosen on validation
        from fmadask.report.multilabel import card_genres

        table.attrs["thresholds"] = dict(zip(classes, map(float, card["thresholds"])))
        scored = table["error"].isna().to_numpy()
        chosen = card_genres(table[classes].fillna(-1.0).to_numpy(float), card)
        # as every multi-label predictor: the genres predicted (parent rule kept), no vote
        table = table.drop(columns="genre_vote")
        table.insert(3, "genres", [g if ok else None for g, ok in zip(chosen, scored)])
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

    from fmadask.audio import EXCERPT_FIX, load_audio, segments
    from fmadask.features import fma_features

    # One BLAS/OpenMP thread, as on the featurize job's workers: multi-threaded sums change the
    # last bits of some features, enough to move a value across a tree's split threshold. With
    # one thread a clip gets exactly its featurized row.
    with threadpool_limits(1):
        y, rate = load_audio(path, sr=sr, max_seconds=max_seconds, too_long_fix=EXCERPT_FIX)
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
    if card.get("target") == "genres_all":
        from fmadask.ml.multilabel import label_probabilities

        scores = label_probabilities(pipeline, X[finite])
    else:
        scores, _ = class_scores(pipeline, X[finite])   # segments with non-finite features left out
    mean = scores.mean(axis=0)
    votes = np.bincount(scores.argmax(axis=1), minlength=len(classes))
    row.update(genre=classes[int(mean.argmax())], genre_vote=classes[int(votes.argmax())],
               n_segments=int(finite.sum()), **dict(zip(classes, mean.astype(float))))
    return row
