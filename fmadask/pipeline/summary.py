"""The summary of a featurize run folder: tracks, failures by type, features and spectrograms,
counted from the partitions' completion records (:func:`summarize`), and its printed form."""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from fmadask import storage
from fmadask.pipeline.partition import partition_counts
from fmadask.runfolder import (OUTPUTS, PartitionFiles, complete_records, parquet_source,
                               read_job)



def _recorded_counts(record: Mapping[str, Any], what: Sequence[str]) -> dict | None:
    """The counts a completion record keeps, or None (a record of an older fmadask)."""
    counts = record.get("counts")
    try:
        numbers = [counts["failed"], *counts["failed_by_type"].values(),
                   *(counts[o] for o in OUTPUTS if o in what)]
    except (KeyError, TypeError, AttributeError):
        return None
    return counts if all(isinstance(n, int) for n in numbers) else None


def _counts_from_files(files: PartitionFiles, what: Sequence[str],
                       storage_options: Mapping[str, Any] | None = None) -> dict:
    """:func:`partition_counts` of a complete partition, read from its files."""
    import pyarrow.parquet as pq

    def rows(path: str | Path) -> int:
        return pq.read_metadata(parquet_source(path, storage_options)).num_rows

    errors = pq.read_table(parquet_source(files.errors, storage_options),
                           columns=["track_id", "error_type"]).to_pydict()
    return partition_counts(rows(files.features) if "features" in what else None,
                            rows(files.index) if "spectrograms" in what else None,
                            zip(errors["track_id"], errors["error_type"]))


def summarize(run_dir: str | Path, storage_options: Mapping[str, Any] | None = None,
              records: Mapping[int, Mapping[str, Any]] | None = None) -> dict:
    """Count what a run directory holds: tracks, failures by type, features and spectrograms.

    ``records``: the completion records of its complete partitions, by partition, when the
    caller has just read them (:func:`~fmadask.runfolder.complete_records`, nothing written
    since); else they are read.

    Returns
    -------
    dict
        ``tracks`` (selected), ``ok`` (no error), ``failed`` (tracks with an errors row),
        ``pending`` (tracks of partitions not complete yet),
        ``failed_by_type`` ({error_type: tracks}), ``features`` and ``spectrograms`` (rows
        written), ``partitions`` and ``partitions_complete``.
    """
    run_dir = run_dir if storage.is_url(run_dir) else Path(run_dir)
    job = read_job(run_dir, storage_options)
    what = job["params"]["what"]
    # Counted from the completion records: a summary reads no data file (in a bucket, a
    # resume's summary would otherwise download part of every complete partition).
    if records is None:
        records = complete_records(run_dir, job, storage_options=storage_options)
    done = sorted(records)
    counts = [_recorded_counts(records[p], what)
              or _counts_from_files(PartitionFiles(run_dir, p), what, storage_options)
              for p in done]
    by_type: dict[str, int] = {}
    for c in counts:
        for error_type, n in c["failed_by_type"].items():
            by_type[error_type] = by_type.get(error_type, 0) + n
    failed = sum(c["failed"] for c in counts)
    tracks, size = job["plan"]["tracks"], job["params"]["partition_size"]
    finished = sum(min(size, tracks - p * size) for p in done)
    return {
        "tracks": tracks,
        "ok": finished - failed,
        "failed": failed,
        "pending": tracks - finished,
        "failed_by_type": dict(sorted(by_type.items())),
        "features": sum(c["features"] for c in counts) if "features" in what else None,
        "spectrograms": (sum(c["spectrograms"] for c in counts)
                         if "spectrograms" in what else None),
        "partitions": job["plan"]["partitions"],
        "partitions_complete": len(done),
    }


def print_summary(summary: dict, file: IO[str] | None = None) -> None:
    """Print a run's summary in a few lines (see :func:`run_featurize` for its keys)."""
    file = file or sys.stdout
    failed = ", ".join(f"{k} {v}" for k, v in summary["failed_by_type"].items())
    rate = (f"{summary['tracks_per_s']:.2f} tracks/s" if summary.get("tracks_per_s")
            else "nothing to do")
    print(f"featurized {summary['tracks']} tracks in {summary['partitions']} partitions "
          f"({summary.get('partitions_run', 0)} run, {summary.get('partitions_skipped', 0)} "
          f"already complete)", file=file)
    print(f"  ok {summary['ok']}, failed {summary['failed']}" + (f" ({failed})" if failed else "")
          + (f", not done yet {summary['pending']}" if summary.get("pending") else ""), file=file)
    if summary.get("tracks_run"):
        print(f"  {summary['tracks_run']} tracks in {summary['seconds']:.1f} s on "
              f"{summary['workers']} worker(s): {rate} (warm-up {summary['warm_up_s']:.1f} s, "
              "not counted)", file=file)
