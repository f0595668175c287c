"""The featurize job on the generated sample through a real local Dask cluster of 2 processes.

Every run here goes through real mp3 decoding, the real feature functions, real worker processes
and real Parquet/npy files. Runs are compared with a clean run byte for byte: a killed worker, a
killed client or deleted outputs must not change a single file once the job has finished.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fmadask.cli import main
from fmadask.cluster import workers_info
from fmadask.errors import ConfigError, DataError
from fmadask.features import FEATURE_COLUMNS, MelParams, to_fma_columns
from fmadask.fma.metadata import load_features
from fmadask.fma.tracks import track_table
from fmadask.pipeline import DEFAULT_MAX_SECONDS, DEFAULT_PARTITION_SIZE, run_featurize
from fmadask.pipeline.featurize import (MIB_PER_AUDIO_SECOND, FeaturizeConfig,
                                        _check_worker_memory, worker_memory_needed)
from fmadask.pipeline.partition import JobParams, Track, featurize_partition
from fmadask.atomic import NpyShard, atomic_path
from fmadask.runfolder import (PART_DIRS, PartitionFiles, read_errors, read_features, read_job,
                               read_mel_params, read_spectrogram_index)
from lock_holder import held_lock

#: Tracks per partition in these tests: 31 sample tracks -> 11 partitions, several with defects.
PART = 3


def _run(sample_dir: Path, out: Path, client, **kwargs) -> dict:
    kwargs.setdefault("partition_size", PART)
    return run_featurize(sample_dir, out=out, config=FeaturizeConfig(**kwargs), client=client,
                         progress=False)


def _part_files(run_dir: Path) -> dict[str, bytes]:
    """Every visible part file of a run, by relative path, with its bytes."""
    return {str(p.relative_to(run_dir)): p.read_bytes()
            for folder in PART_DIRS for p in sorted((run_dir / folder).glob("part-*"))}


def _temp_files(run_dir: Path) -> list[Path]:
    return [p for folder in PART_DIRS if (run_dir / folder).is_dir()
            for p in (run_dir / folder).iterdir() if p.name.startswith(".")]


def _spectrograms(run_dir: Path) -> dict[int, np.ndarray]:
    index = read_spectrogram_index(run_dir)
    return {tid: np.load(run_dir / "spectrograms" / row.shard, mmap_mode="r")[row.row]
            for tid, row in index.iterrows()}


def assert_same_output(run_dir: Path, clean: Path) -> None:
    """Same tables, same arrays and the same bytes in every part file as the clean run."""
    pd.testing.assert_frame_equal(read_features(run_dir), read_features(clean), check_exact=True)
    pd.testing.assert_frame_equal(read_errors(run_dir), read_errors(clean), check_exact=True)
    pd.testing.assert_frame_equal(read_spectrogram_index(run_dir),
                                  read_spectrogram_index(clean), check_exact=True)
    ours, theirs = _spectrograms(run_dir), _spectrograms(clean)
    assert ours.keys() == theirs.keys()
    for tid in ours:
        np.testing.assert_array_equal(ours[tid], theirs[tid])
    ours_files, clean_files = _part_files(run_dir), _part_files(clean)
    assert ours_files.keys() == clean_files.keys()
    assert [name for name in ours_files if ours_files[name] != clean_files[name]] == []


@pytest.fixture(scope="module")
def clean_run(sample_dir: Path, local_client, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run of the job over the sample: the reference for the other tests."""
    out = tmp_path_factory.mktemp("clean") / "run"
    _run(sample_dir, out, local_client)
    return out


@pytest.fixture(scope="module")
def defects(sample_dir: Path) -> dict[int, set[str]]:
    """The sample's defective clips and the error types each may get.

    Found by file size, not by the sample's generation order: the three smallest files hold no
    audio, the next three are clips under a second, the seventh is a clip cut at half its bytes.
    """
    paths = track_table(sample_dir)["path"]
    sizes = paths.map(lambda p: Path(p).stat().st_size).sort_values()
    kinds = [{"empty"}] * 3 + [{"too_short"}] * 3 + [{"truncated", "unreadable"}]
    return dict(zip(sizes.index[:7].tolist(), kinds))


# --------------------------------------------------------------------------- outputs of a run


def test_every_good_track_has_one_features_row_and_one_spectrogram(clean_run, sample_dir,
                                                                   defects):
    table = track_table(sample_dir)
    good = table.index.difference(list(defects))
    features = read_features(clean_run)
    assert features.index.tolist() == good.tolist()            # sorted, one row each
    assert features.index.dtype == np.int64
    assert list(features.columns) == ["split", "genre_top"] + FEATURE_COLUMNS
    assert (features[FEATURE_COLUMNS].dtypes == np.float32).all()
    assert np.isfinite(features[FEATURE_COLUMNS].to_numpy()).all()
    pd.testing.assert_frame_equal(features[["split", "genre_top"]],
                                  table.loc[good, ["split", "genre_top"]], check_dtype=False)

    index = read_spectrogram_index(clean_run)
    assert index.index.tolist() == good.tolist()
    params = read_mel_params(clean_run)
    mel = MelParams()
    assert (params["n_mels"], params["frames"]) == (mel.n_mels, mel.frames)
    for shard, rows in index.groupby("shard"):
        array = np.load(clean_run / "spectrograms" / shard, mmap_mode="r")
        assert array.dtype == np.float16 and array.shape == (len(rows), mel.n_mels, mel.frames)
        assert sorted(rows["row"]) == list(range(len(rows)))
    # 5 s clips: valid frames are those of 5 s, the rest of the 30 s is padding.
    assert index["frames"].between(1, mel.frames - 1).all()
    for tid, spec in _spectrograms(clean_run).items():
        valid = np.asarray(spec[:, :index.at[tid, "frames"]], dtype=np.float32)
        assert np.isfinite(valid).all() and valid.std() > 0, tid


def test_every_defective_clip_has_an_errors_row_and_is_counted(clean_run, defects):
    errors = read_errors(clean_run).set_index("track_id")
    assert sorted(errors.index) == sorted(defects)
    for tid, kinds in defects.items():
        assert errors.at[tid, "stage"] == "decode"
        assert errors.at[tid, "error_type"] in kinds, (tid, errors.loc[tid].to_dict())
        assert errors.at[tid, "message"] and "\n" not in errors.at[tid, "message"]
    summary = read_job(clean_run)["summary"]
    assert (summary["tracks"], summary["ok"], summary["failed"]) == (31, 24, 7)
    assert summary["failed_by_type"]["empty"] == 3
    assert summary["failed_by_type"]["too_short"] == 3
    assert sum(summary["failed_by_type"].values()) == 7
    assert summary["partitions"] == summary["partitions_run"] == 11
    assert summary["tracks_per_s"] > 0 and summary["workers"] == 2


def test_job_records_parameters_plan_and_decoder(clean_run, sample_dir):
    job = read_job(clean_run)
    assert job["params"]["partition_size"] == PART and job["params"]["sr"] is None
    ids = track_table(sample_dir).index
    assert job["plan"]["first_track_ids"] == ids[::PART].tolist()
    assert job["decoders"] and all(job["decoders"])
    assert job["versions"]["librosa"]


def test_parquet_reads_back_with_pandas_pyarrow_and_dask(clean_run):
    features = read_features(clean_run)
    # A temporary file of a dead writer must be invisible to every reader.
    stale = clean_run / "features" / ".part-00001.parquet.0123456789ab.tmp"
    stale.write_bytes(b"PAR1 half a file")
    try:
        by_pandas = pd.read_parquet(clean_run / "features").set_index("track_id").sort_index()
        by_arrow = pq.read_table(clean_run / "features").to_pandas().set_index("track_id")
        by_dask = dd.read_parquet(clean_run / "features").compute().set_index("track_id")
        # dask's own string dtype has pd.NA for missing values; the strings are the same.
        by_dask = by_dask.astype({"split": "str", "genre_top": "str"})
    finally:
        stale.unlink()
    for table in (by_pandas, by_arrow.sort_index(), by_dask.sort_index()):
        pd.testing.assert_frame_equal(table, features, check_exact=True)
    errors = dd.read_parquet(clean_run / "errors").compute()
    assert list(errors.columns) == ["track_id", "stage", "error_type", "message"]
    assert len(errors) == 7
    index = pd.read_parquet(clean_run / "spectrograms" / "index")
    assert list(index.columns) == ["track_id", "shard", "row", "frames", "genre_top", "split"]


def test_fma_multiindex_view_has_the_layout_of_fma_features_csv(clean_run, tmp_path):
    features = read_features(clean_run)[FEATURE_COLUMNS]
    view = to_fma_columns(features)
    # FMA's features.csv columns, from FMA's recipe: every (feature, statistic, number) of the
    # eleven features and seven statistics, sorted.
    sizes = dict(chroma_cens=12, chroma_cqt=12, chroma_stft=12, mfcc=20, rmse=1,
                 spectral_bandwidth=1, spectral_centroid=1, spectral_contrast=7,
                 spectral_rolloff=1, tonnetz=6, zcr=1)
    stats = ("kurtosis", "max", "mean", "median", "min", "skew", "std")
    expected = pd.MultiIndex.from_tuples(
        sorted((f, s, f"{i:02d}")
               for f, n in sizes.items() for s in stats for i in range(1, n + 1)),
        names=["feature", "statistics", "number"])
    assert view.columns.equals(expected) and view.columns.names == expected.names
    assert view.index.name == "track_id"
    # Written as FMA writes features.csv, it loads with the loader of FMA's file unchanged.
    folder = tmp_path / "fma_metadata"
    folder.mkdir()
    view.to_csv(folder / "features.csv")
    loaded = load_features(tmp_path)
    assert loaded.columns.equals(expected)
    np.testing.assert_array_equal(loaded.to_numpy(), view.to_numpy())
    assert loaded.index.tolist() == view.index.tolist()


def test_workers_are_warmed_once_before_the_timed_work(clean_run, local_client):
    def warmed() -> int:
        from fmadask.pipeline import partition

        return len(partition._warmed)

    assert all(n >= 1 for n in local_client.run(warmed).values())
    assert read_job(clean_run)["summary"]["warm_up_s"] >= 0


# ------------------------------------------------------------------ failures and resumption


def test_worker_sigkilled_mid_job_does_not_change_the_output(sample_dir, local_client, clean_run,
                                                              tmp_path):
    out = tmp_path / "run"
    local_client.wait_for_workers(2)
    pids = local_client.run(os.getpid)
    outcome: dict = {}

    def job() -> None:
        try:
            outcome["summary"] = _run(sample_dir, out, local_client)
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    thread = threading.Thread(target=job)
    thread.start()
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        busy = [addr for addr, keys in local_client.processing().items() if keys and addr in pids]
        # Mid-job: a partition is complete and a worker is running another one.
        if busy and any((out / "errors").glob("part-*.parquet")):
            killed = pids[busy[0]]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.002)
    thread.join(600)
    assert killed is not None, "the job ended before a worker could be killed"
    assert "error" not in outcome, outcome.get("error")
    assert outcome["summary"]["failed"] == 7
    local_client.wait_for_workers(2, timeout=120)
    assert killed not in local_client.run(os.getpid).values()   # the nanny started a new one
    assert_same_output(out, clean_run)
    # Whatever the dead worker left half-written is removed by the next run, which has nothing
    # else to do.
    again = _run(sample_dir, out, local_client)
    assert again["partitions_run"] == 0 and _temp_files(out) == []
    assert_same_output(out, clean_run)


def test_client_killed_mid_job_then_rerun_resumes(sample_dir, local_client, clean_run, tmp_path):
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        from fmadask.cluster import get_client
        from fmadask.pipeline import run_featurize
        from fmadask.pipeline.featurize import FeaturizeConfig
        with get_client(scheduler={local_client.scheduler.address!r}, quiet=True) as client:
            run_featurize({str(sample_dir)!r}, out={str(out)!r}, client=client,
                          config=FeaturizeConfig(partition_size={PART}), progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 300
    while not any((out / "errors").glob("part-*.parquet")) and time.monotonic() < deadline:
        assert proc.poll() is None, "the job process ended before it could be killed"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p: p.stat().st_mtime_ns for p in (out / "errors").glob("part-*.parquet")}
    assert 0 < len(done) < 11, "not interrupted mid-way"

    summary = _run(sample_dir, out, local_client)
    assert summary["partitions_skipped"] >= len(done)
    assert summary["partitions_run"] + summary["partitions_skipped"] == 11
    assert {p: p.stat().st_mtime_ns for p in done} == done       # complete ones not redone
    assert_same_output(out, clean_run)


def test_rerun_after_lost_outputs_redoes_only_incomplete_partitions(sample_dir, local_client,
                                                                    clean_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(clean_run, out)
    lost = {1: ["errors"], 4: ["features", "spectrograms", "index", "errors"], 7: ["spectrograms"]}
    for partition, kinds in lost.items():
        for kind in kinds:
            getattr(PartitionFiles(out, partition), kind).unlink()
    stale = out / "spectrograms" / ".part-00004.npy.0123456789ab.tmp"
    stale.write_bytes(b"\x93NUMPY half a shard")
    kept = {p: (p.stat().st_ino, p.stat().st_mtime_ns)
            for partition in set(range(11)) - set(lost)
            for p in PartitionFiles(out, partition).outputs(("features", "spectrograms"))}
    with pytest.raises(DataError, match="re-run"):
        read_features(out)
    assert len(read_features(out, allow_partial=True)) < 24

    summary = _run(sample_dir, out, local_client)
    assert (summary["partitions_run"], summary["partitions_skipped"]) == (3, 8)
    assert summary["tracks_run"] == 3 * PART
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept} == kept
    assert not stale.exists()
    assert_same_output(out, clean_run)


def test_complete_run_is_not_redone(sample_dir, clean_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(clean_run, out)
    before = _part_files(out)
    # No partition to run: no cluster is started (client=None would start one).
    summary = _run(sample_dir, out, None)
    assert (summary["partitions_run"], summary["partitions_skipped"]) == (0, 11)
    assert (summary["ok"], summary["failed"]) == (24, 7)
    assert _part_files(out) == before


def test_summary_counts_from_the_records_equal_those_read_from_the_files(clean_run, tmp_path):
    """A completion record counts its partition's rows and failed tracks, so a summary reads no
    data file; a record written before it did is counted from its files, with the same result."""
    from fmadask.pipeline.summary import summarize

    out = tmp_path / "run"
    shutil.copytree(clean_run, out)
    recorded = summarize(out)
    assert (recorded["features"], recorded["spectrograms"], recorded["failed"]) == (24, 24, 7)
    for path in (out / "_partitions").glob("part-*.json"):
        record = json.loads(path.read_text())
        del record["counts"]
        path.write_text(json.dumps(record))
    assert summarize(out) == recorded


@pytest.mark.parametrize("change", [{"partition_size": PART + 1}, {"sr": 22050},
                                    {"what": ("features",)}, {"split": "stratified"}])
def test_rerun_with_other_parameters_is_refused(sample_dir, clean_run, change):
    kwargs = {"partition_size": PART, **change}
    with pytest.raises(ConfigError) as info:
        run_featurize(sample_dir, out=clean_run, config=FeaturizeConfig(**kwargs), progress=False)
    message = str(info.value)
    # The library names the setting, the CLI prints it as --overwrite, a spec as output.overwrite
    assert "\n" not in message and "set overwrite" in message
    assert info.value.key == "output.overwrite"
    assert "set --overwrite" in info.value.named("--overwrite").args[0]
    assert next(iter(change)) in message


def test_overwrite_starts_afresh_and_partitioning_does_not_change_numbers(
        sample_dir, local_client, clean_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(clean_run, out)
    summary = _run(sample_dir, out, local_client, partition_size=8, what=("features",),
                   overwrite=True)
    assert (summary["partitions"], summary["partitions_run"]) == (4, 4)
    assert not (out / "spectrograms").exists()
    pd.testing.assert_frame_equal(read_features(out), read_features(clean_run), check_exact=True)
    pd.testing.assert_frame_equal(read_errors(out), read_errors(clean_run), check_exact=True)


def test_tracks_longer_than_max_seconds_are_refused_with_a_record(sample_dir, local_client,
                                                                  defects, tmp_path):
    summary = _run(sample_dir, tmp_path / "run", local_client, what=("features",),
                   max_seconds=2.0)
    errors = read_errors(tmp_path / "run").set_index("track_id")
    good = track_table(sample_dir).index.difference(list(defects))
    assert (errors.loc[good, "error_type"] == "too_long").all()
    assert (errors.loc[good, "stage"] == "decode").all()
    assert len(read_features(tmp_path / "run")) == 0            # zero-row parts read back too
    assert summary["failed_by_type"]["too_long"] >= len(good)
    assert summary["ok"] == 0


def test_workers_with_too_little_memory_for_max_seconds_get_a_warning(local_client, caplog):
    workers = workers_info(local_client).values()
    limit = min(w["memory_limit"] for w in workers)
    # Seconds of audio whose estimated peak is over the workers' limit.
    too_long = 2 * limit / 2**20 / MIB_PER_AUDIO_SECOND
    assert worker_memory_needed(too_long) > limit
    logger = "fmadask.pipeline.featurize"
    with caplog.at_level(logging.WARNING, logger=logger):
        _check_worker_memory(local_client, "full", too_long)
    warned = [r.getMessage() for r in caplog.records if r.name == logger]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=logger):
        _check_worker_memory(local_client, "small", too_long)   # 30 s clips whatever the limit
    quiet = [r.getMessage() for r in caplog.records if r.name == logger]
    assert len(warned) == 1 and "lower --max-seconds" in warned[0] and "\n" not in warned[0]
    assert quiet == []


@pytest.mark.parametrize("kwargs, fragment", [
    ({"what": ("features", "mfcc")}, "unknown what 'mfcc'"),
    ({"partition_size": 0}, "partition_size must be at least 1"),
    ({"sr": 7.5}, "sr must be 'native' or a rate"),
    ({"max_seconds": -1}, "max_seconds must be at least 1"),
    ({"max_seconds": float("inf")}, "max_seconds must be a finite number"),
    ({"max_seconds": float("nan")}, "max_seconds must be a finite number")])
def test_invalid_options_are_one_line_config_errors(sample_dir, tmp_path, kwargs, fragment):
    # The library names its parameter; the command line names the flag (test below).
    with pytest.raises(ConfigError, match=fragment) as info:
        run_featurize(sample_dir, out=tmp_path / "run", config=FeaturizeConfig(**kwargs),
                      progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_reading_a_folder_without_a_run_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="fmadask featurize"):
        read_features(tmp_path)


# ------------------------------------------------------------------------------- command line


def test_cli_featurize_exits_0_with_a_summary_counting_bad_tracks(sample_dir, local_client,
                                                                   clean_run, tmp_path, capsys):
    out = tmp_path / "run"
    status = main(["featurize", str(sample_dir), "--out", str(out), "--partition-size", str(PART),
                   "--scheduler", local_client.scheduler.address])
    printed = capsys.readouterr().out
    assert status == 0
    assert "ok 24, failed 7" in printed
    assert "empty 3" in printed and "too_short 3" in printed
    assert_same_output(out, clean_run)


def test_cli_featurize_bad_option_is_one_line_and_status_2(sample_dir, tmp_path, capsys):
    status = main(["featurize", str(sample_dir), "--out", str(tmp_path / "run"),
                   "--what", "features,mfcc"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("fmadask: ") and err.count("\n") == 1 and "--what" in err


def test_cli_featurize_help_states_the_library_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["featurize", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default {DEFAULT_PARTITION_SIZE})" in text
    assert f"(default {DEFAULT_MAX_SECONDS:g};" in text


# ------------------------------------------------------------------------- the partition task


def test_partition_task_is_idempotent_and_records_bad_tracks(sample_dir, defects, tmp_path):
    table = track_table(sample_dir)
    picked = [int(table.index[0]), next(iter(defects))]     # one good clip, one defect
    tracks = [Track(5, tid, table.at[tid, "path"], table.at[tid, "genre_top"],
                    table.at[tid, "split"]) for tid in picked]
    job = JobParams(sr=None, what=("features", "spectrograms"), max_seconds=60.0, mel=MelParams())
    [first] = featurize_partition(tracks, str(tmp_path), job)
    files = PartitionFiles(tmp_path, 5)
    assert first == {**first, "partition": 5, "tracks": 2, "failed": 1, "skipped": False}
    assert files.complete(job.what) and _temp_files(tmp_path) == []
    assert pd.read_parquet(files.features)["track_id"].tolist() == picked[:1]
    assert np.load(files.spectrograms).shape[0] == 1                 # compacted to good rows
    assert pd.read_parquet(files.errors)["track_id"].tolist() == picked[1:]
    stamps = [p.stat().st_mtime_ns for p in files.outputs(job.what)]
    [second] = featurize_partition(tracks, str(tmp_path), job)
    assert second["skipped"] is True
    assert [p.stat().st_mtime_ns for p in files.outputs(job.what)] == stamps


def test_partition_task_refuses_a_bag_partition_mixing_partitions(tmp_path):
    tracks = [Track(0, 1, "a.mp3", "Rock", "training"), Track(1, 2, "b.mp3", "Rock", "training")]
    job = JobParams(sr=None, what=("features",), max_seconds=None)
    with pytest.raises(RuntimeError, match="partitions"):
        featurize_partition(tracks, str(tmp_path), job)


def test_npy_shard_keeps_only_written_rows_and_leaves_no_temp_file(tmp_path):
    rows = np.arange(4 * 2 * 3, dtype=np.float16).reshape(4, 2, 3)
    for n in (4, 2, 0):
        path = tmp_path / f"part-{n}.npy"
        shard = NpyShard(path, rows.shape, np.float16)
        for i in range(n):
            shard[i] = rows[i]
        shard.close(n)
        np.testing.assert_array_equal(np.load(path, mmap_mode="r"), rows[:n])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-0.npy", "part-2.npy", "part-4.npy"]


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "part-00000.parquet"
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise ValueError("disk full")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------- data safety (issue 9)


def test_damaged_outputs_are_redone_on_resume(sample_dir, local_client, clean_run, tmp_path):
    """A truncated Parquet, a shard with a flipped byte and a lost completion record are not
    'complete': the re-run redoes those partitions, and only those."""
    out = tmp_path / "run"
    shutil.copytree(clean_run, out)
    features = PartitionFiles(out, 2).features
    features.write_bytes(features.read_bytes()[:-100])                 # truncated
    shard = PartitionFiles(out, 5).spectrograms
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF                                                     # same size, other bytes
    shard.write_bytes(bytes(data))
    PartitionFiles(out, 8).record.unlink()                               # never finished
    with pytest.raises(DataError, match="re-run"):
        read_features(out)                                               # sizes are checked
    summary = _run(sample_dir, out, local_client)
    assert (summary["partitions_run"], summary["partitions_skipped"]) == (3, 8)
    assert_same_output(out, clean_run)


def test_a_local_resume_hashes_only_files_changed_since_their_record(sample_dir, local_client,
                                                                    clean_run, tmp_path):
    """The resume check of a complete local run reads no data file: each file's size and stamp
    (modification and change times) are those its completion record keeps. A file changed in
    place (same size), cut short, or changed with its modification time set back is redone; one
    only touched is hashed again and kept. Every file the client opens is seen by an audit hook."""
    out = tmp_path / "run"
    first = _run(sample_dir, out, local_client)
    opened: list[str] = []
    watching = [False]

    def watch(event: str, args: tuple) -> None:
        if watching[0] and event == "open" and isinstance(args[0], (str, os.PathLike)):
            opened.append(str(args[0]))

    sys.addaudithook(watch)

    def data_files_read(run) -> set[str]:
        watching[0] = True
        try:
            summary = _run(sample_dir, out, local_client)
        finally:
            watching[0] = False
        run.update(summary)
        parts = {str(p) for folder in PART_DIRS for p in (out / folder).glob("part-*")}
        return {str(Path(p).relative_to(out)) for p in set(opened) & parts}

    again: dict = {}
    assert data_files_read(again) == set()
    assert (again["partitions_run"], again["partitions_skipped"]) == (0, first["partitions"])

    changed = PartitionFiles(out, 1).features
    data = bytearray(changed.read_bytes())
    data[-10] ^= 0xFF                                         # same size, other bytes
    changed.write_bytes(bytes(data))
    cut = PartitionFiles(out, 2).errors
    cut.write_bytes(cut.read_bytes()[:-20])                   # cut short
    forged = PartitionFiles(out, 3).spectrograms
    times = forged.stat()
    data = bytearray(forged.read_bytes())
    data[-1] ^= 0xFF
    forged.write_bytes(bytes(data))
    os.utime(forged, ns=(times.st_atime_ns, times.st_mtime_ns))    # its old modification time
    touched = PartitionFiles(out, 4).index
    os.utime(touched)                                         # same bytes, a new time
    opened.clear()
    third: dict = {}
    hashed = data_files_read(third)
    assert hashed == {"features/part-00001.parquet", "spectrograms/part-00003.npy",
                      "spectrograms/index/part-00004.parquet"}       # not the cut one: its size
    assert (third["partitions_run"], third["partitions_skipped"]) == (3, first["partitions"] - 3)
    assert_same_output(out, clean_run)


def test_a_second_writer_is_refused_naming_the_holder(sample_dir, tmp_path, capsys):
    out = tmp_path / "run"
    with held_lock(out, "fmadask featurize") as holder:
        status = main(["featurize", str(sample_dir), "--out", str(out), "--partition-size",
                       str(PART)])
        err = capsys.readouterr().err
        assert status == 2 and err.count("\n") == 1
        assert f"pid {holder.pid}" in err and "fmadask featurize" in err
        assert sorted(p.name for p in out.iterdir()) == [".fmadask.lock"]   # nothing written
    # the holder died without releasing: its lock is stale and is taken over
    assert (out / ".fmadask.lock").exists()
    from fmadask.lock import RunLock

    with RunLock(out, "test"):
        assert f'"pid": {os.getpid()}' in (out / ".fmadask.lock").read_text()
    assert not (out / ".fmadask.lock").exists()


def test_a_lock_held_on_another_host_is_refused_with_the_file_to_remove(tmp_path):
    from fmadask.lock import LockedError, RunLock

    (tmp_path / ".fmadask.lock").write_text(
        '{"owner": "fmadask run", "host": "elsewhere", "pid": 1, "started": "x", "token": "t"}')
    with pytest.raises(LockedError, match="remove .*fmadask.lock") as info:
        with RunLock(tmp_path):
            pass
    assert "pid 1 on elsewhere" in str(info.value)
    assert (tmp_path / ".fmadask.lock").exists()


def test_overwrite_deletes_only_what_fmadask_wrote(sample_dir, local_client, clean_run,
                                                   tmp_path):
    out = tmp_path / "run"
    shutil.copytree(clean_run, out)
    mine = {out / "features" / "notes.txt": b"my notes", out / "errors" / "README": b"mine",
            out / "spectrograms" / "extra.npy": b"\x93NUMPY mine", out / "mine.csv": b"a,b"}
    for path, data in mine.items():
        path.write_bytes(data)
    _run(sample_dir, out, local_client, what=("features",), overwrite=True)
    assert {p: p.read_bytes() for p in mine} == mine
    assert not list((out / "spectrograms").glob("part-*"))       # ours went
    pd.testing.assert_frame_equal(read_features(out), read_features(clean_run), check_exact=True)


def test_a_folder_of_other_files_is_refused_as_a_run_folder(sample_dir, tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(ConfigError, match="holiday.jpg") as info:
        run_featurize(sample_dir, out=out, progress=False)
    assert "overwrite" in str(info.value) and "\n" not in str(info.value)
    assert sorted(p.name for p in out.iterdir()) == ["holiday.jpg"]


def test_a_truncated_featurize_json_is_one_line(clean_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(clean_run, out)
    job = out / "featurize.json"
    job.write_bytes(job.read_bytes()[:200])
    with pytest.raises(DataError, match="featurize.json is damaged") as info:
        read_features(out)
    assert "\n" not in str(info.value)
    assert main(["train", str(out), "--no-unsupervised"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fmadask: ") and err.count("\n") == 1 and "damaged" in err


def test_a_damaged_features_part_is_reported_as_damaged_and_a_rerun_redoes_it(
        sample_dir, local_client, clean_run, tmp_path, capsys):
    """Bytes of a features part changed after its record (same size: the readers' size check
    passes): ``train`` says which file is damaged and how to redo it, not "free space"; the
    featurize re-run it names redoes that partition only."""
    out = tmp_path / "run"
    shutil.copytree(clean_run, out)
    features = PartitionFiles(out, 3).features
    data = bytearray(features.read_bytes())
    data[len(data) // 2:len(data) // 2 + 200] = b"\xff" * 200
    features.write_bytes(bytes(data))
    assert main(["train", str(out), "--models", "logistic_regression", "--no-unsupervised",
                 "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fmadask: ") and err.count("\n") == 1, err
    assert f"{features} is damaged" in err and "fmadask featurize" in err, err
    assert "_partitions/part-00003.json" in err and "free space" not in err, err
    summary = _run(sample_dir, out, local_client)
    assert summary["partitions_run"] == 1
    assert_same_output(out, clean_run)


def test_only_a_full_disk_is_told_to_free_space():
    """The command line's line for an OSError: "free space" for ENOSPC and EDQUOT only."""
    import errno

    from fmadask.errors import os_error_line

    full = os_error_line(OSError(errno.ENOSPC, "No space left on device", "/r/x.parquet"))
    assert full.startswith("cannot write /r/x.parquet: No space left on device: free space")
    assert "free space" in os_error_line(OSError(errno.EDQUOT, "Disk quota exceeded", "/r/y"))
    timeout = os_error_line(TimeoutError("No valid workers found"))
    assert "free space" not in timeout and "timed out" in timeout and "workers" in timeout
    damaged = os_error_line(OSError("Couldn't deserialize thrift:\n don't know what type"))
    assert "free space" not in damaged and "\n" not in damaged
