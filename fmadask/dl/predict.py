"""A trained CNN on disk (``model.pt`` + ``model.json``) and its predictions for new audio files.

``model.json`` holds everything needed to turn an mp3 into the net's input exactly as training
did: ``kind='cnn'`` (so :func:`fmadask.predict.predict` can tell it from a classical model), the
architecture and width, the classes in output order, the spectrogram parameters (``mel_params``:
the ``MelParams`` fields the featurize job used), the segment length and the input
standardisation.
"""
from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from fmadask.dl.dataset import standardise_clip
from fmadask.dl.evaluate import track_predictions
from fmadask.dl.nets import build_net
from fmadask.errors import DataError
from fmadask.atomic import atomic_path, write_json
from fmadask.integrity import describe, verified_files
from fmadask.runfolder import MODEL_CARD, WEIGHTS_FILE, read_card

MODEL_KIND = "cnn"
#: params.json keys that describe the stored arrays or the decoding, not the mel transform.
_NOT_MEL = ("frames", "pad", "pad_value", "db_ref", "dtype", "decode_sr", "decoder", "decoders",
            "layout")


def save_model(out_dir: str | Path, model: nn.Module, arch: str, width: int | None,
               classes: list[str], params: dict, segment_seconds: float, seg: int,
               norm: tuple[float, float], extra: dict | None = None) -> Path:
    """Write ``model.pt`` (state dict) and ``model.json`` into ``out_dir`` (atomically).

    Parameters
    ----------
    params : dict
        The run's ``spectrograms/params.json``.
    seg : int
        Segment length in frames.
    norm : tuple of float
        Input mean and standard deviation.
    extra : dict, optional
        More card fields: ``training`` (scores, best epoch); a multi-label model's ``target``,
        ``label_ids``, ``thresholds`` and ``parents``
        (:func:`fmadask.dl.multilabel.card_fields`).
    """
    out = Path(out_dir)
    meta = {"kind": MODEL_KIND, "arch": arch, "width": width, "classes": list(classes),
            "mel_params": {k: v for k, v in params.items() if k not in _NOT_MEL},
            "decode_sr": params.get("decode_sr", "native"), "clip_frames": params.get("frames"),
            "segment_seconds": segment_seconds, "segment_frames": int(seg),
            "n_mels": int(params["n_mels"]), "norm": {"mean": norm[0], "std": norm[1]},
            "torch": torch.__version__, "training": {}, **(extra or {})}
    # Saved through a file object: given a path, torch.save names the zip's inner folder after
    # the (random) temporary file, and identical weights would give different bytes.
    with atomic_path(out / WEIGHTS_FILE) as tmp, open(tmp, "wb") as fh:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, fh)
    meta["files"] = describe(out, {"weights": WEIGHTS_FILE})
    write_json(meta, out / MODEL_CARD)
    return out


#: model.json keys a CNN model cannot be loaded without.
_REQUIRED = ("arch", "classes", "n_mels", "segment_frames", "mel_params", "norm", "files")


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The net of ``model_dir`` in evaluation mode, and its ``model.json``.

    Raises
    ------
    DataError
        When the folder holds no CNN model.
    """
    model_dir = Path(model_dir)
    meta_path = model_dir / MODEL_CARD
    meta = read_card(model_dir)
    if meta["kind"] != MODEL_KIND:
        raise DataError(f"{meta_path} describes a {meta['kind']!r} model, not a CNN")
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise DataError(f"{meta_path} lacks {', '.join(missing)}: not a complete CNN model "
                        "(damaged, or written by an older fmadask); train it again")
    weights = verified_files(model_dir, meta["files"], MODEL_CARD)["weights"]
    try:
        net = build_net(meta["arch"], len(meta["classes"]), int(meta["n_mels"]),
                        int(meta["segment_frames"]), meta.get("width"))
        net.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
    except (ValueError, TypeError, KeyError, RuntimeError, pickle.UnpicklingError) as exc:
        raise DataError(f"{model_dir}: the model cannot be rebuilt from its files "
                        f"({type(exc).__name__}): train it again") from None
    return net.to(device).eval(), meta


def multilabel_row(classes: list[str], meta: dict, probs: np.ndarray) -> dict:
    """One file's multi-label prediction from its segments' probabilities ``(n, k)``:
    ``genre`` (the most probable genre), ``genres`` (those at or above their threshold, with
    every predicted genre's parent, :func:`fmadask.report.multilabel.predict_labels`),
    ``n_segments`` and the mean probability of each genre."""
    from fmadask.report.multilabel import card_genres

    mean = np.asarray(probs, dtype=np.float64).mean(axis=0)
    return {"genre": classes[int(np.argmax(mean))], "genres": card_genres(mean[None, :], meta)[0],
            "n_segments": int(len(probs)), **dict(zip(classes, mean.astype(float)))}


def mel_params(meta: dict):
    """The ``fmadask.features.MelParams`` a model was trained on (unknown keys ignored)."""
    from fmadask.features import MelParams

    names = {f.name for f in dataclasses.fields(MelParams)}
    return MelParams(**{k: v for k, v in meta["mel_params"].items() if k in names})


def predict_cnn(model_dir: str | Path, paths: Sequence[str | Path],
                device: str | torch.device = "cpu") -> pd.DataFrame:
    """Genre probabilities of audio files from a CNN model, one row per file.

    Each file is decoded as the featurize job decoded (:func:`fmadask.audio.load_audio` at the
    rate recorded with the spectrograms), cut into clips of the spectrograms' length by
    :func:`fmadask.audio.segments` as for the classical models (a 30 s clip is one piece; a
    song is several), each clip turned into its log-mel spectrogram
    (:func:`fmadask.features.log_mel`) and into the model's segments like an evaluation clip. The
    file's probabilities are the mean over all its segments; ``genre_vote`` is their majority
    vote. A file that cannot be decoded gets its error and NaN probabilities; the others are
    still scored.

    Parameters
    ----------
    model_dir : str or Path
        Folder with ``model.pt`` and ``model.json`` (e.g. ``RUN_DIR/cnn``).
    paths : sequence of str or Path
        Audio files.
    device : str or torch.device
        Where the net runs.

    Returns
    -------
    pandas.DataFrame
        The frame of :func:`fmadask.predict.predict`: rows in the order of ``paths``,
        ``path`` (str), ``genre`` (None on error), ``error`` (None, or ``'<kind>: <message>'``),
        ``genre_vote``, ``n_segments``, then one float column per genre (probability);
        ``attrs['classes']`` and ``attrs['outputs'] = 'probability'``. A multi-label model
        (``genres_all``) has no vote: ``genres`` instead (the genres at or above their
        thresholds, see :func:`multilabel_row`), and ``attrs['thresholds']``.
    """
    from fmadask.audio import EXCERPT_FIX, AudioError, load_audio, segments
    from fmadask.features import log_mel
    from fmadask.options import default

    net, meta = load_model(model_dir, device)
    params = mel_params(meta)
    classes = list(meta["classes"])
    multilabel = meta.get("target") == "genres_all"
    seg, mean, std = meta["segment_frames"], meta["norm"]["mean"], meta["norm"]["std"]
    decode_sr = meta.get("decode_sr")
    decode_sr = int(decode_sr) if isinstance(decode_sr, (int, float)) else None
    rows = []
    for path in paths:
        row = {"path": str(path), "genre": None, "error": None,
               "genres" if multilabel else "genre_vote": None, "n_segments": 0}
        try:
            y, sr = load_audio(path, sr=decode_sr, max_seconds=default("featurize.max_seconds"),
                               too_long_fix=EXCERPT_FIX)
            clips = [log_mel(piece, sr, params) for piece in segments(y, sr, params.seconds)]
        except AudioError as exc:
            row["error"] = f"{exc.kind}: {exc}"
        except (OSError, ValueError, RuntimeError) as exc:  # a file the decoder chokes on
            row["error"] = f"{type(exc).__name__}: {exc}"
        else:
            batch = np.concatenate([standardise_clip(spec, int(valid), seg, mean, std)
                                    for spec, valid in clips])
            with torch.no_grad():
                logits = net(torch.from_numpy(batch).to(device)).float()
            if multilabel:
                row.update(multilabel_row(classes, meta, torch.sigmoid(logits).cpu().numpy()))
            else:
                probs = torch.softmax(logits, 1).cpu().numpy()
                track = track_predictions(np.zeros(len(probs), dtype=np.int64), probs).iloc[0]
                row.update(genre=classes[int(track["mean"])],
                           genre_vote=classes[int(track["vote"])],
                           n_segments=int(track["n_segments"]),
                           **dict(zip(classes, track["probs"].astype(float))))
        rows.append(row)
    extra = "genres" if multilabel else "genre_vote"
    table = pd.DataFrame(rows, columns=["path", "genre", "error", extra, "n_segments", *classes])
    table.attrs.update(classes=classes, outputs="probability")
    if multilabel:
        table.attrs.update(target="genres_all",
                           thresholds=dict(zip(classes, map(float, meta["thresholds"]))))
    return table
