"""The one naming scheme of the 518 FMA feature columns, and FMA's 3-level view of it.

Our tables use flat names ``{feature}_{statistic}_{NN}`` (Parquet wants flat string columns);
FMA's ``features.csv`` has a 3-level column header (feature, statistics, number). Both list the
columns in the same order: FMA's, which is its MultiIndex sorted (feature, then statistic, then
number, each alphabetically).
"""
from __future__ import annotations

import pandas as pd

#: Rows per frame of each feature, as in FMA's ``features.py``. FMA calls the RMS feature "rmse".
FEATURE_SIZES: dict[str, int] = {
    "chroma_cens": 12,
    "chroma_cqt": 12,
    "chroma_stft": 12,
    "mfcc": 20,
    "rmse": 1,
    "spectral_bandwidth": 1,
    "spectral_centroid": 1,
    "spectral_contrast": 7,
    "spectral_rolloff": 1,
    "tonnetz": 6,
    "zcr": 1,
}

#: The summary statistics over frames, in FMA's (alphabetical) column order.
STATISTICS: tuple[str, ...] = ("kurtosis", "max", "mean", "median", "min", "skew", "std")

#: FMA's 3 column levels.
LEVELS: tuple[str, str, str] = ("feature", "statistics", "number")

#: (feature, statistic, number) of each column, in FMA's order.
FMA_TUPLES: tuple[tuple[str, str, str], ...] = tuple(
    (feature, statistic, f"{i + 1:02d}")
    for feature in sorted(FEATURE_SIZES)
    for statistic in STATISTICS
    for i in range(FEATURE_SIZES[feature])
)

#: The 518 flat column names ``{feature}_{statistic}_{NN}``, in FMA's order.
FEATURE_COLUMNS: list[str] = ["_".join(t) for t in FMA_TUPLES]

_TUPLE_OF = dict(zip(FEATURE_COLUMNS, FMA_TUPLES))


def to_fma_columns(df: pd.DataFrame) -> pd.DataFrame:
    """View a table of our feature columns with FMA's 3-level column index.

    Parameters
    ----------
    df : pandas.DataFrame
        Any table holding the 518 columns of :data:`FEATURE_COLUMNS` (other columns, such as
        ``split`` or ``genre_top``, are dropped; use them as the index first to keep them).

    Returns
    -------
    pandas.DataFrame
        The 518 columns in FMA's order, with a ``pandas.MultiIndex`` named
        ``('feature', 'statistics', 'number')``, comparable column by column with
        ``pd.read_csv('features.csv', index_col=0, header=[0, 1, 2])``.

    Raises
    ------
    KeyError
        If a feature column is missing.
    """
    missing = [c for c in FEATURE_COLUMNS if c not in df.columns]
    if missing:
        raise KeyError(f"{len(missing)} feature columns missing, e.g. {missing[0]!r}; "
                       "expected the columns of fmadask.features.FEATURE_COLUMNS")
    out = df[FEATURE_COLUMNS].copy()
    out.columns = pd.MultiIndex.from_tuples([_TUPLE_OF[c] for c in FEATURE_COLUMNS], names=LEVELS)
    return out
