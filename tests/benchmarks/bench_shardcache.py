"""Benchmark: CNN training segments read from a run folder in object storage through the shard
cache (cold and warm) against local disk, one run.

Run ``PYTHONPATH=. .venv/bin/python tests/benchmarks/bench_shardcache.py [--tracks-per-genre N]
[--repeat R]``. It writes synthetic spectrogram shards of FMA's shape (128 mel bands x 1292
frames per 30 s clip, float16, :mod:`fmadask.dl.synthetic`), starts moto's standalone S3 server
on 127.0.0.1, uploads the run folder to a bucket, and reads one epoch of training segments (one
random 3 s segment per training clip, standardised, batched by a ``DataLoader`` in this process)
through :class:`~fmadask.dl.dataset.SegmentDataset`, each time from a new dataset object (fresh
memory maps, as a new rank has), interleaved ``--repeat`` times (best of each kept; the ways that
need no download five times per round):

(a) the local run folder (page cache warm: a first pass is not timed),
(b) the ``s3://`` run folder with an empty cache: every shard is downloaded, hashed and
    published on first use inside the timed epoch (the first epoch of a rank on a fresh host),
(c) the ``s3://`` run folder with that cache filled (a new rank or a later run on the host: each
    shard's copy is checked against its stamp and mapped on first use),
(d) and (e): the next epoch of the dataset objects of (c) and (a), maps open: what a rank pays
    after its first epoch.

It prints segments/s of each and the ratios b/a, c/a and d/e; ``open_spectrograms`` (index and
records, read from the store in both b and c) is timed apart. moto is a Python server on the same
cores, so (b) is a floor for a real object store; compare figures of one run only.

With ``--cnn`` it also times whole ``fmadask cnn`` jobs (:func:`fmadask.dl.launch.run_cnn`, 2 DDP
ranks on a local cluster of 2 worker processes, ``--cnn-epochs`` epochs, outputs written where the
run folder is): on the ``s3://`` run folder with the workers' shard cache empty (cold), again
with it filled (warm), and on the local folder. Its rate is the job's training segments over the
job's wall time (start-up, normalisation, training, scoring and, for s3, uploads included): the
cache is filled while the first rank's setup computes the normalisation, not inside an epoch.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one numeric thread per process, as on the workers

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/ for conftest helpers


def epoch_rate(ds, epoch: int, batch_size: int) -> float:
    """Training segments per second of one epoch of the dataset ``ds``."""
    from torch.utils.data import DataLoader

    ds.set_epoch(epoch)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True)
    t0 = time.perf_counter()
    n = sum(len(x) for x, _, _ in loader)
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks-per-genre", type=int, default=24,
                        help="synthetic 30 s clips per genre (60 %% training; default 24)")
    parser.add_argument("--tracks-per-shard", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--segment-seconds", type=float, default=3.0)
    parser.add_argument("--cnn", action="store_true",
                        help="also time whole `fmadask cnn` jobs: s3 cold, s3 warm, local")
    parser.add_argument("--cnn-epochs", type=int, default=1)
    args = parser.parse_args(argv)

    from conftest import S3Server

    from fmadask import storage
    from fmadask.dl.dataset import (SegmentDataset, normalisation, open_spectrograms,
                                    segment_frames)
    from fmadask.dl.synthetic import write_synthetic_spectrograms
    from fmadask.shardcache import ShardCache

    with tempfile.TemporaryDirectory(prefix="bench-shardcache-") as tmp:
        run_dir = Path(tmp) / "run"
        write_synthetic_spectrograms(run_dir, tracks_per_genre=args.tracks_per_genre,
                                     n_mels=128, seconds=30.0, sr=22050, hop_length=512,
                                     tracks_per_shard=args.tracks_per_shard)
        shard_bytes = sum(p.stat().st_size for p in (run_dir / "spectrograms").glob("*.npy"))
        server = S3Server()
        server.start()
        try:
            server.filesystem().mkdir("bench")
            url = "s3://bench/runs/r1"
            storage.upload_folder(run_dir, url, server.options)
            local = open_spectrograms(run_dir)
            seg = segment_frames(args.segment_seconds, local.params)
            mean, std = normalisation(local, local.tracks("training"))

            def dataset(spec):      # a new one: its own memory maps, as a new rank has
                return SegmentDataset(spec.shards, spec.tracks("training"), spec.classes, seg,
                                      train=True, mean=mean, std=std)

            epoch_rate(dataset(local), 0, args.batch_size)          # page cache warm-up
            best = dict.fromkeys(("local", "s3 cold", "s3 warm", "s3 next epoch",
                                  "local next epoch"), 0.0)
            opens = []
            for r in range(args.repeat):
                cache = ShardCache(Path(tmp) / f"cache-{r}", 1 << 34)
                t0 = time.perf_counter()
                remote = open_spectrograms(url, storage_options=server.options, cache=cache)
                opens.append(time.perf_counter() - t0)
                rates = {"s3 cold": epoch_rate(dataset(remote), 1, args.batch_size)}
                # An epoch is short: the ways that need no download are timed five times.
                for k in range(5):
                    plain = dataset(local)
                    rates["local"] = epoch_rate(plain, k + 2, args.batch_size)
                    rates["local next epoch"] = epoch_rate(plain, k + 3, args.batch_size)
                    warm = dataset(remote)
                    rates["s3 warm"] = epoch_rate(warm, k + 2, args.batch_size)
                    rates["s3 next epoch"] = epoch_rate(warm, k + 3, args.batch_size)
                    best = {name: max(best[name], rates[name]) for name in best}
                shutil.rmtree(cache.root)
            jobs = (cnn_jobs(run_dir, url, server.options, Path(tmp) / "worker-cache", args)
                    if args.cnn else None)
        finally:
            server.stop()

    n_train = len(local.tracks("training"))
    print(f"{len(local.index)} clips of 30 s ({n_train} training) in "
          f"{local.index['shard'].nunique()} shards, {shard_bytes / 2**20:.1f} MiB; "
          f"{args.segment_seconds:g} s segments, batch {args.batch_size}, {args.repeat} rounds")
    print(f"open_spectrograms of the s3:// run folder: {min(opens):.2f} s")
    for name, rate in best.items():
        print(f"{name:16s} {rate:8.0f} segments/s")
    print(f"ratio s3 cold / local: {best['s3 cold'] / best['local']:.3f}")
    print(f"ratio s3 warm / local: {best['s3 warm'] / best['local']:.3f}")
    print(f"ratio s3 next epoch / local next epoch: "
          f"{best['s3 next epoch'] / best['local next epoch']:.3f}")
    if jobs:
        print(f"fmadask cnn, naive, {args.cnn_epochs} epoch(s), 2 ranks on 2 local workers "
              "(training segments / job wall time):")
        for name, (rate, seconds) in jobs.items():
            print(f"  {name:14s} {rate:8.1f} segments/s ({seconds:.1f} s)")
        for name in ("s3 cold", "s3 warm"):
            print(f"ratio cnn {name} / local: {jobs[name][0] / jobs['local'][0]:.3f}")
    return 0


def cnn_jobs(run_dir: Path, url: str, options: dict, cache_dir: Path,
             args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    """``{way: (segments/s, seconds)}`` of whole run_cnn jobs: s3 cold, s3 warm, local."""
    from fmadask.cluster import get_client
    from fmadask.dl.dataset import open_spectrograms
    from dataclasses import replace

    from fmadask.dl.config import TrainConfig
    from fmadask.dl.launch import run_cnn

    clips = len(open_spectrograms(run_dir).tracks("training"))   # a segment each per epoch

    config = TrainConfig(arch="naive", epochs=args.cnn_epochs, batch_size=args.batch_size,
                         segment_seconds=args.segment_seconds, width=8, patience=100)
    out = {}
    with get_client(workers=2, quiet=True) as client:
        # warm the workers
        run_cnn(run_dir, replace(config, epochs=1), client, ranks=2, progress=False)
        for name, where, extra in (("s3 cold", url, {"storage_options": options}),
                                   ("s3 warm", url, {"storage_options": options}),
                                   ("local", run_dir, {})):
            t0 = time.perf_counter()
            result = run_cnn(where, replace(config, cache_dir=str(cache_dir)), client, ranks=2,
                             progress=False, **extra)
            seconds = time.perf_counter() - t0
            out[name] = (clips * len(result["ranks"][0]["epochs"]) / seconds, seconds)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
