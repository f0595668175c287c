"""The run folder's format: file names, Parquet schemas, completion records and readers.

Every stage reads what the stages before it wrote to a run folder, and nothing else: this module
is where they meet. It imports neither Dask nor torch, so any stage, a notebook or a report can
read a run without a cluster. ::

    RUN_DIR/job.toml                          the resolved job spec of the last ``fmadask run``
    RUN_DIR/_stages/<stage>.json              a finished stage's parameters (``fmadask run``)
    RUN_DIR/featurize.json                    job parameters, partition plan, versions, summary
    RUN_DIR/labels.parquet                    track_id, genre_top (null: none), genres_all ids
    RUN_DIR/genres.parquet                    the genre tree: genre_id, title, parent, top_level
    RUN_DIR/features/part-XXXXX.parquet       track_id, split, genre_top, 518 float32 columns
    RUN_DIR/spectrograms/part-XXXXX.npy       float16 [tracks, n_mels, frames]
    RUN_DIR/spectrograms/index/part-XXXXX.parquet   track_id, shard, row, frames, genre_top, split
    RUN_DIR/spectrograms/params.json          mel parameters, frames, pad policy, decoder
    RUN_DIR/errors/part-XXXXX.parquet         track_id, stage, error_type, message
    RUN_DIR/_partitions/part-XXXXX.json       completion record: size and SHA-256 of each file
    RUN_DIR/classical/                        the classical stage (models/<name>/, best.json)
    RUN_DIR/cnn/<arch>/                       the CNN stage, one folder per architecture
    RUN_DIR/fusion/                           the fused model of the two

A model folder (``classical/models/<name>``, ``cnn/<arch>``, ``fusion``) has a card,
``model.json``, whose ``kind`` says which stage's code loads it (:func:`read_card`).

A partition is *complete* when its completion record exists and the files match it: the job
writes the record last, after the partition's files, each fsynced and published by an atomic
rename. Readers check sizes (cheap: a truncated or missing file makes its partition incomplete);
a featurize re-run also checks the checksums and redoes any partition that does not match. A
record keeps each file's tag (a bucket's entity tag at upload; on disk the file's modification and
change times): a file whose size and tag are those recorded counts as unchanged without being
read, so a resume reads (or downloads) no data of a complete partition. In a bucket, sizes and
tags come from one listing. A record also counts its partition's rows and failed tracks, for the summary. The
readers here read complete partitions only, so a later stage never trains on a half-finished or
damaged run by accident.

A run directory is a local path or an fsspec URL (``s3://bucket/runs/r1``): every name below is
built with :func:`fmadask.storage.join`, which keeps local paths as :class:`~pathlib.Path`
(their code paths unchanged) and URLs as strings read and written through fsspec.
"""
from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmadask import storage
from fmadask.errors import DataError
from fmadask.integrity import file_digest
from fmadask.options import ARCHS, TARGETS, Option, OptionError, setting

if TYPE_CHECKING:     # imported where used: reading the names here stays light (fmadask --help)
    import pandas as pd
    import pyarrow as pa

Options = Mapping[str, Any] | None

#: The resolved job spec of the last ``fmadask run``.
SPEC_FILE = "job.toml"
#: Folder of the stage markers (``_stages/<stage>.json``) of ``fmadask run``.
MARKER_DIR = "_stages"
#: Folders of the stages after featurize.
CLASSICAL_DIR = "classical"
CNN_DIR = "cnn"
FUSION_DIR = "fusion"
#: A stage folder's pointer to its best model (``classical/best.json``).
BEST_FILE = "best.json"
#: A model folder's card: its kind, classes and files.
MODEL_CARD = "model.json"
#: A stage's (or a CNN's) report for people, written after its other files.
REPORT_FILE = "report.md"
#: Files and folders of the stages after featurize (every stage spells them from here):
#: one row per model (classical/, fusion/), the study's Table 1 (classical/), the classical
#: stage's record, saved models (``classical/models/<name>``), confusion matrices, searches'
#: trials and the unsupervised views.
RESULTS_FILE = "results.csv"
TABLE_FILE = "table.md"
TRAIN_RECORD = "train.json"
MODELS_DIR = "models"
CONFUSION_DIR = "confusion"
SEARCH_DIR = "search"
UNSUPERVISED_DIR = "unsupervised"
#: A model folder's per-track predictions on validation and test (``cnn/<arch>``, ``fusion``).
PREDICTIONS_FILE = "predictions.parquet"
#: The unsupervised views of the classical stage (``classical/unsupervised``): pictures of PCA,
#: t-SNE and K-means against the genres, and their numbers.
PCA_FILE = "pca.png"
TSNE_FILE = "tsne.png"
KMEANS_FILE = "kmeans.png"
UNSUPERVISED_SUMMARY = "summary.json"
#: A classical model folder's files besides its card: the pipeline, and XGBoost's own model.
PIPELINE_FILE = "pipeline.skops"
XGBOOST_FILE = "xgboost.json"
#: The fusion's folder: copies of its parts' model files (``parts/classical``, ``parts/cnn``),
#: the validation scores of every candidate weight.
PARTS_DIR = "parts"
WEIGHTS_TABLE = "weights.csv"
#: A multi-label model's test average precision per genre (CNN and fusion folders).
PER_LABEL_FIGURE = "per_label_ap.png"


def confusion_file(split: str) -> str:
    """A model folder's confusion matrix picture of one split: ``confusion_test.png``."""
    return f"confusion_{split}.png"
#: A CNN's folder: metrics per epoch, their curves, the saved weights, and its checkpoints
#: (``checkpoints/best.pt``, ``last.pt`` and ``last.json``, the record of their uploads).
METRICS_FILE = "metrics.csv"
CURVES_FILE = "curves.png"
WEIGHTS_FILE = "model.pt"
CHECKPOINTS = "checkpoints"
BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"
CHECKPOINT_FILES = (BEST_CHECKPOINT, LAST_CHECKPOINT)
CHECKPOINT_RECORD = "last.json"

JOB_FILE = "featurize.json"
FEATURES_DIR = "features"
SPECTROGRAMS_DIR = "spectrograms"
INDEX_DIR = "spectrograms/index"
ERRORS_DIR = "errors"
MEL_PARAMS_FILE = "spectrograms/params.json"
RECORDS_DIR = "_partitions"
#: Both labels of every track the job selected (later stages read labels here, never tracks.csv).
LABELS_FILE = "labels.parquet"
#: The genre tree the labels refer to (FMA's genres.csv: id, title, parent, top-level root).
GENRES_FILE = "genres.parquet"
#: Folders the job writes part files into.
PART_DIRS = (FEATURES_DIR, SPECTROGRAMS_DIR, INDEX_DIR, ERRORS_DIR)
#: What the job can produce.
OUTPUTS = ("features", "spectrograms")
#: Partition numbers have five digits in file names.
MAX_PARTITIONS = 100_000



def errors_schema() -> pa.Schema:
    """Schema of an errors part: one row per failed step of a track."""
    import pyarrow as pa

    return pa.schema([("track_id", pa.int64()), ("stage", pa.string()),
                      ("error_type", pa.string()), ("message", pa.string())])


def index_schema() -> pa.Schema:
    """Schema of a spectrogram index part: where each track's log-mel is in its shard."""
    import pyarrow as pa

    return pa.schema([("track_id", pa.int64()), ("shard", pa.string()), ("row", pa.int64()),
                      ("frames", pa.int64()), ("genre_top", pa.string()),
                      ("split", pa.string())])


def features_schema() -> pa.Schema:
    """Schema of a features part: ``track_id``, ``split``, ``genre_top``, then FEATURE_COLUMNS."""
    import pyarrow as pa

    from fmadask.features import FEATURE_COLUMNS

    return pa.schema([("track_id", pa.int64()), ("split", pa.string()), ("genre_top", pa.string())]
                     + [(name, pa.float32()) for name in FEATURE_COLUMNS])


def part_name(partition: int, suffix: str) -> str:
    """``part-00042.parquet`` for ``part_name(42, 'parquet')``."""
    return f"part-{partition:05d}.{suffix}"


@dataclass(frozen=True)
class PartitionFiles:
    """The files of one partition in a run directory (a local path or a URL)."""

    run_dir: str | Path
    partition: int
    storage_options: Mapping[str, Any] | None = None

    def _file(self, folder: str, suffix: str) -> str | Path:
        return storage.join(self.run_dir, *folder.split("/"), part_name(self.partition, suffix))

    @property
    def features(self) -> str | Path:
        return self._file(FEATURES_DIR, "parquet")

    @property
    def spectrograms(self) -> str | Path:
        return self._file(SPECTROGRAMS_DIR, "npy")

    @property
    def index(self) -> str | Path:
        return self._file(INDEX_DIR, "parquet")

    @property
    def errors(self) -> str | Path:
        return self._file(ERRORS_DIR, "parquet")

    @property
    def record(self) -> str | Path:
        """The completion record, written after every other file of the partition."""
        return self._file(RECORDS_DIR, "json")

    def outputs(self, what: Sequence[str]) -> list[str | Path]:
        """The files a complete partition has, for the outputs ``what``; errors file last."""
        paths = []
        if "features" in what:
            paths.append(self.features)
        if "spectrograms" in what:
            paths += [self.spectrograms, self.index]
        return paths + [self.errors]

    def name(self, path: str | Path) -> str:
        """``path``'s name relative to the run directory, as a completion record lists it."""
        if storage.is_url(self.run_dir):
            return str(path)[len(str(self.run_dir).rstrip("/")) + 1:]
        return str(Path(path).relative_to(self.run_dir))

    def write_record(self, what: Sequence[str], counts: Mapping[str, Any] | None = None) -> None:
        """Record size and SHA-256 of the partition's files: the partition is now complete.

        ``counts`` (``features`` and ``spectrograms`` rows, ``failed`` tracks and
        ``failed_by_type``) go into the record too, so that a run's summary needs no data file.
        A local run directory only: a partition for a URL is written in a local folder and
        then published by :meth:`publish`."""
        from fmadask.atomic import write_json

        # With each file's tag (its times): a resume that finds the same tag need not hash it.
        files = {self.name(p): {**file_digest(p), "etag": storage.entry(p)["etag"]}
                 for p in self.outputs(what)}
        record: dict[str, Any] = {"partition": self.partition, "files": files}
        if counts is not None:
            record["counts"] = dict(counts)
        write_json(record, self.record)

    def publish(self, staged: PartitionFiles, what: Sequence[str]) -> None:
        """Upload a partition written (and recorded) in a local folder to this URL run dir.

        Each file goes up whole (an object appears only once all of it is stored), and the
        completion record last, so the partition counts as complete only when every file is
        there with the size and checksum it records. The record also keeps the entity tag the
        store gave each object: a resume finds an unchanged object by its tag in a listing,
        without reading it (:func:`complete_partitions`).
        """
        record = json.loads(Path(staged.record).read_bytes())
        for local, remote in zip(staged.outputs(what), self.outputs(what)):
            storage.put_file(local, remote, self.storage_options)
            # The store's tag replaces the staged file's (None when the store gives none).
            record["files"][self.name(remote)]["etag"] = storage.entry(
                remote, self.storage_options)["etag"]
        write_json(record, self.record, self.storage_options)

    def complete(self, what: Sequence[str], checksums: bool = False) -> bool:
        """True when the completion record exists and every file matches it.

        Parameters
        ----------
        what : sequence of str
            The outputs the partition must have.
        checksums : bool
            Also compare SHA-256 digests of the files whose tag is not the one recorded (reads
            their bytes); by default sizes only.
        """
        # (read as complete_records reads every record: missing or, on disk, unreadable is
        # None; a store that cannot be reached raises, never looks like "redo it all")
        [content] = storage.read_many([self.record], self.storage_options)
        return self.check_record(content, what, checksums) is not None

    def check_record(self, content: bytes | None, what: Sequence[str], checksums: bool = False,
                     listed: Mapping[str, Mapping[str, Any]] | None = None) -> dict | None:
        """The completion record ``content`` (as read, None when there is none) parsed, when
        every file of the partition matches it, else None.

        Parameters
        ----------
        what, checksums
            See :meth:`complete`.
        listed : mapping, optional
            What one listing of the run folder says of its files (:func:`_listing`): sizes and
            tags come from it instead of a request per file. With ``checksums`` a file whose
            tag is the one recorded is not read (only a changed one is), listed or not.
        """
        url = storage.is_url(self.run_dir)
        try:
            record = json.loads(content)
            recorded = record["files"]
        except (ValueError, KeyError, TypeError):
            return None
        expected = [self.name(p) for p in self.outputs(what)]
        if not isinstance(recorded, dict) or sorted(recorded) != sorted(expected):
            return None
        for name, want in recorded.items():
            path = storage.join(self.run_dir, *name.split("/"))
            try:
                found = (listed.get(name) if listed is not None else
                         storage.entry(path, self.storage_options))
                if found is None or found["size"] != want["size"]:
                    return None
                unchanged = found["etag"] is not None and found["etag"] == want.get("etag")
                if checksums and not unchanged and \
                        storage.digest(path, self.storage_options)["sha256"] != want["sha256"]:
                    return None
            except (FileNotFoundError, IsADirectoryError, KeyError, TypeError, AttributeError):
                return None
            except OSError:
                if url:
                    raise
                return None
        return record


def read_job(run_dir: str | Path, storage_options: Options = None) -> dict:
    """The parsed ``RUN_DIR/featurize.json``; :class:`DataError` when there is none."""
    path = storage.join(run_dir, JOB_FILE)
    if not storage.isfile(path, storage_options):
        raise DataError(f"{storage.redact(path)} not found: run 'fmadask featurize DATA_DIR --out "
                        f"{storage.redact(run_dir)}' first")
    job = _read_json(path, storage_options)
    try:
        job["params"]["what"], job["plan"]["partitions"]
    except (KeyError, TypeError):
        raise DataError(f"{path} is damaged (no params/plan): featurize again with "
                        "overwrite") from None
    return job


def _read_json(path: str | Path, storage_options: Options = None) -> dict:
    """A JSON object fmadask wrote, or a one-line DataError when it is damaged."""
    try:
        value = json.loads(storage.read_bytes(path, storage_options).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is damaged ({type(exc).__name__}): featurize again with "
                        "overwrite") from None
    if not isinstance(value, dict):
        raise DataError(f"{path} is damaged (not a JSON object): featurize again with overwrite")
    return value


def _listing(run_dir: str, storage_options: Options = None) -> dict[str, dict]:
    """Size and entity tag of every part file and completion record of a URL run folder, by
    name relative to it: one listing of each folder, no object read."""
    found = {}
    for folder in (*PART_DIRS, RECORDS_DIR):
        listed = storage.list_files(storage.join(run_dir, *folder.split("/")), storage_options)
        found.update({f"{folder}/{name}": entry for name, entry in listed.items()})
    return found


def complete_records(run_dir: str | Path, job: dict | None = None, checksums: bool = False,
                     storage_options: Options = None) -> dict[int, dict]:
    """The completion records of the partitions of a run whose files match them, by partition.

    ``checksums`` also compares SHA-256 digests (in a few threads: hashing releases the GIL),
    of changed files only: a file whose tag is the one its record keeps (a bucket's entity tag,
    a local file's times) is unchanged, so only changed files (or those recorded without a
    tag, by an older fmadask) are read or downloaded to be hashed. In a bucket, sizes and tags
    come from one listing of each folder and the records from one concurrent read.
    """
    url = storage.is_url(run_dir)
    run_dir = run_dir if url else Path(run_dir)
    job = job or read_job(run_dir, storage_options)
    what = job["params"]["what"]
    parts = [PartitionFiles(run_dir, p, storage_options)
             for p in range(job["plan"]["partitions"])]
    listed = _listing(str(run_dir), storage_options) if url else None
    if listed is not None:    # a record the listing lacks was never finished: nothing to read
        parts = [f for f in parts if f.name(f.record) in listed]
    # Every record in one concurrent read: one after the other, a bucket's round trips made a
    # minute of the resume check at FMA-large size.
    contents = storage.read_many([f.record for f in parts], storage_options)
    with ThreadPoolExecutor(max_workers=4 if checksums else 1) as pool:
        records = list(pool.map(lambda f, c: f.check_record(c, what, checksums, listed),
                                parts, contents))
    return {f.partition: r for f, r in zip(parts, records) if r is not None}


def complete_partitions(run_dir: str | Path, job: dict | None = None,
                        checksums: bool = False, storage_options: Options = None) -> list[int]:
    """Numbers of the partitions of a run whose files match their completion records (sorted;
    see :func:`complete_records`)."""
    return sorted(complete_records(run_dir, job, checksums, storage_options))


def _complete_files(run_dir: str | Path, kind: str, allow_partial: bool,
                    storage_options: Options = None) -> list[str | Path]:
    run_dir = run_dir if storage.is_url(run_dir) else Path(run_dir)
    job = read_job(run_dir, storage_options)
    output = "features" if kind == "features" else "spectrograms"
    if kind != "errors" and output not in job["params"]["what"]:
        raise DataError(f"{run_dir} has no {output}: featurize again with {output} in "
                        f"{setting('featurize.what')} and {setting('output.overwrite')} set")
    done = complete_partitions(run_dir, job, storage_options=storage_options)
    total = job["plan"]["partitions"]
    if len(done) < total and not allow_partial:
        raise DataError(f"{run_dir}: {total - len(done)} of {total} partitions are not featurized "
                        f"yet: re-run the same 'fmadask featurize' command to finish them")
    return [getattr(PartitionFiles(run_dir, p), kind) for p in done]


def parquet_source(path: str | Path, storage_options: Options = None) -> Any:
    """What pyarrow reads: a local path, or an object's bytes (parts are small, read whole)."""
    if storage.is_url(path):
        return io.BytesIO(storage.read_bytes(path, storage_options))
    return path


def _read_part(path: str | Path, schema: pa.Schema, storage_options: Options = None) -> pa.Table:
    """One part file of a complete partition, or a one-line DataError naming it when it cannot
    be read (damaged since its completion record was written: a featurize re-run, which
    compares every file with its record's checksum, redoes its partition)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(parquet_source(path, storage_options), schema=schema)
    except (pa.ArrowException, OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        record = f"{RECORDS_DIR}/{storage.name(path).rsplit('.', 1)[0]}.json"
        raise DataError(f"{storage.redact(path)} is damaged ({type(exc).__name__}: {reason}): "
                        "re-run the 'fmadask featurize' command that wrote it, which redoes the "
                        "partition of a file that does not match its record (or delete "
                        f"{record} in the run folder, then re-run it)") from None


def read_parts(files: list[str | Path], schema: pa.Schema, storage_options: Options = None
                ) -> pd.DataFrame:
    import pyarrow as pa

    tables = [_read_part(f, schema, storage_options) for f in files]
    return (pa.concat_tables(tables) if tables else schema.empty_table()).to_pandas()


def read_features(run_dir: str | Path, allow_partial: bool = False,
                  storage_options: Options = None) -> pd.DataFrame:
    """The features of a run: one row per featurized track.

    Parameters
    ----------
    run_dir : str or Path
        A run directory written by :func:`fmadask.pipeline.run_featurize`.
    allow_partial : bool
        Read the complete partitions of an unfinished run instead of raising.
    storage_options : mapping, optional
        fsspec options when ``run_dir`` is a URL.

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
    df = read_parts(_complete_files(run_dir, "features", allow_partial, storage_options),
                     features_schema(), storage_options)
    return df.set_index("track_id").sort_index()


def read_errors(run_dir: str | Path, allow_partial: bool = False,
                storage_options: Options = None) -> pd.DataFrame:
    """The tracks a run could not process: one row per track and failed stage.

    Returns
    -------
    pandas.DataFrame
        Columns ``track_id`` (int64), ``stage`` ('decode', 'features' or 'spectrogram'),
        ``error_type`` (e.g. 'empty', 'too_short', 'truncated' or an exception class name) and
        ``message``, sorted by track id (default RangeIndex).
    """
    df = read_parts(_complete_files(run_dir, "errors", allow_partial, storage_options),
                     errors_schema(), storage_options)
    return df.sort_values(["track_id", "stage"], kind="stable").reset_index(drop=True)


def read_spectrogram_index(run_dir: str | Path, allow_partial: bool = False,
                           storage_options: Options = None) -> pd.DataFrame:
    """Where each track's log-mel spectrogram is stored.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``track_id`` (sorted); columns ``shard`` (file name in
        ``RUN_DIR/spectrograms/``), ``row`` (first axis of that shard), ``frames`` (valid,
        unpadded frames), ``genre_top``, ``split``. Open a shard with
        ``numpy.load(RUN_DIR / 'spectrograms' / shard, mmap_mode='r')``.
    """
    df = read_parts(_complete_files(run_dir, "index", allow_partial, storage_options),
                     index_schema(), storage_options)
    return df.set_index("track_id").sort_index()


def read_mel_params(run_dir: str | Path, storage_options: Options = None) -> dict:
    """``RUN_DIR/spectrograms/params.json``: the mel parameters the shards were made with."""
    path = storage.join(run_dir, *MEL_PARAMS_FILE.split("/"))
    if not storage.isfile(path, storage_options):
        raise DataError(f"{storage.redact(path)} not found: featurize with spectrograms in "
                        f"{setting('featurize.what')} first")
    return _read_json(path, storage_options)


def write_json(obj: object, location: str | Path, storage_options: Options = None) -> None:
    """Write ``obj`` as indented JSON: atomically on disk, as one object for a URL."""
    if not storage.is_url(location):
        from fmadask.atomic import write_json as write_local

        write_local(obj, location)
        return
    text = storage.redact(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    storage.write_bytes(location, text.encode(), storage_options)


#: Names that make a folder an fmadask run folder (what ``featurize`` and ``run`` write first).
RUN_MARKERS = (JOB_FILE, SPEC_FILE, MARKER_DIR)


def foreign_entries(run_dir: str | Path, storage_options: Options = None) -> list[str]:
    """Names in ``run_dir`` when it is neither empty nor an fmadask run folder (sorted), else [].

    The run folder's lock file does not count: the caller holds it.
    """
    from fmadask.lock import LOCK_NAME

    names = [n for n in storage.listdir(run_dir, storage_options) if not n.startswith(LOCK_NAME)]
    if any(m in names for m in RUN_MARKERS):
        return []
    return names


def read_card(model_dir: str | Path) -> dict[str, Any]:
    """The parsed ``model.json`` of a saved model of any kind.

    Raises
    ------
    DataError
        No such folder or card.
    """
    path = Path(model_dir) / MODEL_CARD
    if not path.is_file():
        raise DataError(f"{path} not found: pass a model folder (RUN_DIR/classical/models/<name>, "
                        "RUN_DIR/cnn/<arch> or RUN_DIR/fusion)")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise DataError(f"{path} is not valid JSON ({type(exc).__name__}): train the model "
                        "again") from None
    if not isinstance(card, dict) or "kind" not in card:
        raise DataError(f"{path} does not say its kind: train the model again")
    check_card(card, path)
    return card


def _card_rules() -> dict[str, dict[str, Option]]:
    """What each value of a model card may be, by kind and dotted key, with the options' rules
    (:class:`fmadask.options.Option`: type, range, finiteness, choices)."""
    def rule(key: str, kind: type, **rules: Any) -> Option:
        # A card has no defaults: a value present must be valid; None only where nullable.
        return Option(key, kind, default="no default", **rules)

    name = {"expected_text": "a file name inside the model folder"}
    mel = {f"mel_params.{k}": rule(k, int, minimum=1, maximum=2**20)
           for k in ("n_fft", "hop_length", "n_mels")}
    return {
        "classical": {
            "format": rule("format", int, minimum=1, maximum=1000),
            "feature_columns": rule("feature_columns", list),
            "outputs": rule("outputs", str, choices=("probability", "softmax", "sigmoid")),
            "target": rule("target", str, choices=TARGETS),
            "features.sr": rule("sr", int, minimum=1000, maximum=192_000, nullable=True,
                                words=("native",)),
            "features.fma_compat": rule("fma_compat", bool, nullable=True),
            "features.max_seconds": rule("max_seconds", float, minimum=1.0, nullable=True,
                                         words=("none",)),
        },
        "cnn": {
            "target": rule("target", str, choices=TARGETS),
            "arch": rule("arch", str, choices=ARCHS),
            "width": rule("width", int, minimum=1, maximum=4096, nullable=True),
            "n_mels": rule("n_mels", int, minimum=1, maximum=2**20),
            "segment_frames": rule("segment_frames", int, minimum=1, maximum=2**31),
            "norm.mean": rule("mean", float),
            "norm.std": rule("std", float, minimum=1e-12),
            "decode_sr": rule("decode_sr", int, minimum=1000, maximum=192_000, nullable=True,
                              words=("native",)),
            "mel_params.sr": rule("sr", int, minimum=1000, maximum=192_000),
            "mel_params.fmin": rule("fmin", float, minimum=0.0),
            "mel_params.fmax": rule("fmax", float, minimum=0.0, nullable=True),
            "mel_params.seconds": rule("seconds", float, minimum=1e-3, maximum=7 * 24 * 3600.0),
            "mel_params.top_db": rule("top_db", float, minimum=1e-3, maximum=1e4),
            **mel,
        },
        "fusion": {
            "target": rule("target", str, choices=TARGETS),
            "weights.classical": rule("classical", float, minimum=0.0, maximum=1.0),
            "weights.cnn": rule("cnn", float, minimum=0.0, maximum=1.0),
            "parts.classical": rule("classical", str, **name),
            "parts.cnn": rule("cnn", str, **name),
        },
    }


def check_card(card: Mapping[str, Any], path: str | Path) -> None:
    """Refuse, in one line, a model card whose values the loaders could not use.

    Each value present is checked as an option is (type, range, finiteness, choices); ``classes``
    must be a non-empty list of distinct names and a file name must be text without NUL bytes.
    Which keys a kind requires is left to its loader (it names what is missing), and so is a
    kind fmadask does not know.

    Raises
    ------
    DataError
        Naming the card, the key and what it must be.
    """
    def refuse(what: str) -> DataError:
        again = "re-run 'fmadask fuse'" if card["kind"] == "fusion" else "train the model again"
        return DataError(f"{path}: {what}: the card is damaged; {again}")

    rules = _card_rules()
    if card["kind"] not in rules:       # the caller names the kinds it knows
        return
    classes = card.get("classes")
    if "classes" in card and (not isinstance(classes, list) or not classes or
                              not all(isinstance(c, str) and c for c in classes) or
                              len(set(classes)) != len(classes)):
        raise refuse(f"classes must be a list of distinct genre names, not {classes!r}")
    for key, rule in rules[card["kind"]].items():
        *parents, last = key.split(".")
        table: Any = card
        for depth, parent in enumerate(parents):
            table = table.get(parent)
            if table is None:
                break
            if not isinstance(table, dict):
                raise refuse(f"{'.'.join(parents[:depth + 1])} must be a table of values, "
                             f"not {table!r}")
        if table is None or last not in table:
            continue
        if isinstance(table[last], str) and "\x00" in table[last]:
            raise refuse(f"{key} holds a NUL byte")
        try:
            rule.check(table[last])
        except OptionError as exc:
            raise refuse(str(exc.named(key))) from None
    if card.get("target") == "genres_all":
        problem = _multilabel_card_problem(card)
        if problem:
            raise refuse(problem)
    files = card.get("files")
    for role, entry in files.items() if isinstance(files, dict) else ():
        # (an entry of another layout is the loader's to refuse: "written by an older fmadask")
        name = entry.get("name", "") if isinstance(entry, dict) else ""
        if not isinstance(name, str) or "\x00" in name:
            raise refuse(f"files.{role}.name {name!r} is not a name inside the model folder")


def _multilabel_card_problem(card: Mapping[str, Any]) -> str | None:
    """What makes a ``genres_all`` card unusable for prediction, or None: every kind needs a
    genre id and a threshold per class and the genre tree (``card_genres``' inputs)."""
    import math

    n = len(card.get("classes") or [])
    ids, thresholds, parents = (card.get(k) for k in ("label_ids", "thresholds", "parents"))
    if not (isinstance(ids, list) and len(ids) == n and len(set(map(repr, ids))) == n
            and all(isinstance(g, int) and not isinstance(g, bool) for g in ids)):
        return f"label_ids must be a distinct genre id per class ({n} classes)"
    if not (isinstance(thresholds, list) and len(thresholds) == n
            and all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
                    for t in thresholds)):
        return f"thresholds must be a finite number per class ({n} classes)"
    if not (isinstance(parents, dict) and all(
            isinstance(g, str) and g.isdigit() and isinstance(v, int) and not isinstance(v, bool)
            for g, v in parents.items())):
        return "parents must map each genre id to its parent's id (the genre tree)"
    return None
