"""The features table the classical models learn from, from either of its two sources.

- a featurize run directory (``RUN_DIR/featurize.json`` + ``RUN_DIR/features/part-*.parquet``),
  read with :func:`fmadask.runfolder.read_features`;
- FMA's published ``fma_metadata/features.csv`` (three header rows), with labels and splits from
  ``tracks.csv`` next to it through :func:`fmadask.fma.tracks.track_table`, so the classical half of
  the study runs without any audio.

Either way the result is a :class:`Dataset`: one row per track, its top-level genre, its split and
the 518 features in :data:`fmadask.features.FEATURE_COLUMNS` order, plus how the features were
made (sample rate, FMA-compatible mode), which a saved model records so that
:func:`fmadask.predict.predict` featurizes new audio the same way.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmadask import storage
from fmadask.errors import ConfigError, DataError
from fmadask.fma.splits import SPLITS
from fmadask.options import SPLIT_METHODS, SPLIT_SEED, Options, same_as, setting
from fmadask.runfolder import FEATURES_DIR, JOB_FILE, read_features, read_job

#: Name of FMA's published features file.
FMA_FEATURES_CSV = "features.csv"


@dataclass(frozen=True, kw_only=True)
class DatasetOptions(Options):
    """Which split the classical stage learns with (the data options of :func:`load_dataset`):
    FMA's or the study's stratified 80/10/10 with its seed, and for FMA's ``features.csv`` the
    subset (a run holds the subset it was made for)."""

    split: str = same_as("data.split")
    seed: int = same_as("data.seed")
    subset: str = same_as("data.subset")


@dataclass
class Dataset:
    """Features, labels and splits of the tracks a model learns from.

    Attributes
    ----------
    features : pandas.DataFrame, shape (n_tracks, 518)
        float32, indexed by ``track_id`` (sorted), columns in FEATURE_COLUMNS order.
    genre : pandas.Series of str, length n_tracks
        Top-level genre of each track.
    split : pandas.Series of str, length n_tracks
        'training', 'validation' or 'test'.
    info : dict
        Where the table came from and how its features were made: ``kind`` ('run' or
        'fma_features_csv'), ``path``, ``sr`` (Hz, or None for each file's native rate),
        ``fma_compat``, ``decoders``, ``split``, ``split_seed``, ``subset``.
    """

    features: pd.DataFrame
    genre: pd.Series
    split: pd.Series
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        """The genres, sorted; a model's class ``i`` is ``classes[i]``."""
        return sorted(self.genre.unique().tolist())

    def rows(self, split: str) -> np.ndarray:
        """Boolean mask of the tracks of ``split``."""
        return (self.split == split).to_numpy()

    def xy(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Features and encoded labels of one split.

        Returns
        -------
        X : numpy.ndarray, shape (n, 518), float32
        y : numpy.ndarray, shape (n,), int64
            Index into :attr:`classes`.
        """
        mask = self.rows(split)
        codes = pd.Categorical(self.genre[mask], categories=self.classes).codes
        return self.features.to_numpy(dtype=np.float32)[mask], codes.astype(np.int64)


def load_dataset(source: str | Path, split: str = "official", split_seed: int = SPLIT_SEED,
                 subset: str = "small", storage_options: Mapping[str, Any] | None = None
                 ) -> Dataset:
    """Load the features table of a featurize run or of FMA's ``features.csv``.

    Parameters
    ----------
    source : str or Path
        A run directory (or its ``features/`` folder), FMA's ``features.csv``, the
        ``fma_metadata`` folder holding it, or the data folder holding ``fma_metadata/``.
    split : {'official', 'stratified'}
        FMA's ``('set', 'split')`` or the study's seeded, genre-stratified 80/10/10. For a run,
        the split the featurize job stored is used when it is the one asked for; otherwise it is
        recomputed (stratified: over the run's featurized tracks; official: from the run's
        ``tracks.csv``).
    split_seed : int
        Seed of the stratified split (the featurize job's default, as here).
    subset : {'small', 'medium', 'large', 'full'}
        Tracks of ``features.csv`` to use (it covers all of FMA); ignored for a run, which
        holds the subset it was made for.
    storage_options : mapping, optional
        fsspec options when ``source`` is a run directory URL (``s3://bucket/runs/r1``).

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        ``source`` is neither, misses columns, has no usable track, or a genre has no training
        track. Tracks with a NaN or infinite feature are left out, not an error (``info['dropped_nonfinite']`` counts them).
    ConfigError
        Unknown ``split``.
    """
    if split not in SPLIT_METHODS:
        raise ConfigError(f"unknown split {split!r}: choose one of {', '.join(SPLIT_METHODS)}")
    if storage.is_remote(source):
        if not storage.isfile(storage.join(source, JOB_FILE), storage_options):
            raise DataError(f"{storage.redact(source)} holds no {JOB_FILE}: pass a featurize run "
                            "directory")
        dataset = _drop_nonfinite(_from_run(str(source), split, split_seed, storage_options))
        _check(dataset, source)
        return dataset
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path} does not exist: pass a featurize run directory or FMA's "
                        "fma_metadata/features.csv")
    run_dir = _run_dir(path)
    if run_dir is not None:
        dataset = _from_run(run_dir, split, split_seed)
    else:
        dataset = _from_fma_csv(_features_csv(path), split, split_seed, subset)
    dataset = _drop_nonfinite(dataset)
    _check(dataset, path)
    return dataset


def _drop_nonfinite(dataset: Dataset) -> Dataset:
    """Leave out tracks with any NaN or infinite feature; ``info['dropped_nonfinite']`` counts
    them: one non-finite value would stop most estimators.
    """
    values = dataset.features.to_numpy()
    finite = np.isfinite(values).all(axis=1)
    dataset.info["dropped_nonfinite"] = int((~finite).sum())
    if finite.all():
        return dataset
    return Dataset(dataset.features[finite], dataset.genre[finite], dataset.split[finite],
                   dataset.info)


def _run_dir(path: Path) -> Path | None:
    for candidate in (path, path.parent if path.name == FEATURES_DIR else None):
        if candidate is not None and (candidate / JOB_FILE).is_file():
            return candidate
    return None


def _features_csv(path: Path) -> Path:
    from fmadask.fma.layout import METADATA_DIR

    for candidate in (path, path / FMA_FEATURES_CSV, path / METADATA_DIR / FMA_FEATURES_CSV):
        if candidate.is_file():
            return candidate
    raise DataError(f"{path} is neither a featurize run directory (no featurize.json) nor FMA's "
                    f"{FMA_FEATURES_CSV}: run 'fmadask featurize' or 'fmadask fetch metadata' first")


def _from_run(run_dir: str | Path, split: str, split_seed: int,
              storage_options: Mapping[str, Any] | None = None) -> Dataset:
    job = read_job(run_dir, storage_options)
    params = job["params"]
    table = read_features(run_dir, storage_options=storage_options)
    if table.empty:
        raise DataError(f"{run_dir} holds no featurized track: check its errors/ folder "
                        "('fmadask featurize' prints a summary)")
    stored = params.get("split", "official")
    if split == stored and (split == "official" or params.get("seed") == split_seed):
        splits = table["split"]
    elif split == "stratified":
        from fmadask.fma.splits import stratified_split

        splits = stratified_split(table["genre_top"], seed=split_seed)
    else:
        splits = _official_split_of(job, table.index, storage_options)
    info = {"kind": "run", "path": str(storage.resolve(run_dir)), "sr": params.get("sr"),
            "fma_compat": params.get("fma_compat", True), "decoders": job.get("decoders"),
            "max_seconds": params.get("max_seconds"), "subset": params.get("subset"),
            "split": split, "split_seed": split_seed if split == "stratified" else None}
    return Dataset(table.drop(columns=["split", "genre_top"]), table["genre_top"].astype(str),
                   splits.astype(str), info)


def _official_split_of(job: dict, track_ids: pd.Index,
                       storage_options: Mapping[str, Any] | None = None) -> pd.Series:
    """FMA's official split of a run's tracks, from the ``tracks.csv`` the run was made from."""
    from fmadask.fma.metadata import load_tracks
    from fmadask.fma.splits import official_split

    data_dir = job.get("data_dir")
    splits = official_split(load_tracks(data_dir, storage_options)).reindex(track_ids)
    if splits.isna().any():
        raise DataError(f"{data_dir}: tracks.csv lacks the split of {int(splits.isna().sum())} "
                        f"featurized tracks: set {setting('data.split')} to stratified")
    return splits


def flat_feature_names(columns: pd.MultiIndex) -> list[str]:
    """``feature_statistic_NN`` names of FMA's three-level (feature, statistics, number) columns.

    >>> flat_feature_names(pd.MultiIndex.from_tuples([("mfcc", "mean", "01")]))
    ['mfcc_mean_01']
    """
    return [f"{feature}_{statistic}_{int(number):02d}" for feature, statistic, number in columns]


def _from_fma_csv(csv: Path, split: str, split_seed: int, subset: str) -> Dataset:
    from fmadask.features import FEATURE_COLUMNS
    from fmadask.fma.metadata import load_features
    from fmadask.fma.tracks import track_table

    features = load_features(csv)
    features.columns = flat_feature_names(features.columns)
    missing = [c for c in FEATURE_COLUMNS if c not in features.columns]
    if missing:
        raise DataError(f"{csv} lacks {len(missing)} of FMA's 518 feature columns (first: "
                        f"{missing[0]}): re-download it with 'fmadask fetch metadata'")
    tracks = track_table(csv.parent, subset=subset, split=split, seed=split_seed)
    ids = tracks.index.intersection(features.index)
    info = {"kind": "fma_features_csv", "path": str(csv.resolve()), "sr": None,
            "fma_compat": True, "decoders": ["FMA features.csv (published)"], "max_seconds": None,
            "subset": subset, "split": split,
            "split_seed": split_seed if split == "stratified" else None}
    return Dataset(features.loc[ids, FEATURE_COLUMNS].astype(np.float32),
                   tracks.loc[ids, "genre_top"].astype(str), tracks.loc[ids, "split"].astype(str),
                   info)


def _check(dataset: Dataset, source: str | Path) -> None:
    bad = sorted(set(dataset.split.unique()) - set(SPLITS))
    if bad:
        raise DataError(f"{source}: unknown split values {bad}: expected {', '.join(SPLITS)}")
    if dataset.features.empty:
        raise DataError(f"{source}: no track with features and a genre: check the subset and "
                        "that the features belong to these tracks")
    training = dataset.genre[dataset.rows("training")]
    lacking = sorted(set(dataset.classes) - set(training.unique()))
    if lacking:
        raise DataError(f"{source}: genre(s) {', '.join(lacking)} have no training track: set "
                        f"{setting('data.split')} to stratified or use more tracks per genre")
    if len(dataset.classes) < 2:
        raise DataError(f"{source}: only one genre ({dataset.classes[0]}): a classifier needs two")
