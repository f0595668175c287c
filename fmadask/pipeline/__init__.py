"""The featurize stage: the Dask job that maps the per-track functions (:mod:`fmadask.audio`,
:mod:`fmadask.features`) over FMA and writes features, spectrograms and errors into a run folder.

What it writes, and the readers of it, are :mod:`fmadask.runfolder`'s: later stages read a run
through that module, never through this package. The stage's contract value is
:data:`fmadask.pipeline.entry.STAGE`; the names below import :mod:`fmadask.pipeline.featurize`
(and so Dask's distributed) only when used, so that reading the registry stays light.
"""
from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_MAX_SECONDS", "DEFAULT_PARTITION_SIZE", "print_summary", "run_featurize",
           "summarize"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from fmadask.pipeline import featurize

        return getattr(featurize, name)
    raise AttributeError(f"module 'fmadask.pipeline' has no attribute {name!r}")
