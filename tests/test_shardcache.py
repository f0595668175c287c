"""The per-host shard cache and the CNN's dataset over a run folder in object storage.

A real S3 server (moto's, on 127.0.0.1, the session fixture of conftest) serves a synthetic run
folder uploaded with :mod:`fmadask.storage`; the cache is a real folder. "The store is not
asked" is shown by asking through an endpoint where nothing listens.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
from pathlib import Path

import pytest

from fmadask import storage
from fmadask.errors import ConfigError, DataError
from fmadask.integrity import file_digest
from fmadask.shardcache import ShardCache, default_root

BUCKET = "shardcache"


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic run folder of 4 spectrogram shards (8 clips each) on local disk."""
    from fmadask.dl.synthetic import write_synthetic_spectrograms

    run_dir = tmp_path_factory.mktemp("shardcache") / "run"
    write_synthetic_spectrograms(run_dir, tracks_per_genre=4, tracks_per_shard=8, seed=3)
    return run_dir


@pytest.fixture(scope="module")
def s3_run(s3_server, local_run: Path) -> str:
    """``local_run`` uploaded to the S3 server: its URL."""
    return s3_server.upload_run(local_run, BUCKET)


def _shards(local_run: Path) -> list[Path]:
    return sorted((local_run / "spectrograms").glob("part-*.npy"))


def _dead(s3_server) -> dict:
    """Storage options of an endpoint where nothing listens: any request fails."""
    return {**s3_server.options, "endpoint_url": "http://127.0.0.1:1",
            "config_kwargs": {"retries": {"max_attempts": 1}}}


def _copies(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if not p.name.startswith("."))


def _fetch(cache: ShardCache, s3_run: str, shard: Path, options: dict) -> Path:
    record = file_digest(shard)
    return cache.fetch(f"{s3_run}/spectrograms/{shard.name}", record["size"], record["sha256"],
                       options)


# ------------------------------------------------------------------------------- the cache


def test_default_root_follows_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FMADASK_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "xdg" / "fmadask" / "shards"
    monkeypatch.setenv("FMADASK_CACHE", str(tmp_path / "mine"))
    assert default_root() == tmp_path / "mine"
    assert ShardCache().root == tmp_path / "mine"          # resolved where it is used
    assert ShardCache(tmp_path / "given").root == tmp_path / "given"


def test_the_cache_options_build_the_cache(tmp_path: Path) -> None:
    from fmadask.dl.config import TrainConfig
    from fmadask.options import check

    cache = TrainConfig(cache_dir=str(tmp_path / "c"), cache_size=0.5).shard_cache()
    assert cache.root == tmp_path / "c" and cache.max_bytes == 1 << 29
    assert TrainConfig().shard_cache().max_bytes == 50 << 30
    with pytest.raises(ConfigError, match="cache_size must be at least"):
        check("cnn.cache_size", 0.0)


def test_fetch_downloads_verifies_and_then_serves_without_the_store(
        s3_server, s3_run: str, local_run: Path, tmp_path: Path) -> None:
    shard = _shards(local_run)[0]
    cache = ShardCache(tmp_path / "cache", 1 << 30)
    path = _fetch(cache, s3_run, shard, s3_server.options)
    assert path.read_bytes() == shard.read_bytes()
    assert path.name == file_digest(shard)["sha256"] + ".npy"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    # Another process (another cache object on the same folder) finds it without the store.
    again = ShardCache(tmp_path / "cache", 1 << 30)
    assert _fetch(again, s3_run, shard, _dead(s3_server)) == path
    assert pickle.loads(pickle.dumps(again)).root == again.root


def test_a_store_file_that_does_not_match_its_record_is_refused_in_one_line(
        s3_server, s3_run: str, local_run: Path, tmp_path: Path) -> None:
    good, other = _shards(local_run)[:2]
    url = f"s3://{BUCKET}/changed/spectrograms/{good.name}"
    storage.write_bytes(url, other.read_bytes(), s3_server.options)   # replaced upstream
    record = file_digest(good)
    cache = ShardCache(tmp_path / "cache", 1 << 30)
    with pytest.raises(DataError) as exc:
        cache.fetch(url, record["size"], record["sha256"], s3_server.options)
    message = str(exc.value)
    assert "\n" not in message and good.name in message and "does not match" in message
    assert _copies(cache.root) == []                      # nothing published
    assert not [p for p in cache.root.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(DataError, match="valid SHA-256"):
        cache.fetch(url, record["size"], "../../etc/passwd", s3_server.options)


def test_a_corrupt_or_truncated_copy_is_downloaded_again(s3_server, s3_run: str,
                                                         local_run: Path, tmp_path: Path) -> None:
    shard = _shards(local_run)[1]
    cache = ShardCache(tmp_path / "cache", 1 << 30)
    path = _fetch(cache, s3_run, shard, s3_server.options)
    for damage in (lambda data: data[:100] + bytes([data[100] ^ 1]) + data[101:],   # same size
                   lambda data: data[:-10]):                                       # truncated
        os.chmod(path, 0o644)
        path.write_bytes(damage(shard.read_bytes()))
        assert _fetch(cache, s3_run, shard, s3_server.options) == path
        assert file_digest(path) == file_digest(shard)


def test_eviction_keeps_the_bound_and_drops_the_least_recently_used(
        s3_server, s3_run: str, local_run: Path, tmp_path: Path) -> None:
    shards = _shards(local_run)
    size = shards[0].stat().st_size
    assert all(s.stat().st_size == size for s in shards)
    cache = ShardCache(tmp_path / "cache", int(2.5 * size))            # room for two
    first, second = (_fetch(cache, s3_run, s, s3_server.options) for s in shards[:2])
    _fetch(cache, s3_run, shards[0], s3_server.options)                # first used again
    third = _fetch(cache, s3_run, shards[2], s3_server.options)
    assert _copies(cache.root) == sorted([first, third])               # second was the oldest
    for shard in shards:
        path = _fetch(cache, s3_run, shard, s3_server.options)
        assert path.is_file() and sum(p.stat().st_size for p in _copies(cache.root)) <= 2.5 * size
    assert len(list((cache.root / ".stamps").iterdir())) == 2          # no stamp outlives its copy
    with pytest.raises(ConfigError, match="cnn.cache_size") as exc:
        _fetch(ShardCache(tmp_path / "small", size - 1), s3_run, shards[0], s3_server.options)
    assert "\n" not in str(exc.value)


def _fill(root: str, max_bytes: int, s3_run: str, shards: list[str], options: dict,
          rounds: int) -> list[str]:
    """In a child process: fetch every shard ``rounds`` times and hash what each fetch
    returned (fetched again when the other process evicted it before it was opened)."""
    cache = ShardCache(root, max_bytes)
    seen = []
    for _ in range(rounds):
        for shard in shards:
            for attempt in range(3):
                path = _fetch(cache, s3_run, Path(shard), options)
                try:
                    seen.append(file_digest(path)["sha256"])
                    break
                except FileNotFoundError:
                    if attempt == 2:
                        raise
    return seen


def test_two_processes_fill_one_cache_concurrently(s3_server, s3_run: str, local_run: Path,
                                                   tmp_path: Path) -> None:
    shards = [str(p) for p in _shards(local_run)]
    size = Path(shards[0]).stat().st_size
    bound = int(3.5 * size)                           # eviction happens while both fetch
    root = str(tmp_path / "cache")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = [pool.apply_async(_fill, (root, bound, s3_run, order, s3_server.options, 3))
                   for order in (shards, shards[::-1])]
        seen = [r.get(timeout=240) for r in results]
    want = {file_digest(s)["sha256"] for s in shards}
    assert all(set(s) == want for s in seen)
    copies = _copies(Path(root))
    assert copies and sum(p.stat().st_size for p in copies) <= bound
    for path in copies:
        assert path.name == file_digest(path)["sha256"] + ".npy"
    assert not [p for p in Path(root).iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------ the dataset


def test_segment_dataset_over_s3_equals_local(s3_server, s3_run: str, local_run: Path,
                                              tmp_path: Path) -> None:
    import pandas as pd
    import torch

    from fmadask.dl.dataset import (SegmentDataset, ShardFiles, ShardReader, normalisation,
                                    open_spectrograms, segment_frames)

    cache = ShardCache(tmp_path / "cache", 1 << 30)
    local = open_spectrograms(local_run)
    remote = open_spectrograms(s3_run, storage_options=s3_server.options, cache=cache)
    assert local.shards.cache is None and local.root == local_run / "spectrograms"
    assert remote.root == f"{s3_run}/spectrograms" and remote.params == local.params
    pd.testing.assert_frame_equal(remote.index, local.index)
    assert s3_server.options["secret"] not in repr(remote.shards)
    mean, std = normalisation(local, local.tracks("training"))
    assert normalisation(remote, remote.tracks("training")) == (mean, std)
    seg = segment_frames(2.0, local.params)
    for split, train in (("training", True), ("validation", False), ("test", False)):
        a = SegmentDataset(local.shards, local.tracks(split), local.classes, seg, train, mean, std)
        b = SegmentDataset(remote.shards, remote.tracks(split), remote.classes, seg, train, mean,
                           std)
        b = pickle.loads(pickle.dumps(b))            # as a DataLoader worker gets it
        for epoch in (0, 1):
            a.set_epoch(epoch)
            b.set_epoch(epoch)
            assert len(a) == len(b) > 0
            for i in range(len(a)):
                (xa, ya, ta), (xb, yb, tb) = a[i], b[i]
                assert torch.equal(xa, xb) and (ya, ta) == (yb, tb)
    # Warm: a new process's reader maps the cached copies without asking the store.
    warm = ShardReader(ShardFiles(remote.root, remote.shards.records, _dead(s3_server), cache))
    for shard in sorted(local.index["shard"].unique()):
        assert warm.read(shard, 0, 0, 8).shape == (local.params["n_mels"], 8)


def test_a_shard_changed_in_the_store_is_refused_naming_it(s3_server, local_run: Path,
                                                           tmp_path: Path) -> None:
    from fmadask.dl.dataset import ShardReader, open_spectrograms

    url = f"s3://{BUCKET}/runs/changed"
    storage.upload_folder(local_run, url, s3_server.options)
    victim = _shards(local_run)[2]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF                                       # same size: the index still reads
    storage.write_bytes(f"{url}/spectrograms/{victim.name}", bytes(data), s3_server.options)
    spec = open_spectrograms(url, storage_options=s3_server.options,
                             cache=ShardCache(tmp_path / "cache", 1 << 30))
    reader = ShardReader(spec.shards)
    reader.read(_shards(local_run)[0].name, 0, 0, 4)       # the others are fine
    with pytest.raises(DataError) as exc:
        reader.read(victim.name, 0, 0, 4)
    assert "\n" not in str(exc.value) and victim.name in str(exc.value)
    with pytest.raises(ValueError, match="open_spectrograms"):
        ShardReader(f"{url}/spectrograms")
