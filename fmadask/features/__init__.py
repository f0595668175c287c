"""Per-track features: waveform in, numbers out (no Dask, no torch here).

- :func:`fma_features` — the 518 FMA features of a mono signal, by FMA's recipe, fast;
- :data:`FEATURE_COLUMNS`, :func:`to_fma_columns` — our flat column names and FMA's 3-level view;
- :class:`MelParams`, :func:`log_mel` — the CNN's fixed-size log-mel spectrogram.
"""
from fmadask.features.columns import FEATURE_COLUMNS, to_fma_columns
from fmadask.features.fma import fma_features
from fmadask.features.mel import MelParams, log_mel

__all__ = ["FEATURE_COLUMNS", "MelParams", "fma_features", "log_mel", "to_fma_columns"]
