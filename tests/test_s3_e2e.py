"""End to end on workers that share no disk with the client: featurize -> train -> cnn -> predict
from and to ``s3://`` (a real S3 server, moto's), on a ``dask scheduler`` and two ``dask worker``
processes started in their own mount namespace with a tmpfs over the test's temporary folder,
so the sample and the client's outputs are invisible to them. Also: the S3 server cut off
mid-job (through a TCP relay the test stops) ends in one line, and a re-run resumes.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from conftest import TcpRelay, free_port, wait_for_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env(s3_server, **extra: str) -> dict:
    env = {**os.environ, **s3_server.env, "PYTHONPATH": str(ROOT), **extra}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def isolated_cluster(s3_server, sample_dir, tmp_path_factory) -> Iterator[str]:
    """A scheduler and two workers in a mount namespace where the test's temporary folder is an
    empty tmpfs; they reach S3 through the standard AWS_* environment only."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare for a private mount namespace")
    hidden = tmp_path_factory.getbasetemp()
    assert sample_dir.is_relative_to(hidden)
    port = free_port()
    script = (f"mount -t tmpfs tmpfs {hidden} || exit 3; "
              f"test -e {sample_dir}/fma_metadata/tracks.csv && exit 4; "
              f"{BIN}/dask scheduler --host 127.0.0.1 --port {port} --dashboard-address :0 "
              f"--no-show & "
              f"for i in 1 2; do {BIN}/dask worker tcp://127.0.0.1:{port} --nthreads 1 "
              f"--nworkers 1 --memory-limit 4GiB --no-dashboard & done; wait")
    # The cluster's logs go to a file: a pipe nobody reads fills up (64 KiB of worker logs, e.g.
    # the tracebacks of partitions cut off from S3) and then blocks the worker that writes.
    log = open(tmp_path_factory.mktemp("cluster") / "cluster.log", "wb")
    from fmadask.cluster import worker_environ

    # fmadask's worker environment (one numeric thread per process), as a deployment sets it
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                            env=_env(s3_server, **worker_environ()), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_for_port(port, timeout=60)
        from distributed import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout=30) as client:
            client.wait_for_workers(2, timeout=120)
            # The workers really cannot see the client's files.
            seen = client.run(os.path.exists, str(sample_dir / "fma_metadata" / "tracks.csv"))
            assert list(seen.values()) == [False, False]
        yield f"tcp://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)
        log.close()


def _fmadask(env: dict, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "fmadask"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_featurize_train_predict_on_workers_without_shared_disk(
        s3_server, s3_sample, sample_dir, isolated_cluster, local_client, tmp_path) -> None:
    from fmadask.predict import format_predictions, predict
    from fmadask.ml.train import ClassicalConfig, train
    from fmadask.pipeline import run_featurize
    from fmadask.pipeline.featurize import FeaturizeConfig
    from fmadask.runfolder import read_features

    s3_server.filesystem().mkdir("e2e")
    out = "s3://e2e/runs/r1"
    env = _env(s3_server)
    done = _fmadask(env, "featurize", s3_sample, "--out", out, "--partition-size", "16",
                    "--scheduler", isolated_cluster)
    assert done.returncode == 0, done.stderr[-2000:]
    done = _fmadask(env, "train", out, "--models", "logistic_regression,decision_tree",
                    "--no-unsupervised", "--scheduler", isolated_cluster)
    assert done.returncode == 0, done.stderr[-2000:]
    # The same on the client's disk, on a local cluster.
    run_featurize(sample_dir, out=tmp_path / "local", client=local_client,
                  config=FeaturizeConfig(partition_size=16), progress=False)
    train(tmp_path / "local", client=local_client, progress=False,
          config=ClassicalConfig(models=["logistic_regression", "decision_tree"],
                                 unsupervised=False))
    pd.testing.assert_frame_equal(read_features(out, storage_options=s3_server.options),
                                  read_features(tmp_path / "local"))
    fs = s3_server.filesystem()
    remote = pd.read_csv(fs.open("e2e/runs/r1/classical/results.csv"))
    local = pd.read_csv(tmp_path / "local" / "classical" / "results.csv")
    scores = ["validation_accuracy", "test_accuracy", "test_f1_macro"]
    pd.testing.assert_frame_equal(remote[scores], local[scores])
    clip = sorted((sample_dir / "fma_small").rglob("*.mp3"))[0]
    done = _fmadask(env, "predict", f"{out}/classical", str(clip))
    assert done.returncode == 0, done.stderr[-2000:]
    want = format_predictions(predict(tmp_path / "local" / "classical", [clip]))
    assert done.stdout.splitlines() == want
    _cnn_from_and_to_s3(s3_server, out, env, isolated_cluster, local_client, tmp_path, clip)


#: A tiny CNN run (seconds): 2 epochs of 1 s segments, a narrow net, 2 ranks.
TINY_CNN = {"arch": "naive_bn", "epochs": 2, "ranks": 2, "segment_seconds": 1.0, "crops": 1,
            "batch_size": 4, "width": 4, "seed": 0}


def _weights(data: bytes) -> dict:
    import torch

    return {k: v.numpy().tobytes()
            for k, v in torch.load(io.BytesIO(data), weights_only=True).items()}


def _cnn_from_and_to_s3(s3_server, out: str, env: dict, cluster: str, local_client,
                        tmp_path: Path, clip: Path) -> None:
    """``fmadask cnn s3://...`` on the isolated workers (shards through each worker's cache,
    outputs uploaded), equal to the same training on a local copy of the run folder; then
    ``fmadask predict`` from the bucket's CNN folder."""
    from fmadask import storage
    from fmadask.dl.config import TrainConfig
    from fmadask.dl.launch import run_cnn
    from fmadask.predict import format_predictions, predict

    copy = storage.download_folder(out, tmp_path / "copy", s3_server.options)
    flags = [a for k, v in TINY_CNN.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    # The cache is a folder of each worker's own (their view of the test's folder is a tmpfs).
    done = _fmadask(env, "cnn", out, *flags, "--cache-dir", str(tmp_path / "worker-cache"),
                    "--scheduler", cluster)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"outputs in {out}/cnn" in done.stdout
    training = TrainConfig(**{k: v for k, v in TINY_CNN.items() if k != "ranks"})
    run_cnn(copy, training, local_client, ranks=TINY_CNN["ranks"], progress=False)
    fs = s3_server.filesystem()
    timing = ["train_seconds", "segments_per_s"]
    pd.testing.assert_frame_equal(
        pd.read_csv(fs.open("e2e/runs/r1/cnn/metrics.csv")).drop(columns=timing),
        pd.read_csv(copy / "cnn" / "metrics.csv").drop(columns=timing))
    assert _weights(fs.cat_file("e2e/runs/r1/cnn/model.pt")) == \
        _weights((copy / "cnn" / "model.pt").read_bytes())
    assert not fs.exists("e2e/runs/r1/.fmadask.lock")
    done = _fmadask(env, "predict", f"{out}/cnn", str(clip))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == format_predictions(predict(copy / "cnn", [clip]))


def test_s3_cut_off_mid_job_ends_in_one_line_and_a_rerun_resumes(
        s3_server, s3_sample, isolated_cluster) -> None:
    relay = TcpRelay(s3_server.port)
    relay.start()
    fs = s3_server.filesystem()
    fs.mkdir("cutoff")
    out = "s3://cutoff/runs/r1"
    # Client and workers reach S3 through the relay (options passed to the workers as task
    # arguments override their AWS_ENDPOINT_URL).
    options = ["--storage-option", f"endpoint_url=http://127.0.0.1:{relay.port}",
               "--storage-option", "config_kwargs.retries.max_attempts=1"]
    proc = subprocess.Popen([str(BIN / "fmadask"), "featurize", s3_sample, "--out", out,
                             "--partition-size", "2", "--what", "features", "--scheduler",
                             isolated_cluster, *options],
                            env=_env(s3_server), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        fs.invalidate_cache()
        if len(fs.glob("cutoff/runs/r1/_partitions/part-*.json")) >= 2:
            break
        time.sleep(0.2)
    relay.stop()
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("fmadask: ") and "re-run" in last and "Traceback" not in err
    fs.invalidate_cache()
    finished = len(fs.glob("cutoff/runs/r1/_partitions/part-*.json"))
    assert finished >= 2
    # The lock was left behind by nobody: the client released it? It could not reach S3, so
    # the object may remain; a re-run on the same host takes a dead holder's lock over.
    relay.start()
    done = _fmadask(_env(s3_server), "featurize", s3_sample, "--out", out, "--partition-size",
                    "2", "--what", "features", "--scheduler", isolated_cluster, *options)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    summary = json.loads(fs.cat_file("cutoff/runs/r1/featurize.json"))["summary"]
    assert summary["partitions_skipped"] >= finished
    assert summary["partitions_complete"] == summary["partitions"]
    relay.stop()
