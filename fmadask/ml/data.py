"""The features table the classical models learn from, from either of its two sources.

- a featurize run directory (``RUN_DIR/featurize.json`` + ``RUN_DIR/features/part-*.parquet``),
  read with :func:`fmadask.runfolder.read_features`;
- FMA's published ``fma_metadata/features.csv`` (three header rows), with labels and splits from
  ``tracks.csv`` next to it through :func:`fmadask.fma.tracks.track_table`, so the classical half of
  the study runs without any audio.

Either way the result is a :class:`Dataset`: one row per track, its top-level genre, its split and
the 518 features in :data:`fmadask.features.FEATURE_COLUMNS` order, plus how the features were
made (sample rate, FMA-compatible mode), which a saved model records so that
:func:`fmadask.predict.predict` featurizes new audio the same way. For the multi-label target
(``genres_all``) it also holds each track's genres as an indicator matrix over the genre ids
present, and the genre tree; a run's labels are its featurize job's records
(:func:`fmadask.runlabels.read_labels`).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmadask import storage
from fmadask.errors import ConfigError, DataError
from fmadask.fma.labels import label_matrix
from fmadask.fma.splits import SPLITS
from fmadask.options import SPLIT_METHODS, SPLIT_SEED, Options, check, same_as, setting
from fmadask.runfolder import FEATURES_DIR, JOB_FILE, read_features, read_job
from fmadask.runlabels import read_labels

logger = logging.getLogger(__name__)

#: Name of FMA's published features file.
FMA_FEATURES_CSV = "features.csv"


@dataclass(frozen=True, kw_only=True)
class DatasetOptions(Options):
    """What the classical stage learns from (the data options of :func:`load_dataset`): the
    target, and for FMA's ``features.csv`` the subset and the split. A run folder holds its
    subset and the split its featurize job decided; ``split``/``seed`` left ``None`` take it
    (naming another is refused: the split is decided once, at featurize)."""

    split: str | None = None
    seed: int | None = None
    subset: str = same_as("data.subset")
    target: str = same_as("data.target")


@dataclass
class Dataset:
    """Features, labels and splits of the tracks a model learns from.

    Attributes
    ----------
    features : pandas.DataFrame, shape (n_tracks, 518)
        float32, indexed by ``track_id`` (sorted), columns in FEATURE_COLUMNS order.
    genre : pandas.Series, length n_tracks
        Top-level genre of each track (str); for ``genres_all``, None where a track has several.
    split : pandas.Series of str, length n_tracks
        'training', 'validation' or 'test'.
    info : dict
        Where the table came from and how its features were made: ``kind`` ('run' or
        'fma_features_csv'), ``path``, ``sr`` (Hz, or None for each file's native rate),
        ``fma_compat``, ``decoders``, ``split``, ``split_seed``, ``subset``, ``target``;
        ``excluded_no_genre`` (tracks left out for having no label of the target) and, for
        ``genres_all``, ``labels_without_training`` (titles of genres seen only outside the
        training split, which no model can learn: left out of :attr:`labels`).
    labels : pandas.DataFrame, shape (n_tracks, n_labels), optional
        ``genres_all`` only: uint8 indicators, one column per genre id (sorted) that some
        training track has; None for ``genre_top``.
    genres : pandas.DataFrame, optional
        ``genres_all`` only: the genre tree, ``title``, ``parent`` (0 at the top) and
        ``top_level`` by genre id.
    """

    features: pd.DataFrame
    genre: pd.Series
    split: pd.Series
    info: dict[str, Any] = field(default_factory=dict)
    labels: pd.DataFrame | None = None
    genres: pd.DataFrame | None = None

    @property
    def target(self) -> str:
        """'genre_top' (one class per track) or 'genres_all' (multi-label)."""
        return "genre_top" if self.labels is None else "genres_all"

    @property
    def label_ids(self) -> list[int]:
        """``genres_all``: the genre id of each label column ([] for ``genre_top``)."""
        return [] if self.labels is None else [int(g) for g in self.labels.columns]

    @property
    def classes(self) -> list[str]:
        """A model's class (or label) ``i`` is ``classes[i]``: the genres, sorted, for
        ``genre_top``; the title of each label of :attr:`label_ids` for ``genres_all``."""
        if self.labels is not None:
            return [str(self.genres.at[g, "title"]) for g in self.label_ids]
        return sorted(self.genre.unique().tolist())

    def rows(self, split: str) -> np.ndarray:
        """Boolean mask of the tracks of ``split``."""
        return (self.split == split).to_numpy()

    def xy(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Features and encoded labels of one split.

        Returns
        -------
        X : numpy.ndarray, shape (n, 518), float32
        y : numpy.ndarray
            ``genre_top``: shape (n,), int64, index into :attr:`classes`. ``genres_all``:
            shape (n, n_labels), uint8 indicators (scikit-learn's multi-label format).
        """
        mask = self.rows(split)
        X = self.features.to_numpy(dtype=np.float32)[mask]
        if self.labels is not None:
            return X, self.labels.to_numpy(dtype=np.uint8)[mask]
        codes = pd.Categorical(self.genre[mask], categories=self.classes).codes
        return X, codes.astype(np.int64)

    def subset(self, mask: np.ndarray) -> Dataset:
        """The tracks of boolean ``mask``, with the same labels, tree and info."""
        return Dataset(self.features[mask], self.genre[mask], self.split[mask], self.info,
                       None if self.labels is None else self.labels[mask], self.genres)


def load_dataset(source: str | Path, split: str | None = None, split_seed: int | None = None,
                 subset: str = "small", storage_options: Mapping[str, Any] | None = None,
                 target: str = "genre_top") -> Dataset:
    """Load the features table of a featurize run or of FMA's ``features.csv``.

    Parameters
    ----------
    source : str or Path
        A run directory (or its ``features/`` folder), FMA's ``features.csv``, the
        ``fma_metadata`` folder holding it, or the data folder holding ``fma_metadata/``.
    split : {'official', 'stratified'}, optional
        FMA's ``('set', 'split')`` or the study's seeded, genre-stratified 80/10/10. A run
        holds the split its featurize job decided, and every later stage uses it: ``None`` (or
        that split) takes it, another is refused (:class:`DataError`). For ``features.csv``
        the split is made here; ``None`` is FMA's.
    split_seed : int, optional
        Seed of the stratified split (``None``: the run's, or the study's
        :data:`~fmadask.options.SPLIT_SEED`).
    subset : {'small', 'medium', 'large', 'full'}
        Tracks of ``features.csv`` to use (it covers all of FMA); ignored for a run, which
        holds the subset it was made for.
    storage_options : mapping, optional
        fsspec options when ``source`` is a run directory URL (``s3://bucket/runs/r1``).
    target : {'genre_top', 'genres_all'}
        One top-level genre per track (tracks without one are left out and counted in
        ``info['excluded_no_genre']``), or every genre of ``genres_all`` (multi-label: tracks
        with at least one genre, with or without a ``genre_top``).

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        ``source`` is neither, misses columns, has no usable track, a genre has no training
        track (``genre_top``), a split has no positive of any label (``genres_all``), a run
        holds no ``genres_all`` labels (featurized before fmadask recorded them), or a split
        other than the run's is asked for. Tracks with a
        NaN or infinite feature are left out, not an error (``info['dropped_nonfinite']``
        counts them).
    ConfigError
        Unknown ``split`` or ``target``.
    """
    if split is not None and split not in SPLIT_METHODS:
        raise ConfigError(f"unknown split {split!r}: choose one of {', '.join(SPLIT_METHODS)}")
    check("data.target", target)
    if storage.is_remote(source):
        if not storage.isfile(storage.join(source, JOB_FILE), storage_options):
            raise DataError(f"{storage.redact(source)} holds no {JOB_FILE}: pass a featurize run "
                            "directory")
        dataset = _from_run(str(source), split, split_seed, target, storage_options)
        where: str | Path = source
    else:
        path = where = Path(source)
        if not path.exists():
            raise DataError(f"{path} does not exist: pass a featurize run directory or FMA's "
                            "fma_metadata/features.csv")
        run_dir = _run_dir(path)
        if run_dir is not None:
            dataset = _from_run(run_dir, split, split_seed, target)
        else:
            dataset = _from_fma_csv(_features_csv(path), split or "official",
                                    SPLIT_SEED if split_seed is None else split_seed, subset,
                                    target)
    dataset = _drop_nonfinite(dataset)
    _check(dataset, where)
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
    return dataset.subset(finite)


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


def _from_run(run_dir: str | Path, split: str | None, split_seed: int | None, target: str,
              storage_options: Mapping[str, Any] | None = None) -> Dataset:
    job = read_job(run_dir, storage_options)
    params = job["params"]
    stored, seed = _recorded_split(run_dir, params, split, split_seed)   # before reading data
    table = read_features(run_dir, storage_options=storage_options)
    if table.empty:
        raise DataError(f"{run_dir} holds no featurized track: check its errors/ folder "
                        "('fmadask featurize' prints a summary)")
    featurized_for = params.get("target", "genre_top")    # absent: before multi-label
    if target == "genres_all":
        records = read_labels(run_dir, storage_options)
        if records is None:
            raise DataError(f"{storage.redact(run_dir)} holds no genres_all labels (featurized by "
                            "an fmadask that did not record them): featurize it again with "
                            f"{setting('data.target')} genres_all into a new folder, or with "
                            f"{setting('output.overwrite')}")
        labels, genres = records
        genres_all = labels["genres_all"].reindex(table.index)
        keep = genres_all.map(lambda ids: isinstance(ids, list) and len(ids) > 0).to_numpy()
        if featurized_for != "genres_all":
            logger.warning(f"warning: {storage.redact(run_dir)} was featurized for genre_top: its "
                           "tracks without a genre_top were not featurized; featurize with "
                           f"{setting('data.target')} genres_all to learn from them too")
    else:
        keep = table["genre_top"].notna().to_numpy()
    excluded = int((~keep).sum())
    table = table[keep]
    info = {"kind": "run", "path": str(storage.resolve(run_dir)), "sr": params.get("sr"),
            "fma_compat": params.get("fma_compat", True), "decoders": job.get("decoders"),
            "max_seconds": params.get("max_seconds"), "subset": params.get("subset"),
            "split": stored, "split_seed": seed, "target": target,
            "featurized_for": featurized_for, "excluded_no_genre": excluded}
    features = table.drop(columns=["split", "genre_top"])
    splits = table["split"].astype(str)
    if target == "genre_top":
        return Dataset(features, table["genre_top"].astype(str), splits, info)
    genre = table["genre_top"].astype(object).where(table["genre_top"].notna(), None)
    return _multi_label(features, genre, splits, genres_all[keep], genres, info)


def _recorded_split(run_dir: str | Path, params: Mapping[str, Any], split: str | None,
                    split_seed: int | None) -> tuple[str, int | None]:
    """The split a run's featurize job decided (``(method, seed)``, the seed ``None`` for FMA's),
    which every later stage uses: a different one asked for is refused, never re-derived (a
    model trained on one split and fused or scored on another would leak test tracks)."""
    stored = params.get("split", "official")
    seed = params.get("seed") if stored == "stratified" else None
    if split is None or (split == stored and (seed is None or split_seed in (None, seed))):
        return stored, seed
    asked = split if split == "official" else f"{split} (seed {split_seed})"
    made = stored if seed is None else f"{stored} (seed {seed})"
    raise DataError(f"{storage.redact(run_dir)} was featurized with the {made} split, which its "
                    f"later stages use; {asked} was asked for: leave {setting('data.split')} "
                    "unset, or featurize again with that split into a new folder")


def _multi_label(features: pd.DataFrame, genre: pd.Series, split: pd.Series,
                 genres_all: pd.Series, genres: pd.DataFrame, info: dict) -> Dataset:
    """The ``genres_all`` dataset: one label per genre id some training track has (the others,
    seen only in validation or test, cannot be learned: listed in
    ``info['labels_without_training']``)."""
    training = genres_all[(split == "training").to_numpy()]
    learnable = sorted({int(g) for ids in training for g in ids})
    unseen = sorted({int(g) for ids in genres_all for g in ids} - set(learnable))
    info["labels_without_training"] = [str(genres.at[g, "title"]) if g in genres.index else str(g)
                                       for g in unseen]
    labels = pd.DataFrame(label_matrix(genres_all, learnable), index=features.index,
                          columns=learnable)
    tree = genres[["title", "parent", "top_level"]].copy()
    return Dataset(features, genre, split, info, labels, tree)


def flat_feature_names(columns: pd.MultiIndex) -> list[str]:
    """``feature_statistic_NN`` names of FMA's three-level (feature, statistics, number) columns.

    >>> flat_feature_names(pd.MultiIndex.from_tuples([("mfcc", "mean", "01")]))
    ['mfcc_mean_01']
    """
    return [f"{feature}_{statistic}_{int(number):02d}" for feature, statistic, number in columns]


def _from_fma_csv(csv: Path, split: str, split_seed: int, subset: str, target: str) -> Dataset:
    from fmadask.features import FEATURE_COLUMNS
    from fmadask.fma.metadata import load_features
    from fmadask.fma.tracks import track_table

    features = load_features(csv)
    features.columns = flat_feature_names(features.columns)
    missing = [c for c in FEATURE_COLUMNS if c not in features.columns]
    if missing:
        raise DataError(f"{csv} lacks {len(missing)} of FMA's 518 feature columns (first: "
                        f"{missing[0]}): re-download it with 'fmadask fetch metadata'")
    tracks = track_table(csv.parent, subset=subset, split=split, seed=split_seed, target=target)
    ids = tracks.index.intersection(features.index)
    info = {"kind": "fma_features_csv", "path": str(csv.resolve()), "sr": None,
            "fma_compat": True, "decoders": ["FMA features.csv (published)"], "max_seconds": None,
            "subset": subset, "split": split,
            "split_seed": split_seed if split == "stratified" else None, "target": target,
            "excluded_no_genre": int(tracks.attrs["excluded_no_genre"])}
    table = features.loc[ids, FEATURE_COLUMNS].astype(np.float32)
    splits = tracks.loc[ids, "split"].astype(str)
    if target == "genre_top":
        return Dataset(table, tracks.loc[ids, "genre_top"].astype(str), splits, info)
    return _multi_label(table, tracks.loc[ids, "genre_top"], splits, tracks.loc[ids, "genres_all"],
                        tracks.attrs["genres"], info)


def _check(dataset: Dataset, source: str | Path) -> None:
    bad = sorted(set(dataset.split.unique()) - set(SPLITS))
    if bad:
        raise DataError(f"{source}: unknown split values {bad}: expected {', '.join(SPLITS)}")
    if dataset.features.empty:
        raise DataError(f"{source}: no track with features and a genre: check the subset and "
                        "that the features belong to these tracks")
    if dataset.labels is not None:
        _check_multi_label(dataset, source)
        return
    training = dataset.genre[dataset.rows("training")]
    lacking = sorted(set(dataset.classes) - set(training.unique()))
    if lacking:
        raise DataError(f"{source}: genre(s) {', '.join(lacking)} have no training track: set "
                        f"{setting('data.split')} to stratified or use more tracks per genre")
    if len(dataset.classes) < 2:
        raise DataError(f"{source}: only one genre ({dataset.classes[0]}): a classifier needs two")


def _check_multi_label(dataset: Dataset, source: str | Path) -> None:
    """Every split has a positive of some label: a split without any scores nothing."""
    for split in SPLITS:
        if not dataset.labels.to_numpy()[dataset.rows(split)].any():
            raise DataError(f"{source}: the {split} split has no positive of any genre label "
                            f"({int(dataset.rows(split).sum())} tracks): set "
                            f"{setting('data.split')} to stratified or use more tracks")
