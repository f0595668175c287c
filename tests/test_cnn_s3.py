"""The CNN stage on a run folder in object storage: shards read through each host's cache,
checkpoints, metrics and the model uploaded to the bucket, a killed run resumed from the bucket.

A real S3 server (moto's, the session fixture of conftest) holds a synthetic run folder (the
featurize job's exact format, :mod:`fmadask.dl.synthetic`); 2 DDP ranks train on the 2 worker
processes of the session's LocalCluster, which reach the server only through the storage
options handed to them. Every run is compared with the same run on the local folder: same
seed, same data, hence the same metrics and bit-identical weights.
"""
from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import cloudpickle
import pandas as pd
import pytest
import torch

from fmadask import storage
from fmadask.cli import main
from fmadask.dl.config import TrainConfig, config_options
from fmadask.dl.launch import TrainingError, run_cnn
from fmadask.errors import DataError

import cnn_callbacks
from cnn_callbacks import FailAt

cloudpickle.register_pickle_by_value(cnn_callbacks)

BUCKET = "cnn-s3"
#: Tiny, fast settings (a few seconds a run): 0.5 s segments of 16 mel bands, a narrow net.
TINY = TrainConfig(arch="naive_bn", epochs=2, segment_seconds=0.5, crops=1, batch_size=4,
                   width=4, lr=3e-3, patience=100, dist_timeout_s=120)
#: How it runs: 2 ranks, quietly.
RUN = dict(ranks=2, progress=False)
#: Columns of metrics.csv that measure time, not learning.
TIMING = ["train_seconds", "segments_per_s"]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fmadask.dl.synthetic import write_synthetic_spectrograms

    run_dir = tmp_path_factory.mktemp("cnn-s3") / "run"
    write_synthetic_spectrograms(run_dir, tracks_per_genre=3, n_mels=16, seconds=2.0,
                                 tracks_per_shard=6, seed=5)
    return run_dir


@pytest.fixture(scope="module")
def s3_run(s3_server, local_run: Path) -> str:
    """``local_run`` (spectrograms only) uploaded to the bucket: its URL."""
    return s3_server.upload_run(local_run, BUCKET)


@pytest.fixture(scope="module")
def on_disk(local_run: Path, local_client) -> dict:
    """The reference: the same training on the local run folder."""
    return run_cnn(local_run, replace(TINY, out_dir=str(local_run / "ref")), local_client,
                   **RUN)


def _metrics(location: str | Path, options: dict) -> pd.DataFrame:
    data = storage.read_bytes(storage.join(location, "metrics.csv"), options)
    return pd.read_csv(io.BytesIO(data)).drop(columns=TIMING)


def _weights(data: bytes) -> dict[str, bytes]:
    """The tensors of a saved state dict, as bytes (torch.save's archive also holds the name of
    the file it was first written to, a temporary name)."""
    state = torch.load(io.BytesIO(data), weights_only=True)
    return {k: v.numpy().tobytes() for k, v in state.items()}


def test_cnn_reads_a_bucket_through_the_cache_and_writes_back_as_on_disk(
        s3_server, s3_run: str, local_run: Path, on_disk: dict, local_client,
        tmp_path: Path) -> None:
    options = s3_server.options
    cache = tmp_path / "cache"
    remote = run_cnn(s3_run, replace(TINY, cache_dir=str(cache)), local_client,
                     storage_options=options, **RUN)
    assert remote["out_dir"] == f"{s3_run}/cnn"
    assert remote["ranks"][0]["params_digest"] == on_disk["ranks"][0]["params_digest"]
    assert remote["scores"] == on_disk["scores"]
    pd.testing.assert_frame_equal(_metrics(remote["out_dir"], options),
                                  _metrics(local_run / "ref", {}))
    fs = s3_server.filesystem()
    prefix = f"{BUCKET}/runs/r1/cnn/"
    uploaded = sorted(key[len(prefix):] for key in fs.find(prefix))
    local = sorted(p.relative_to(local_run / "ref").as_posix()
                   for p in (local_run / "ref").rglob("*") if p.is_file())
    assert uploaded == sorted(local + ["checkpoints/last.json"])
    assert _weights(fs.cat_file(prefix + "model.pt")) == \
        _weights((local_run / "ref" / "model.pt").read_bytes())
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(fs.cat_file(prefix + "predictions"
                                                                          ".parquet"))),
                                  pd.read_parquet(local_run / "ref" / "predictions.parquet"))
    # the ranks read the shards through the cache: every shard once, named by its checksum
    shards = sorted((local_run / "spectrograms").glob("part-*.npy"))
    assert len(list(cache.glob("*.npy"))) == len(shards)
    # credentials went to the ranks as task arguments, never into a file
    for key in fs.find(f"{BUCKET}/runs/r1"):
        assert options["secret"].encode() not in fs.cat_file(key), key
    assert not fs.exists(f"{BUCKET}/runs/r1/.fmadask.lock")
    # the model folder predicts from the bucket (fetched whole, checked by its card)
    from fmadask.dl.synthetic import GENRES
    from fmadask.predict import predict

    table = predict(remote["out_dir"], [tmp_path / "missing.mp3"], storage_options=options)
    assert table.attrs["classes"] == sorted(GENRES) and isinstance(table.loc[0, "error"], str)


@pytest.fixture(scope="module")
def killed(s3_server, s3_run: str, local_run: Path, local_client, tmp_path_factory) -> str:
    """The bucket run with rank 1 failing in the first step of epoch 2 (epoch 1 is uploaded)."""
    from fmadask.dl.dataset import open_spectrograms

    clips = len(open_spectrograms(local_run).tracks("training"))
    steps = -(-(-(-clips // RUN["ranks"])) // TINY.batch_size)   # per rank, padded
    out = f"{s3_run}/crash"
    with pytest.raises(TrainingError, match="rank 1 of 2"):
        run_cnn(s3_run, replace(TINY, out_dir=out,
                                cache_dir=str(tmp_path_factory.mktemp("cache"))),
                local_client, callbacks=[FailAt(1, steps)], storage_options=s3_server.options,
                **RUN)
    return out


def test_a_killed_bucket_run_resumes_from_the_bucket_as_if_never_interrupted(
        s3_server, killed: str, on_disk: dict, local_run: Path, local_client,
        tmp_path: Path) -> None:
    options = s3_server.options
    fs = s3_server.filesystem()
    key = killed.removeprefix("s3://")
    assert not fs.exists(f"{key}/model.json")                 # not complete: no card
    last = torch.load(io.BytesIO(fs.cat_file(f"{key}/checkpoints/last.pt")), weights_only=True)
    assert last["epochs_done"] == 1
    resumed = run_cnn(killed.rsplit("/", 1)[0],
                      replace(TINY, out_dir=killed, cache_dir=str(tmp_path / "cache")),
                      local_client, resume=True, storage_options=options, **RUN)
    assert resumed["ranks"][0]["epochs"] == [2]            # only the missing epochs ran
    assert resumed["ranks"][0]["params_digest"] == on_disk["ranks"][0]["params_digest"]
    pd.testing.assert_frame_equal(_metrics(killed, options), _metrics(local_run / "ref", {}))
    assert _weights(fs.cat_file(f"{key}/model.pt")) == \
        _weights((local_run / "ref" / "model.pt").read_bytes())


def test_a_bucket_checkpoint_that_does_not_match_its_record_is_refused(
        s3_server, s3_run: str, killed: str, local_client) -> None:
    options = s3_server.options
    fs = s3_server.filesystem()
    src, dst = killed.removeprefix("s3://"), f"{BUCKET}/runs/r1/damaged"
    for name in ("last.json", "best.pt"):
        fs.pipe_file(f"{dst}/checkpoints/{name}", fs.cat_file(f"{src}/checkpoints/{name}"))
    data = bytearray(fs.cat_file(f"{src}/checkpoints/last.pt"))
    data[len(data) // 2] ^= 0xFF                                 # torch would load this
    fs.pipe_file(f"{dst}/checkpoints/last.pt", bytes(data))
    with pytest.raises(DataError, match="do not match their record") as info:
        run_cnn(s3_run, replace(TINY, out_dir=f"s3://{dst}"), local_client, resume=True,
                storage_options=options, **RUN)
    assert "\n" not in str(info.value) and "--resume" in str(info.value)


def test_cnn_command_takes_the_cache_options_and_refuses_a_read_only_run_folder(capsys) -> None:
    from fmadask.cli import build_parser
    from fmadask.flags import resolve_options

    args = resolve_options(build_parser().parse_args(
        ["cnn", "s3://b/r", "--cache-dir", "/scratch/shards", "--cache-size", "2.5"]))
    config = TrainConfig(**config_options(args))
    assert (config.cache_dir, config.cache_size) == ("/scratch/shards", 2.5)
    assert config.shard_cache().max_bytes == int(2.5 * (1 << 30))
    assert main(["cnn", "s3://b/r", "--cache-size", "0"]) == 2
    assert "--cache-size" in capsys.readouterr().err
    assert main(["cnn", "https://user:pw@host/runs/r1", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "read-only" in err and "pw" not in err
