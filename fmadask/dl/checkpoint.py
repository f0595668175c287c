"""The CNN's checkpoints: what a resumed run must share with its checkpoint
(:func:`check_resume`), the random states saved in one, reading one safely
(:func:`load_checkpoint`), and clearing an older run's (:func:`fresh_start`).
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from fmadask.dl.config import TrainConfig
from fmadask.errors import ConfigError, DataError
from fmadask.options import setting
from fmadask.runfolder import BEST_CHECKPOINT, CHECKPOINTS, LAST_CHECKPOINT, METRICS_FILE


#: Config fields a resumed run must share with its checkpoint (the schedule and data order
#: depend on them).
_RESUME_KEYS = ("arch", "width", "epochs", "segment_seconds", "batch_size", "lr", "weight_decay",
                "optimizer", "lr_schedule", "seed", "gain_db", "masks", "mixup",
                "label_smoothing", "crops", "ema", "max_steps", "target")
#: What a checkpoint written before a resume key existed was trained with: the behaviour of the
#: time, not the option's default of today (new work takes 3 crops; those runs took 1).
_BEFORE_THE_OPTION = {"crops": 1, "ema": 0.0, "target": "genre_top"}


def rng_state() -> dict:
    """The random states as tensors and plain types (what ``torch.load(weights_only=True)``
    reads back)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
             "python": [int(version), list(internal), gauss]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def to_plain(value):
    """``value`` with numpy scalars and arrays turned into Python numbers and tensors."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def load_checkpoint(path: Path) -> dict:
    """A checkpoint read with ``weights_only=True``: tensors and plain types only, so a crafted
    file cannot run code. A damaged or foreign file is a one-line DataError."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # RNG states stay on CPU
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, EOFError, RuntimeError ...
        raise DataError(f"checkpoint {path} cannot be loaded safely ({type(exc).__name__}): "
                        "it is damaged or was not written by this fmadask; remove it and train "
                        "without resuming") from None
    if not isinstance(ckpt, dict):
        raise DataError(f"checkpoint {path} is not an fmadask checkpoint: remove it")
    return ckpt


def fresh_start(out_dir: Path) -> None:
    """Remove an older run's metrics and checkpoints from ``out_dir`` (a run not resuming)."""
    for name in (METRICS_FILE, f"{CHECKPOINTS}/{LAST_CHECKPOINT}",
                 f"{CHECKPOINTS}/{BEST_CHECKPOINT}"):
        (out_dir / name).unlink(missing_ok=True)


def check_resume(ckpt: dict, config: TrainConfig, world_size: int, path: Path) -> None:
    """Raise ConfigError when checkpoint ``ckpt`` (read from ``path``) cannot be resumed with
    ``config`` on ``world_size`` ranks."""
    saved = {key: ckpt["config"].get(key, _BEFORE_THE_OPTION.get(key)) for key in _RESUME_KEYS}
    for key in _RESUME_KEYS:
        if saved[key] != getattr(config, key):
            raise ConfigError(f"checkpoint {path} was made with {key}={saved[key]!r}, not "
                              f"{getattr(config, key)!r}: resume with the same settings or drop "
                              f"{setting('cnn.resume')}")
    if ckpt["world_size"] != world_size and config.lr_schedule != "constant":
        raise ConfigError(f"checkpoint {path} was made with {ckpt['world_size']} ranks: resume "
                          f"on as many, {setting('cnn.ranks')} {ckpt['world_size']} (the "
                          "learning-rate schedule depends on it)")
