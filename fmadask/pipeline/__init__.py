"""The featurize stage: the Dask job that maps the per-track functions (:mod:`fmadask.audio`,
:mod:`fmadask.features`) over FMA and writes features, spectrograms and errors into a run folder.

What it writes, and the readers of it, are :mod:`fmadask.runfolder`'s: later stages read a run
through that module, never through this package (which imports Dask's distributed).
"""
from fmadask.pipeline.featurize import (DEFAULT_MAX_SECONDS, DEFAULT_PARTITION_SIZE, print_summary,
                                        run_featurize, summarize)

__all__ = ["DEFAULT_MAX_SECONDS", "DEFAULT_PARTITION_SIZE", "print_summary", "run_featurize",
           "summarize"]
