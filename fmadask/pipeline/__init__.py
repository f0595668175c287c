"""Dask jobs that map the per-track functions over FMA and write what later stages read."""
from fmadask.pipeline.featurize import (DEFAULT_MAX_SECONDS, DEFAULT_PARTITION_SIZE, print_summary,
                                        run_featurize, summarize)
from fmadask.pipeline.rundir import (read_errors, read_features, read_job, read_mel_params,
                                     read_spectrogram_index)

__all__ = ["DEFAULT_MAX_SECONDS", "DEFAULT_PARTITION_SIZE", "print_summary", "read_errors",
           "read_features", "read_job", "read_mel_params", "read_spectrogram_index",
           "run_featurize", "summarize"]
