"""Genre predictions for new audio files from any saved model (classical, CNN or fusion).

A model folder's ``model.json`` says its ``kind``; :func:`predict` reads it and hands the files to
that kind's predictor (:func:`fmadask.ml.predict.predict_classical`,
:func:`fmadask.dl.predict.predict_cnn`, :func:`fmadask.fusion.stage.predict_fusion`), so
``fmadask predict MODEL AUDIO...`` needs no option saying what the model is. Every predictor
returns the same frame (one row per file: ``path``, ``genre``, ``error``, then one probability
column per genre; a kind may add columns), and a file that cannot be decoded gets its error in its
row while the others are scored.

This module sits above the stages: it reads every model kind from the stage registry
(:mod:`fmadask.stages`: a stage's ``model_kind`` and ``predictor``), so the stage packages
(:mod:`fmadask.ml`, :mod:`fmadask.dl`) know only their own. Each kind's code is imported only
when a model of that kind is used (a classical model never imports torch).
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fmadask import storage
from fmadask.errors import DataError
from fmadask.runfolder import BEST_FILE, MODEL_CARD, read_card

#: File name suffixes taken from a folder given to :func:`expand_paths` (files named explicitly
#: are always tried, whatever their suffix).
AUDIO_SUFFIXES = (".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif",
                  ".aiff", ".au", ".wma")


def resolve_model_dir(model: str | Path) -> Path:
    """The model folder ``model`` names: the folder itself, or the one its ``best.json`` points to
    (so ``RUN_DIR/classical`` means the classical model with the best validation accuracy)."""
    import json

    from fmadask.integrity import inside

    path = Path(model)
    best = path / BEST_FILE
    if not (path / MODEL_CARD).is_file() and best.is_file():
        try:
            name = json.loads(best.read_text(encoding="utf-8"))["path"]
        except (ValueError, UnicodeDecodeError, KeyError, TypeError):
            raise DataError(f"{best} is damaged: train again, or pass a model folder") from None
        return inside(path, name)       # a pointer may not lead out of the stage's folder
    return path


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named in ``paths``; a folder stands for its audio files (recursively, sorted).

    A path that does not exist is kept, so that it gets its own error row; so is anything in a
    folder named like audio that is not a folder (a FIFO, a symbolic link loop): never skipped
    without a line.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*")
                            if not f.is_dir() and f.suffix.lower() in AUDIO_SUFFIXES)
        else:
            files.append(p)
    return files


def _kinds() -> list[str]:
    """The model kinds :func:`predict` knows (``model.json``'s ``kind``), from the registry."""
    from fmadask.stages import model_kinds

    return list(model_kinds())


def _predictor(kind: str) -> Callable[[Path, Sequence[Path]], pd.DataFrame] | None:
    """The predictor of a model kind (its stage's, :mod:`fmadask.stages`); None for a kind
    fmadask does not know."""
    from fmadask.stages import model_kinds

    stage = model_kinds().get(kind)
    return None if stage is None else stage.predictor


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
    if storage.is_remote(model):
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
    run = _predictor(card["kind"])
    if run is None:
        raise DataError(f"{model_dir}: unknown model kind {card['kind']!r}: expected one of "
                        f"{', '.join(_kinds())}")
    table = run(model_dir, expand_paths(paths))
    table.attrs.setdefault("classes", list(card["classes"]))
    table.attrs.setdefault("outputs", card.get("outputs", "probability"))
    return table


def format_predictions(table: pd.DataFrame, top: int = 3) -> list[str]:
    """One line per file: the ``top`` genres with their probabilities, or the file's error.

    A multi-label model's table (``attrs['thresholds']``: each genre's decision threshold)
    gives every genre at or above its threshold, then the ``top`` most probable below it.

    Examples of lines::

        song.mp3: Rock 0.62, Pop 0.21, Folk 0.07
        song.mp3: Rock 0.91, Punk 0.72 | below: Pop 0.31, Folk 0.12, Jazz 0.05
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
        probs = row[classes].astype(float).sort_values(ascending=False)
        thresholds = table.attrs.get("thresholds")
        if thresholds:
            above = probs[[p >= thresholds[g] for g, p in probs.items()]]
            below = probs.drop(above.index)[:top]
            ranked = (", ".join(f"{genre} {p:.2f}" for genre, p in above.items())
                      or "no genre above its threshold")
            ranked += " | below: " + ", ".join(f"{genre} {p:.2f}" for genre, p in below.items())
        else:
            ranked = ", ".join(f"{genre} {p:.2f}" for genre, p in probs[:top].items())
        segs = int(row["n_segments"]) if "n_segments" in row and pd.notna(row["n_segments"]) else 1
        extra = f" [{segs} segments]" if segs > 1 else ""
        lines.append(f"{row['path']}: {ranked}{suffix}{extra}")
    return lines
