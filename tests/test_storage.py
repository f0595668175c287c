"""Object storage: the data folder read from a real S3 server (moto's) and a plain HTTP server.

The servers run on 127.0.0.1 as separate processes or threads; nothing is mocked.
"""
from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmadask import storage
from fmadask.audio import load_audio
from fmadask.cli import main
from fmadask.errors import ConfigError
from fmadask.fma.tracks import track_table


# ------------------------------------------------------------------------------ unit parts


def test_storage_options_parse_nested_typed_and_refuse_non_pairs() -> None:
    got = storage.parse_storage_options(["anon=true", "client_kwargs.region_name=eu-west-1",
                                         "max_concurrency=4", "endpoint_url=http://h:9000/x=y"])
    assert got == {"anon": True, "client_kwargs": {"region_name": "eu-west-1"},
                   "max_concurrency": 4, "endpoint_url": "http://h:9000/x=y"}
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        storage.parse_storage_options(["anon"])


def test_redact_removes_credentials_from_urls_only() -> None:
    assert storage.redact("s3://AKIA:sEcReT@bucket/fma") == "s3://bucket/fma"
    assert storage.redact("https://user:pw@host/fma") == "https://host/fma"
    assert storage.redact("/data/a@b/fma") == "/data/a@b/fma"
    # anywhere in a message or a record, every URL of it
    assert storage.redact("read 'https://u:p@h/a.mp3' then s3://k:s@b/x, mail me@host") == \
        "read 'https://h/a.mp3' then s3://b/x, mail me@host"
    assert storage.redact('{"dir": "http://u:p@h/fma", "at": "http://h/a@b"}') == \
        '{"dir": "http://h/fma", "at": "http://h/a@b"}'


def test_join_keeps_local_paths_as_paths() -> None:
    assert storage.join(Path("/d"), "fma_small", "000") == Path("/d/fma_small/000")
    assert storage.join("s3://b/fma/", "fma_small", "000") == "s3://b/fma/fma_small/000"


def test_storage_option_flag_error_is_one_line(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["info", "s3://b/fma", "--storage-option", "anon"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--storage-option" in err and "KEY=VALUE" in err


# ------------------------------------------------------------------------------------- S3


def _features(summary_dir: Path) -> pd.DataFrame:
    from fmadask.runfolder import read_features

    return read_features(summary_dir)


def test_info_from_s3_equals_local(s3_server, s3_sample, sample_dir, monkeypatch,
                                   capsys) -> None:
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    assert main(["info", str(sample_dir)]) == 0
    local = capsys.readouterr().out
    assert main(["info", s3_sample]) == 0
    remote = capsys.readouterr().out
    assert "missing" in remote.lower() or "genre" in remote.lower()
    assert remote == local


def test_track_table_and_decode_from_s3_equal_local(s3_server, s3_sample, sample_dir) -> None:
    local = track_table(sample_dir)
    remote = track_table(s3_sample, storage_options=s3_server.options)
    pd.testing.assert_frame_equal(local.drop(columns="path"), remote.drop(columns="path"))
    assert remote["path"].iloc[0].startswith("s3://fma-sample/fma/fma_small/")
    for tid in local.index[:3]:
        y_local, sr_local = load_audio(local.loc[tid, "path"])
        y_remote, sr_remote = load_audio(remote.loc[tid, "path"],
                                         storage_options=s3_server.options)
        assert sr_remote == sr_local
        np.testing.assert_array_equal(y_remote, y_local)   # the same decoder, bit for bit


def test_featurize_reads_s3_on_workers_and_equals_local(s3_server, s3_sample, sample_dir,
                                                        local_client, tmp_path) -> None:
    """Workers (separate processes, no AWS_* in their environment) read the mp3s from S3 with
    the storage options passed as task arguments; the features equal a local run's."""
    from fmadask.pipeline import run_featurize
    from fmadask.pipeline.featurize import FeaturizeConfig

    kwargs = dict(client=local_client, progress=False,
                  config=FeaturizeConfig(what=["features"], partition_size=16))
    run_featurize(sample_dir, out=tmp_path / "local", **kwargs)
    run_featurize(s3_sample, out=tmp_path / "s3", storage_options=s3_server.options, **kwargs)
    pd.testing.assert_frame_equal(_features(tmp_path / "s3"), _features(tmp_path / "local"))
    job = (tmp_path / "s3" / "featurize.json").read_text()
    assert s3_sample in job
    assert s3_server.options["secret"] not in job and s3_server.options["key"] not in job


def test_bad_credentials_and_missing_bucket_end_in_one_line(s3_server, s3_sample,
                                                            capsys) -> None:
    endpoint = f"endpoint_url={s3_server.endpoint}"
    # moto accepts any key unless told otherwise; a missing bucket is refused by any server.
    assert main(["info", "s3://no-such-bucket/fma", "--storage-option", endpoint,
                 "--storage-option", "key=k", "--storage-option", "secret=s"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "s3://no-such-bucket/fma" in err and "Traceback" not in err
    assert main(["info", s3_sample, "--storage-option", "endpoint_url=http://127.0.0.1:1",
                 "--storage-option", "key=k", "--storage-option", "secret=TOPSECRET",
                 "--storage-option", "config_kwargs.retries.max_attempts=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach" in err and "TOPSECRET" not in err


# ----------------------------------------------------------------------------------- HTTP


class _FlakyHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder read-only; the first GET of every mp3 fails with 503 (a transient
    server error), so a reader that does not retry fails."""

    failed: set[str] = set()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.endswith(".mp3") and self.path not in self.failed:
            self.failed.add(self.path)
            self.send_error(503, "busy")
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_sample(sample_dir: Path) -> Iterator[str]:
    """The sample served read-only by a plain (flaky) HTTP server on 127.0.0.1."""
    handler = functools.partial(_FlakyHandler, directory=str(sample_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_https_style_data_folder_reads_with_retries(http_sample, sample_dir) -> None:
    local = track_table(sample_dir)
    remote = track_table(http_sample)
    pd.testing.assert_frame_equal(local.drop(columns="path"), remote.drop(columns="path"))
    tid = local.index[0]
    y_remote, _ = load_audio(remote.loc[tid, "path"])    # its first GET answers 503
    y_local, _ = load_audio(local.loc[tid, "path"])
    np.testing.assert_array_equal(y_remote, y_local)
    assert remote.loc[tid, "path"].split("127.0.0.1")[1].split("/", 1)[1] in \
        {p.lstrip("/") for p in _FlakyHandler.failed}


def test_get_file_of_a_missing_object_leaves_no_folder_behind(s3_server, tmp_path) -> None:
    """Probing ``cnn/<entry>/model.json`` for an entry that is a file must not make a local
    folder of that name: the file itself could not be downloaded there afterwards."""
    fs = s3_server.filesystem()
    fs.mkdir("get-file")
    fs.pipe_file("get-file/cnn/predictions.parquet", b"rows")
    with pytest.raises(FileNotFoundError):
        storage.get_file("s3://get-file/cnn/predictions.parquet/model.json",
                         tmp_path / "cnn" / "predictions.parquet" / "model.json",
                         s3_server.options)
    assert not (tmp_path / "cnn").exists()
    storage.get_file("s3://get-file/cnn/predictions.parquet",
                     tmp_path / "cnn" / "predictions.parquet", s3_server.options)
    assert (tmp_path / "cnn" / "predictions.parquet").read_bytes() == b"rows"


# ------------------------------------------------------------------------ run-folder lock


def test_a_live_holder_is_refused_naming_it_and_the_lock_file(tmp_path: Path) -> None:
    from lock_holder import held_lock

    from fmadask.lock import LOCK_NAME, LockedError, RunLock

    with held_lock(tmp_path, "fmadask cnn") as holder:
        with pytest.raises(LockedError) as refused:
            RunLock(tmp_path, "fmadask train").acquire()
    message = str(refused.value)
    assert "\n" not in message and f"pid {holder.pid}" in message and "fmadask cnn" in message
    assert str(tmp_path / LOCK_NAME) in message


def test_a_stale_lock_whose_pid_was_reused_is_taken_over(tmp_path: Path) -> None:
    """After a container restart pids repeat: the dead holder's pid may now name another live
    process (here this test's own, or a child's). Its start time tells them apart."""
    import json
    import os
    import subprocess
    import sys

    from lock_holder import held_lock

    from fmadask.lock import LOCK_NAME, RunLock

    with held_lock(tmp_path, "fmadask featurize"):
        pass                                 # killed: its lock is left behind
    lock = tmp_path / LOCK_NAME
    left = json.loads(lock.read_text())
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for reused in (os.getpid(), other.pid):
            lock.write_text(json.dumps({**left, "pid": reused}))
            with RunLock(tmp_path, "fmadask train"):
                assert json.loads(lock.read_text())["owner"] == "fmadask train"
            assert not lock.exists()
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("pid", [10 ** 30, 2 ** 40, -1, 0, "7", True, None])
def test_a_damaged_lock_file_is_one_line_naming_it(sample_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture, pid) -> None:
    import json
    import socket

    from fmadask.lock import LOCK_NAME

    out = tmp_path / "run"
    out.mkdir()
    lock = out / LOCK_NAME
    lock.write_text(json.dumps({"owner": "fmadask featurize", "host": socket.gethostname(),
                                "pid": pid, "started": "x", "token": "t"}))
    assert main(["featurize", str(sample_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(lock) in err and "pid" in err, err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]        # nothing else written


def test_s3_lock_conditional_create_has_one_winner(s3_server) -> None:
    """Eight stores race to create the same lock object; the server lets exactly one win."""
    from concurrent.futures import ThreadPoolExecutor

    from fmadask.lock import ObjectLockStore

    s3_server.filesystem().mkdir("locks-race")
    url = "s3://locks-race/runs/r1"
    stores = [ObjectLockStore(url, s3_server.options) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda i: stores[i].create(".fmadask.lock", b"%d" % i), range(8)))
    assert sum(won) == 1
    assert stores[0].read(".fmadask.lock") == b"%d" % won.index(True)
    assert stores[0].age(".fmadask.lock") is not None


def test_s3_lock_refuses_a_live_holder_and_takes_over_a_dead_one(s3_server) -> None:
    import json
    import os
    import socket
    import subprocess
    import sys

    from fmadask.lock import LOCK_NAME, LockedError, ObjectLockStore, RunLock

    s3_server.filesystem().mkdir("locks-holder")
    url = "s3://locks-holder/runs/r1"
    store = ObjectLockStore(url, s3_server.options)
    other = {"owner": "fmadask featurize", "host": "node-elsewhere", "pid": 7, "token": "t"}
    assert store.create(LOCK_NAME, json.dumps(other).encode())
    with pytest.raises(LockedError, match="node-elsewhere") as refused:
        RunLock(url, "fmadask train", storage_options=s3_server.options).acquire()
    assert f"remove {url}/{LOCK_NAME}" in str(refused.value)
    store.delete(LOCK_NAME)
    # A holder on this host whose process is gone is stale: taken over.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = {**other, "host": socket.gethostname(), "pid": dead.pid}
    assert store.create(LOCK_NAME, json.dumps(stale).encode())
    with RunLock(url, "fmadask train", storage_options=s3_server.options):
        holder = json.loads(store.read(LOCK_NAME))
        assert holder["pid"] == os.getpid() and holder["owner"] == "fmadask train"
    assert store.read(LOCK_NAME) is None          # released: the object is gone


# ------------------------------------------------------------------------ run folder on S3


@pytest.fixture(scope="module")
def s3_run(s3_server, s3_sample, sample_dir, local_client, tmp_path_factory):
    """featurize s3:// -> s3:// and the same sample locally: ``(url, local run, summaries)``."""
    from fmadask.pipeline import run_featurize
    from fmadask.pipeline.featurize import FeaturizeConfig

    s3_server.filesystem().mkdir("runs-bucket")
    out = "s3://runs-bucket/runs/r1"
    local_dir = tmp_path_factory.mktemp("local-run")
    kwargs = dict(client=local_client, config=FeaturizeConfig(partition_size=16), progress=False)
    local = run_featurize(sample_dir, out=local_dir, **kwargs)
    remote = run_featurize(s3_sample, out=out, storage_options=s3_server.options, **kwargs)
    return out, local_dir, local, remote


def test_featurize_writes_a_run_folder_on_s3_that_resumes(s3_server, s3_sample, s3_run,
                                                          local_client) -> None:
    """featurize s3:// -> s3://: partitions, completion records and featurize.json land in the
    bucket; the features read back from it equal a local run's; a re-run skips every complete
    partition and redoes one whose object was damaged."""
    from fmadask.pipeline import run_featurize
    from fmadask.pipeline.featurize import FeaturizeConfig
    from fmadask.runfolder import read_features, read_spectrogram_index

    out, local_dir, local, first = s3_run
    fs = s3_server.filesystem()
    kwargs = dict(client=local_client, config=FeaturizeConfig(partition_size=16), progress=False)
    assert first["partitions_run"] == first["partitions"] > 1
    assert {k: first[k] for k in ("ok", "failed", "features", "spectrograms")} == \
        {k: local[k] for k in ("ok", "failed", "features", "spectrograms")}
    pd.testing.assert_frame_equal(read_features(out, storage_options=s3_server.options),
                                  read_features(local_dir))
    pd.testing.assert_frame_equal(read_spectrogram_index(out, storage_options=s3_server.options),
                                  read_spectrogram_index(local_dir))
    assert not fs.exists("runs-bucket/runs/r1/.fmadask.lock")     # released
    assert fs.exists("runs-bucket/runs/r1/_partitions/part-00001.json")
    # Damage one object: the re-run checks checksums, redoes that partition only.
    fs.pipe_file("runs-bucket/runs/r1/errors/part-00001.parquet", b"garbage")
    again = run_featurize(s3_sample, out=out, storage_options=s3_server.options, **kwargs)
    assert again["partitions_run"] == 1 and again["partitions_skipped"] == first["partitions"] - 1
    pd.testing.assert_frame_equal(read_features(out, storage_options=s3_server.options),
                                  read_features(local_dir))


def test_a_resume_on_s3_reads_no_data_object_of_a_complete_partition(s3_server, sample_dir,
                                                                     local_client) -> None:
    """A re-run in a bucket decides which partitions are complete from their completion records
    and the sizes and entity tags of one listing: it downloads no data object of a complete
    partition (every GET the client and the workers send is seen by a relay), lists each
    folder and reads each record once (its summary reuses what its plan read: at FMA-large
    size a second pass cost a minute), yet redoes a partition whose object was changed (same
    size, other bytes), one cut short and one whose record is missing (in flight when the
    client died)."""
    from conftest import TcpRelay
    from fmadask.pipeline import run_featurize
    from fmadask.pipeline.featurize import FeaturizeConfig
    from fmadask.runfolder import OUTPUTS, PartitionFiles, read_features

    relay = TcpRelay(s3_server.port)
    relay.start()
    options = {**s3_server.options, "endpoint_url": relay.endpoint}
    s3_server.filesystem().mkdir("runs-resume")
    out = "s3://runs-resume/r1"
    kwargs = dict(out=out, client=local_client, config=FeaturizeConfig(partition_size=8),
                  progress=False, storage_options=options)
    first = run_featurize(sample_dir, **kwargs)
    assert first["partitions_run"] == first["partitions"] == 4
    features = read_features(out, storage_options=options)

    def data_gets(partition: int) -> list[str]:
        keys = {"/" + str(f)[len("s3://"):]
                for f in PartitionFiles(out, partition).outputs(OUTPUTS)}
        return [r for r in relay.requests if r.startswith("GET ") and r[4:].split("?")[0] in keys]

    try:
        relay.requests.clear()
        again = run_featurize(sample_dir, **kwargs)
        assert (again["partitions_run"], again["partitions_skipped"]) == (0, 4)
        assert [data_gets(p) for p in range(4)] == [[], [], [], []]
        records = [r for r in relay.requests if r.startswith("GET /runs-resume/r1/_partitions/")]
        assert sorted(records) == [f"GET /runs-resume/r1/_partitions/part-{p:05d}.json"
                                   for p in range(4)]
        listings = [r for r in relay.requests if r.startswith("GET /runs-resume?")]
        assert len(listings) == len(set(listings)) == 5    # features, spectrograms, index,
        #                                                    errors, records: once each

        fs = s3_server.filesystem()
        changed = "runs-resume/r1/features/part-00001.parquet"
        data = bytearray(fs.cat_file(changed))
        data[-10] ^= 0xFF                                           # same size, other bytes
        fs.pipe_file(changed, bytes(data))
        cut = "runs-resume/r1/errors/part-00002.parquet"
        fs.pipe_file(cut, fs.cat_file(cut)[:-20])                   # cut short
        fs.rm_file("runs-resume/r1/_partitions/part-00003.json")    # in flight
        relay.requests.clear()
        third = run_featurize(sample_dir, **kwargs)
        assert (third["partitions_run"], third["partitions_skipped"]) == (3, 1)
        assert data_gets(0) == []
        assert (third["ok"], third["failed"], third["features"]) == \
            (first["ok"], first["failed"], first["features"])
        pd.testing.assert_frame_equal(read_features(out, storage_options=options), features)
    finally:
        relay.stop()


def test_train_reads_s3_writes_back_and_predict_loads_from_s3(s3_server, s3_run, sample_dir,
                                                               local_client) -> None:
    """train s3://run -> s3://run/classical equals a local train; predict from the s3 model
    folder gives the local model's probabilities."""
    from fmadask.predict import predict
    from fmadask.ml.train import ClassicalConfig, train

    out, local_dir, _, _ = s3_run
    kwargs = dict(config=ClassicalConfig(models=["logistic_regression", "decision_tree"],
                                         unsupervised=False),
                  client=local_client, progress=False)
    local = train(local_dir, **kwargs)
    remote = train(out, storage_options=s3_server.options, **kwargs)
    numbers = [c for c in local.select_dtypes("number").columns if "seconds" not in c]
    assert {"validation_accuracy", "test_accuracy", "test_f1_macro"} <= set(numbers)
    pd.testing.assert_frame_equal(remote[numbers], local[numbers])
    fs = s3_server.filesystem()
    assert fs.isfile("runs-bucket/runs/r1/classical/train.json")
    assert fs.isfile("runs-bucket/runs/r1/classical/models/decision_tree/model.json")
    assert not fs.exists("runs-bucket/runs/r1/.fmadask.lock")
    clips = sorted((sample_dir / "fma_small").rglob("*.mp3"))[:2]
    want = predict(local_dir / "classical", clips)
    got = predict(f"{out}/classical", clips, storage_options=s3_server.options)
    pd.testing.assert_frame_equal(got.drop(columns=[c for c in got if "model" in c]),
                                  want.drop(columns=[c for c in want if "model" in c]))


def test_cnn_refuses_a_read_only_run_folder_in_one_line(capsys) -> None:
    # Object storage is a run folder the cnn stage reads and writes (tests/test_cnn_s3.py);
    # a read-only one cannot take its outputs or its lock.
    assert main(["cnn", "https://user:pw@host/runs/r1", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "read-only" in err and "pw" not in err


def test_job_spec_reads_data_from_s3_and_never_shows_its_storage_options(
        s3_server, s3_sample, tmp_path, capsys) -> None:
    options = s3_server.options
    spec = tmp_path / "job.toml"
    spec.write_text(f"""
[data]
dir = "{s3_sample}"
storage_options = {{ key = "{options['key']}", secret = "{options['secret']}", endpoint_url = "{options['endpoint_url']}" }}
[output]
dir = "{tmp_path / 'run'}"
""")
    assert main(["run", str(spec), "--check"]) == 0
    out = capsys.readouterr().out
    assert 'storage_options = { key = "***", secret = "***", endpoint_url = "***" }' in out
    assert options["secret"] not in out and "featurize" in out
    # Without the options the bucket's endpoint is unknown: refused in one line, before work.
    spec.write_text(f'[data]\ndir = "{s3_sample}"\nstorage_options = {{ endpoint_url = '
                    f'"http://127.0.0.1:1", key = "k", secret = "s", config_kwargs = '
                    f'{{ retries = {{ max_attempts = 1 }} }} }}\n[output]\ndir = "x"\n')
    assert main(["run", str(spec), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach" in err


# ------------------------------------------------------------- fmadask run, run folder on S3


def _bucket_job(tmp_path: Path, s3_server, s3_sample: str, out: str, *extra: str) -> Path:
    """A job spec reading the sample from S3 and writing its run folder to ``out``: features
    and two fast classical models, no CNN."""
    options = s3_server.options
    spec = tmp_path / "bucket-job.toml"
    spec.write_text("\n".join([
        "[data]", f'dir = "{s3_sample}"',
        f'storage_options = {{ key = "{options["key"]}", secret = "{options["secret"]}", '
        f'endpoint_url = "{options["endpoint_url"]}" }}',
        "[featurize]", 'what = ["features"]', "partition_size = 16",
        "[classical]", 'models = ["logistic_regression", "decision_tree"]', 'search = "none"',
        "unsupervised = false",
        "[cnn]", "enabled = false",
        "[output]", f'dir = "{out}"', *extra, ""]))
    return spec


def test_run_job_plans_from_stage_markers_in_a_bucket(s3_server, s3_sample, tmp_path,
                                                      capsys) -> None:
    """The stage markers of a bucket run folder decide the plan, as on disk: done stages are
    skipped, changed parameters refused in one line."""
    import json

    from fmadask.jobspec import load_job
    from fmadask.run import marker_path, plan, stage_params

    s3_server.filesystem().mkdir("runs-plan")
    out = "s3://runs-plan/runs/r1"
    spec_file = _bucket_job(tmp_path, s3_server, s3_sample, out)
    spec = load_job(spec_file)
    assert [p.action for p in plan(spec)] == ["run", "run", "off", "off"]
    for stage in ("featurize", "classical"):
        storage.write_bytes(marker_path(out, stage), json.dumps(
            {"stage": stage, "params": stage_params(spec, stage)}).encode(), s3_server.options)
    assert [p.action for p in plan(spec)] == ["skip", "skip", "off", "off"]
    assert main(["run", str(spec_file), "--check"]) == 0
    assert "# featurize: complete, skipped" in capsys.readouterr().out
    assert main(["run", str(spec_file), "--check", "--set", "data.split=stratified"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and out in err and "other parameters" in err


def test_run_job_plans_the_cnn_and_fusion_stages_of_a_bucket_run_folder(s3_server, s3_sample,
                                                                         tmp_path, capsys) -> None:
    from fmadask.jobspec import load_job
    from fmadask.run import plan, stage_params

    s3_server.filesystem().mkdir("runs-cnn")
    spec_file = _bucket_job(tmp_path, s3_server, s3_sample, "s3://runs-cnn/r1")
    on = ["cnn.enabled=true", 'featurize.what=["features", "spectrograms"]']
    assert main(["run", str(spec_file), "--check", *[a for s in on for a in ("--set", s)]]) == 0
    out = capsys.readouterr().out
    assert "# cnn: to run" in out and "# fusion: to run" in out
    # where each host caches the shards changes no result: not a parameter of the stage
    spec = load_job(spec_file, on)
    cached = load_job(spec_file, [*on, "cnn.cache_dir=/scratch/shards", "cnn.cache_size=2"])
    assert (cached.cnn.cache_dir, cached.cnn.cache_size) == ("/scratch/shards", 2.0)
    assert stage_params(cached, "cnn") == stage_params(spec, "cnn")
    assert [p.action for p in plan(cached)] == ["run"] * 4


def test_run_job_refuses_a_bucket_run_folder_another_writer_holds(s3_server, s3_sample,
                                                                  tmp_path, capsys) -> None:
    import json

    from fmadask.lock import LOCK_NAME, ObjectLockStore

    s3_server.filesystem().mkdir("runs-held")
    out = "s3://runs-held/runs/r1"
    other = {"owner": "fmadask featurize", "host": "node-elsewhere", "pid": 7, "token": "t"}
    assert ObjectLockStore(out, s3_server.options).create(LOCK_NAME, json.dumps(other).encode())
    assert main(["run", str(_bucket_job(tmp_path, s3_server, s3_sample, out))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "node-elsewhere" in err
    assert s3_server.filesystem().find("runs-held") == [f"runs-held/runs/r1/{LOCK_NAME}"]


@pytest.mark.slow
def test_run_job_writes_its_run_folder_to_a_bucket_and_resumes(s3_server, s3_sample, s3_run,
                                                               local_client, tmp_path) -> None:
    """``fmadask run`` with ``[output] dir = "s3://..."`` on a cluster whose workers reach S3
    through the job's storage options: featurize and classical write into the bucket, with
    job.toml and the stage markers; the features equal a local run's; a re-run skips both
    stages (markers untouched) and one whose marker is gone runs again, alone."""
    import io

    from fmadask.jobspec import load_job
    from fmadask.lock import LOCK_NAME
    from fmadask.runfolder import read_features
    from fmadask.run import run_job

    _, local_dir, _, _ = s3_run
    fs = s3_server.filesystem()
    fs.mkdir("runs-job")
    out = "s3://runs-job/runs/r1"
    overrides = ["cluster.kind=address", f"cluster.address={local_client.scheduler.address}"]
    spec = load_job(_bucket_job(tmp_path, s3_server, s3_sample, out), overrides)
    log = io.StringIO()
    first = run_job(spec, file=log)
    assert first["stages"] == {"featurize": "run", "classical": "run", "cnn": "off",
                               "fusion": "off"}
    assert first["results"]["classical table"] == f"{out}/classical/table.md"
    keys = set(fs.find("runs-job/runs/r1"))
    assert {"runs-job/runs/r1/job.toml", "runs-job/runs/r1/featurize.json",
            "runs-job/runs/r1/_stages/featurize.json", "runs-job/runs/r1/_stages/classical.json",
            "runs-job/runs/r1/classical/results.csv"} <= keys
    assert f"runs-job/runs/r1/{LOCK_NAME}" not in keys
    assert s3_server.options["secret"] not in fs.cat_file("runs-job/runs/r1/job.toml").decode()
    pd.testing.assert_frame_equal(read_features(out, storage_options=s3_server.options),
                                  read_features(local_dir))
    markers = {k: fs.cat_file(k) for k in fs.find("runs-job/runs/r1/_stages")}

    again = run_job(spec, file=io.StringIO())
    assert again["stages"]["featurize"] == again["stages"]["classical"] == "skip"
    assert {k: fs.cat_file(k) for k in fs.find("runs-job/runs/r1/_stages")} == markers
    fs.rm_file("runs-job/runs/r1/_stages/classical.json")
    log = io.StringIO()
    third = run_job(spec, file=log)
    assert third["stages"]["featurize"] == "skip" and third["stages"]["classical"] == "run"
    assert "== featurize" not in log.getvalue() and "== classical done" in log.getvalue()
    fs.invalidate_cache()
    assert fs.isfile("runs-job/runs/r1/_stages/classical.json")


@pytest.mark.slow
def test_run_job_trains_the_cnn_and_fuses_in_a_bucket_run_folder(s3_server, s3_sample,
                                                                 local_client, tmp_path) -> None:
    """All four stages of ``fmadask run`` on a bucket run folder (a tiny CNN): the CNN's ranks
    read the shards through their cache, its folder and the fusion land in the bucket, model
    cards included, and a re-run skips every stage."""
    import io
    import json

    from fmadask.jobspec import load_job
    from fmadask.run import run_job

    fs = s3_server.filesystem()
    fs.mkdir("runs-all")
    out = "s3://runs-all/runs/r1"
    overrides = ["cluster.kind=address", f"cluster.address={local_client.scheduler.address}",
                 "cnn.enabled=true", 'featurize.what=["features", "spectrograms"]',
                 'cnn.archs=["naive"]', "cnn.epochs=1", "cnn.ranks=2", "cnn.width=4",
                 "cnn.batch_size=4", "cnn.segment_seconds=1.0", "cnn.crops=1",
                 f"cnn.cache_dir={tmp_path / 'shards'}"]
    spec = load_job(_bucket_job(tmp_path, s3_server, s3_sample, out), overrides)
    first = run_job(spec, file=io.StringIO())
    assert set(first["stages"].values()) == {"run"}
    assert first["results"]["fusion results"] == f"{out}/fusion/report.md"
    assert first["results"]["cnn naive"] == f"{out}/cnn/naive/report.md"
    keys = set(fs.find("runs-all/runs/r1"))
    for name in ("cnn/naive/model.json", "cnn/naive/checkpoints/last.json",
                 "fusion/model.json", "fusion/parts/cnn/model.pt", "_stages/fusion.json"):
        assert f"runs-all/runs/r1/{name}" in keys, name
    assert json.loads(fs.cat_file("runs-all/runs/r1/fusion/model.json"))["kind"] == "fusion"
    assert list((tmp_path / "shards").glob("*.npy"))             # the workers' cache
    again = run_job(spec, file=io.StringIO())
    assert set(again["stages"].values()) == {"skip"}


# ---------------------------------------------------------------------------- credentials


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_a_data_url_password_is_never_written_or_printed(tmp_path: Path) -> None:
    """A job reads its data from ``http://reader:PASSWORD@host/``: no file the run writes, and
    nothing ``run --check`` or the run prints, holds the password (errors, records, job.toml,
    logs, the Parquet tables read back as text too, in case a page is compressed)."""
    import subprocess
    import sys

    import pyarrow.parquet as pq

    from fmadask.fma.sample import make_sample

    secret = "pw-s3cr3t-77"
    make_sample(tmp_path / "fma", tracks_per_genre=3, seconds=4.0)     # with FMA's defects
    handler = functools.partial(_QuietHandler, directory=str(tmp_path / "fma"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    run = tmp_path / "run"
    spec = tmp_path / "job.toml"
    spec.write_text(f'[data]\ndir = "http://reader:{secret}@127.0.0.1:{server.server_address[1]}"'
                    f'\n[cluster]\nworkers = 1\n[featurize]\nwhat = ["features"]\n'
                    f'[classical]\nmodels = ["logistic_regression"]\nunsupervised = false\n'
                    f'[cnn]\nenabled = false\n[output]\ndir = "{run}"\n')
    fmadask = str(Path(sys.executable).with_name("fmadask"))
    try:
        printed = []
        for args in (["run", "--check", str(spec)], ["run", str(spec)]):
            done = subprocess.run([fmadask, *args], capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stderr
            printed.append(done.stdout + done.stderr)
    finally:
        server.shutdown()
        server.server_close()
    assert f'dir = "http://127.0.0.1:{server.server_address[1]}"' in printed[0]
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any(p.parent.name == "errors" for p in files)    # the defective clips were recorded
    leaks = [p for p in files if secret.encode() in p.read_bytes()]
    leaks += [p for p in files if p.suffix == ".parquet" and
              secret in pq.read_table(p).to_pandas().to_string()]
    assert leaks == [] and not any(secret in text for text in printed), (leaks, printed)


@pytest.mark.slow      # a local cluster in a subprocess, cut off from its store mid-job
def test_a_store_gone_mid_featurize_stops_the_job_once_in_one_line(s3_server, s3_sample) -> None:
    """The store goes away mid-job: the job stops at the first partition that finds it gone
    (the tasks in flight end, the others are cancelled), in one line and without Dask's
    "Compute Failed" blocks (before: every partition tried twice, each with its retries, a
    block each, then the summary's reads retried too)."""
    import subprocess
    import sys

    from conftest import TcpRelay

    s3_server.filesystem().mkdir("gone")
    store = TcpRelay(s3_server.port, cut_on=b"PUT /gone/runs/r1/_partitions/part-00001.json",
                     refuse_after_cut=True)
    store.start()
    try:
        env = {**os.environ, **s3_server.env,
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        proc = subprocess.run(
            [sys.executable, "-m", "fmadask.cli", "featurize", s3_sample, "--out",
             "s3://gone/runs/r1", "--partition-size", "2", "--what", "features", "--workers",
             "2", "--storage-option", f"endpoint_url=http://127.0.0.1:{store.port}",
             "--storage-option", "config_kwargs.retries.max_attempts=1"],
            env=env, capture_output=True, text=True, timeout=900)
    finally:
        store.stop()
    assert store.gone, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    said = [line for line in lines if line.startswith("fmadask:")]
    assert len(said) == 1, proc.stderr[-3000:]
    # whichever the first partition found gone: the run folder or the data, both in that store
    assert said[0].startswith("fmadask: cannot reach s3://"), proc.stderr[-3000:]
    assert "re-run the same command" in said[0]
    assert "Compute Failed" not in proc.stderr and "StoreUnavailable" not in proc.stderr


def test_one_rule_says_where_a_stage_writes(tmp_path: Path) -> None:
    # A file:// URL is a local folder for every stage (featurize and train took it for a
    # relative folder named 'file:'); object storage stays a URL, without a trailing slash.
    from fmadask.dl.outputs import out_location
    from fmadask.fusion.stage import _local_or_url
    from fmadask.ml.train import output_folder
    from fmadask.pipeline.featurize import run_folder

    url = f"file://{tmp_path}/run"
    for rule in (run_folder, output_folder, _local_or_url, storage.location):
        assert rule(url) == tmp_path / "run"
        assert rule("s3://bucket/run/") == "s3://bucket/run"
        assert rule("run") == Path("run")
    assert out_location("s3://bucket/run", None) == "s3://bucket/run/cnn"
    assert storage.is_remote("s3://bucket/run") and not storage.is_remote(url)
    assert not storage.is_remote(tmp_path) and not storage.is_remote("run")


def test_upload_folder_sends_each_model_card_after_the_files_it_lists(tmp_path: Path) -> None:
    """A reader of the bucket must never meet a card whose files are not there yet: the
    classical stage's model folders (``models/<name>/model.json`` sorts before
    ``pipeline.skops``) go up card last, and the manifests after everything else."""
    import fsspec

    for name in ("models/svc/model.json", "models/svc/pipeline.skops", "results.csv",
                 "best.json", "train.json", "checkpoints/last.pt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    sent: list[str] = []
    fs = fsspec.filesystem("memory")
    put = fs.put_file
    url = "memory://upload-order/run"

    def recording(local, path, *args, **kwargs):
        sent.append(Path(local).relative_to(tmp_path).as_posix())
        return put(local, path, *args, **kwargs)

    fs.put_file = recording               # the store's own client, watched: what goes up when
    try:
        assert storage.upload_folder(tmp_path, url, last=("model.json", "best.json",
                                                          "train.json"),
                                     skip=("checkpoints",)) == 5
    finally:
        del fs.put_file
        fs.rm("/upload-order", recursive=True)
    assert sent.index("models/svc/pipeline.skops") < sent.index("models/svc/model.json")
    assert sent[-2:] == ["best.json", "train.json"] and "checkpoints/last.pt" not in sent
