"""The featurize job's part of a run directory: file names, Parquet schemas and readers.

::

    RUN_DIR/featurize.json                    job parameters, partition plan, versions, summary
    RUN_DIR/features/part-XXXXX.parquet       track_id, split, genre_top, 518 float32 columns
    RUN_DIR/spectrograms/part-XXXXX.npy       float16 [tracks, n_mels, frames]
    RUN_DIR/spectrograms/index/part-XXXXX.parquet   track_id, shard, row, frames, genre_top, split
    RUN_DIR/spectrograms/params.json          mel parameters, frames, pad policy, decoder
    RUN_DIR/errors/part-XXXXX.parquet         track_id, stage, error_type, message
    RUN_DIR/_partitions/part-XXXXX.json       completion record: size and SHA-256 of each file

A partition is *complete* when its completion record exists and the files match it: the job
writes the record last, after the partition's files, each fsynced and published by an atomic
rename. Readers check sizes (cheap: a truncated or missing file makes its partition incomplete);
a featurize re-run also checks the checksums and redoes any partition that does not match. The
readers here read complete partitions only, so a later stage never trains on a half-finished or
damaged run by accident.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fmadask.errors import DataError
from fmadask.integrity import file_digest

JOB_FILE = "featurize.json"
FEATURES_DIR = "features"
SPECTROGRAMS_DIR = "spectrograms"
INDEX_DIR = "spectrograms/index"
ERRORS_DIR = "errors"
MEL_PARAMS_FILE = "spectrograms/params.json"
RECORDS_DIR = "_partitions"
#: Folders the job writes part files into.
PART_DIRS = (FEATURES_DIR, SPECTROGRAMS_DIR, INDEX_DIR, ERRORS_DIR)
#: What the job can produce.
OUTPUTS = ("features", "spectrograms")
#: Partition numbers have five digits in file names.
MAX_PARTITIONS = 100_000

ERRORS_SCHEMA = pa.schema([("track_id", pa.int64()), ("stage", pa.string()),
                           ("error_type", pa.string()), ("message", pa.string())])
INDEX_SCHEMA = pa.schema([("track_id", pa.int64()), ("shard", pa.string()), ("row", pa.int64()),
                          ("frames", pa.int64()), ("genre_top", pa.string()),
                          ("split", pa.string())])


def features_schema() -> pa.Schema:
    """Schema of a features part: ``track_id``, ``split``, ``genre_top``, then FEATURE_COLUMNS."""
    from fmadask.features import FEATURE_COLUMNS

    return pa.schema([("track_id", pa.int64()), ("split", pa.string()), ("genre_top", pa.string())]
                     + [(name, pa.float32()) for name in FEATURE_COLUMNS])


def part_name(partition: int, suffix: str) -> str:
    """``part-00042.parquet`` for ``part_name(42, 'parquet')``."""
    return f"part-{partition:05d}.{suffix}"


@dataclass(frozen=True)
class PartitionFiles:
    """The files of one partition in a run directory."""

    run_dir: Path
    partition: int

    @property
    def features(self) -> Path:
        return self.run_dir / FEATURES_DIR / part_name(self.partition, "parquet")

    @property
    def spectrograms(self) -> Path:
        return self.run_dir / SPECTROGRAMS_DIR / part_name(self.partition, "npy")

    @property
    def index(self) -> Path:
        return self.run_dir / INDEX_DIR / part_name(self.partition, "parquet")

    @property
    def errors(self) -> Path:
        return self.run_dir / ERRORS_DIR / part_name(self.partition, "parquet")

    @property
    def record(self) -> Path:
        """The completion record, written after every other file of the partition."""
        return self.run_dir / RECORDS_DIR / part_name(self.partition, "json")

    def outputs(self, what: Sequence[str]) -> list[Path]:
        """The files a complete partition has, for the outputs ``what``; errors file last."""
        paths = []
        if "features" in what:
            paths.append(self.features)
        if "spectrograms" in what:
            paths += [self.spectrograms, self.index]
        return paths + [self.errors]

    def write_record(self, what: Sequence[str]) -> None:
        """Record size and SHA-256 of the partition's files: the partition is now complete."""
        from fmadask.atomic import write_json

        files = {str(p.relative_to(self.run_dir)): file_digest(p) for p in self.outputs(what)}
        write_json({"partition": self.partition, "files": files}, self.record)

    def complete(self, what: Sequence[str], checksums: bool = False) -> bool:
        """True when the completion record exists and every file matches it.

        Parameters
        ----------
        what : sequence of str
            The outputs the partition must have.
        checksums : bool
            Also compare SHA-256 digests (reads every byte); by default sizes only.
        """
        try:
            recorded = json.loads(self.record.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        expected = [str(p.relative_to(self.run_dir)) for p in self.outputs(what)]
        if not isinstance(recorded, dict) or sorted(recorded) != sorted(expected):
            return False
        for name, want in recorded.items():
            path = self.run_dir / name
            try:
                if path.stat().st_size != want["size"]:
                    return False
                if checksums and file_digest(path)["sha256"] != want["sha256"]:
                    return False
            except (OSError, KeyError, TypeError):
                return False
        return True


def read_job(run_dir: str | Path) -> dict:
    """The parsed ``RUN_DIR/featurize.json``; :class:`DataError` when there is none."""
    path = Path(run_dir) / JOB_FILE
    if not path.is_file():
        raise DataError(f"{path} not found: run 'fmadask featurize DATA_DIR --out {run_dir}' first")
    job = _read_json(path)
    try:
        job["params"]["what"], job["plan"]["partitions"]
    except (KeyError, TypeError):
        raise DataError(f"{path} is damaged (no params/plan): featurize again with "
                        "overwrite") from None
    return job


def _read_json(path: Path) -> dict:
    """A JSON object fmadask wrote, or a one-line DataError when it is damaged."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is damaged ({type(exc).__name__}): featurize again with "
                        "overwrite") from None
    if not isinstance(value, dict):
        raise DataError(f"{path} is damaged (not a JSON object): featurize again with overwrite")
    return value


def complete_partitions(run_dir: str | Path, job: dict | None = None,
                        checksums: bool = False) -> list[int]:
    """Numbers of the partitions of a run whose files match their completion records.

    ``checksums`` also compares SHA-256 digests (in a few threads: hashing releases the GIL).
    """
    run_dir = Path(run_dir)
    job = job or read_job(run_dir)
    what = job["params"]["what"]
    parts = [PartitionFiles(run_dir, p) for p in range(job["plan"]["partitions"])]
    with ThreadPoolExecutor(max_workers=4 if checksums else 1) as pool:
        ok = list(pool.map(lambda f: f.complete(what, checksums), parts))
    return [f.partition for f, good in zip(parts, ok) if good]


def _complete_files(run_dir: str | Path, kind: str, allow_partial: bool) -> list[Path]:
    run_dir = Path(run_dir)
    job = read_job(run_dir)
    output = "features" if kind == "features" else "spectrograms"
    if kind != "errors" and output not in job["params"]["what"]:
        raise DataError(f"{run_dir} has no {output}: re-run 'fmadask featurize' with "
                        f"--what {output} and --overwrite")
    done = complete_partitions(run_dir, job)
    total = job["plan"]["partitions"]
    if len(done) < total and not allow_partial:
        raise DataError(f"{run_dir}: {total - len(done)} of {total} partitions are not featurized "
                        f"yet: re-run the same 'fmadask featurize' command to finish them")
    return [getattr(PartitionFiles(run_dir, p), kind) for p in done]


def _read_parts(files: list[Path], schema: pa.Schema) -> pd.DataFrame:
    tables = [pq.read_table(f, schema=schema) for f in files]
    return (pa.concat_tables(tables) if tables else schema.empty_table()).to_pandas()


def read_features(run_dir: str | Path, allow_partial: bool = False) -> pd.DataFrame:
    """The features of a run: one row per featurized track.

    Parameters
    ----------
    run_dir : str or Path
        A run directory written by :func:`fmadask.pipeline.run_featurize`.
    allow_partial : bool
        Read the complete partitions of an unfinished run instead of raising.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``track_id`` (int64, sorted); columns ``split``, ``genre_top`` (str) and the
        518 float32 columns of :data:`fmadask.features.FEATURE_COLUMNS` in FMA's order.

    Raises
    ------
    DataError
        No run there, no features in it, or unfinished partitions (unless ``allow_partial``).
    """
    df = _read_parts(_complete_files(run_dir, "features", allow_partial), features_schema())
    return df.set_index("track_id").sort_index()


def read_errors(run_dir: str | Path, allow_partial: bool = False) -> pd.DataFrame:
    """The tracks a run could not process: one row per track and failed stage.

    Returns
    -------
    pandas.DataFrame
        Columns ``track_id`` (int64), ``stage`` ('decode', 'features' or 'spectrogram'),
        ``error_type`` (e.g. 'empty', 'too_short', 'truncated' or an exception class name) and
        ``message``, sorted by track id (default RangeIndex).
    """
    df = _read_parts(_complete_files(run_dir, "errors", allow_partial), ERRORS_SCHEMA)
    return df.sort_values(["track_id", "stage"], kind="stable").reset_index(drop=True)


def read_spectrogram_index(run_dir: str | Path, allow_partial: bool = False) -> pd.DataFrame:
    """Where each track's log-mel spectrogram is stored.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``track_id`` (sorted); columns ``shard`` (file name in
        ``RUN_DIR/spectrograms/``), ``row`` (first axis of that shard), ``frames`` (valid,
        unpadded frames), ``genre_top``, ``split``. Open a shard with
        ``numpy.load(RUN_DIR / 'spectrograms' / shard, mmap_mode='r')``.
    """
    df = _read_parts(_complete_files(run_dir, "index", allow_partial), INDEX_SCHEMA)
    return df.set_index("track_id").sort_index()


def read_mel_params(run_dir: str | Path) -> dict:
    """``RUN_DIR/spectrograms/params.json``: the mel parameters the shards were made with."""
    path = Path(run_dir) / MEL_PARAMS_FILE
    if not path.is_file():
        raise DataError(f"{path} not found: featurize with --what spectrograms first")
    return _read_json(path)


#: Names that make a folder an fmadask run folder (what ``featurize`` and ``run`` write first).
RUN_MARKERS = (JOB_FILE, "job.toml", "_stages")


def foreign_entries(run_dir: str | Path) -> list[str]:
    """Names in ``run_dir`` when it is neither empty nor an fmadask run folder (sorted), else [].

    The run folder's lock file does not count: the caller holds it.
    """
    from fmadask.lock import LOCK_NAME

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    names = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(LOCK_NAME))
    if any(m in names for m in RUN_MARKERS):
        return []
    return names
