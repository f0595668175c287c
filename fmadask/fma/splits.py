"""Train/validation/test splits: FMA's official one and the study's stratified 80/10/10."""
from __future__ import annotations

import numpy as np
import pandas as pd

from fmadask.options import SPLIT_SEED

#: The parts of a split: what models learn from, what chooses among them, what scores them.
SPLITS = ("training", "validation", "test")
#: The parts models are scored on.
EVAL_SPLITS = SPLITS[1:]


def official_split(tracks: pd.DataFrame) -> pd.Series:
    """FMA's own split, ``('set', 'split')``: 'training', 'validation' or 'test' per track."""
    split = tracks["set", "split"].astype(str)
    split.name = "split"
    return split


def stratified_split(labels: pd.Series, seed: int = SPLIT_SEED, test: float = 0.1,
                     validation: float = 0.1) -> pd.Series:
    """The study's seeded split, stratified by genre.

    Within each genre (tracks shuffled by ``seed``), ``round(n * test)`` tracks go to test, then
    ``round(rest * validation)`` of the remaining ones to validation, so FMA small's 8 x 1,000
    tracks give the study's 6,480 / 720 / 800. A genre of at least three tracks always has one
    track in each split.

    Parameters
    ----------
    labels : pandas.Series
        Genre per track, indexed by track id.
    seed : int
        Seed of the shuffle; the same seed and labels always give the same split.
    test, validation : float
        Fractions, as described above.

    Returns
    -------
    pandas.Series
        'training', 'validation' or 'test', indexed like ``labels``, named ``split``.
    """
    rng = np.random.default_rng(seed)
    split = pd.Series("training", index=labels.index, name="split", dtype=object)
    for genre in sorted(labels.unique()):
        ids = rng.permutation(np.sort(labels.index[labels == genre].to_numpy()))
        n_test = _share(len(ids), test)
        n_val = _share(len(ids) - n_test, validation)
        split.loc[ids[:n_test]] = "test"
        split.loc[ids[n_test:n_test + n_val]] = "validation"
    return split


def _share(n: int, fraction: float) -> int:
    """``round(n * fraction)``, but at least one when ``n`` can spare it (n >= 3)."""
    return max(round(n * fraction), 1 if n >= 3 and fraction > 0 else 0)
