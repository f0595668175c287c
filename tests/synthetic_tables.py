"""Synthetic 518-feature tables for the classical stage's tests: Gaussian features around a
random mean per genre, split 80/10/10 by genre."""
from __future__ import annotations

import numpy as np
import pandas as pd

from fmadask.features import FEATURE_COLUMNS
from fmadask.fma.splits import stratified_split
from fmadask.ml.data import Dataset


def gaussian_table(counts: dict[str, int], shift: float, seed: int, id_step: int,
                   id_start: int) -> Dataset:
    """``counts[genre]`` tracks per genre; each genre's features are Gaussian around its own
    random mean (``shift`` standard deviations apart on average). Track ids are
    ``id_start + id_step * i``."""
    rng = np.random.default_rng(seed)
    names = list(counts)
    codes = np.repeat(np.arange(len(names)), list(counts.values()))
    means = rng.normal(scale=shift, size=(len(names), len(FEATURE_COLUMNS)))
    X = (rng.normal(size=(len(codes), len(FEATURE_COLUMNS))) + means[codes]).astype(np.float32)
    ids = pd.Index(np.arange(len(codes)) * id_step + id_start, name="track_id")
    genre = pd.Series(np.asarray(names)[codes], index=ids, name="genre_top")
    return Dataset(pd.DataFrame(X, index=ids, columns=FEATURE_COLUMNS), genre,
                   stratified_split(genre, seed=42),
                   {"kind": "synthetic", "path": "synthetic", "sr": None, "fma_compat": True,
                    "split": "stratified"})
