"""Per-track features: waveform in, numbers out (no Dask, no torch here).

- :func:`fma_features` — the 518 FMA features of a mono signal, by FMA's recipe, fast;
- :data:`FEATURE_COLUMNS`, :func:`to_fma_columns` — our flat column names and FMA's 3-level view;
- :class:`MelParams`, :func:`log_mel` — the CNN's fixed-size log-mel spectrogram.
"""
from importlib import import_module
from typing import Any

from fmadask.features.columns import FEATURE_COLUMNS, to_fma_columns

__all__ = ["FEATURE_COLUMNS", "MelParams", "fma_features", "log_mel", "to_fma_columns"]

#: Imported when first used: they import librosa (seconds, more on a busy machine), which the
#: readers of a features table (train, fuse, every completeness check) never need.
_LAZY = {"fma_features": "fmadask.features.fma", "MelParams": "fmadask.features.mel",
         "log_mel": "fmadask.features.mel"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
