"""Benchmark: the featurize job reading its mp3s from an S3 server against local disk, one run.

Run ``PYTHONPATH=. .venv/bin/python tests/benchmarks/bench_storage.py [--tracks-per-genre N]
[--repeat R]``. It writes an FMA-shaped sample (30 s, 44.1 kHz stereo clips), starts moto's
standalone S3 server on 127.0.0.1, uploads the sample to a bucket, and on one LocalCluster of 2
worker processes runs ``featurize`` (features only) three ways, interleaved ``--repeat`` times
(best of each kept):

(a) local data folder -> local run folder,
(b) ``s3://`` data folder -> local run folder (each worker fetches each mp3 itself),
(c) ``s3://`` data folder -> ``s3://`` run folder (partitions staged and uploaded),

and prints tracks/s (good clips over the job's timed part, warm-up excluded) and the ratios
b/a and c/a. moto is a Python server on the same two cores, so the ratios are a floor for a real
object store; compare figures of one run only.

CNN segments/s from an ``s3://`` run folder with a cold and a warm shard cache:
``bench_shardcache.py``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/ for conftest helpers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracks-per-genre", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    from conftest import S3Server

    from fmadask.cluster import get_client
    from fmadask.fma.sample import make_sample
    from fmadask.pipeline import run_featurize
    from fmadask.pipeline.featurize import FeaturizeConfig

    with tempfile.TemporaryDirectory() as tmp:
        data = make_sample(Path(tmp) / "fma", tracks_per_genre=args.tracks_per_genre,
                           seconds=30.0, seed=0)
        server = S3Server()
        server.start()
        try:
            fs = server.filesystem()
            fs.mkdir("bench")
            fs.put(f"{data}/", "bench/fma/", recursive=True)
            best: dict[str, float] = {}
            with get_client(workers=2, quiet=True) as client:
                for r in range(args.repeat):
                    for name, source, out in (
                            ("local", data, Path(tmp) / f"run-local-{r}"),
                            ("s3 data", "s3://bench/fma", Path(tmp) / f"run-s3-{r}"),
                            ("s3 data + run", "s3://bench/fma", f"s3://bench/runs/r{r}")):
                        summary = run_featurize(source, out=out, client=client,
                                                config=FeaturizeConfig(what=["features"],
                                                                       partition_size=8),
                                                progress=False, storage_options=server.options)
                        rate = summary["ok"] / summary["seconds"]
                        best[name] = max(best.get(name, 0.0), rate)
                        print(f"{name:>14}: {rate:6.2f} tracks/s (round {r + 1})", flush=True)
        finally:
            server.stop()
    print(f"best of {args.repeat}: " + ", ".join(f"{k} {v:.2f}" for k, v in best.items()))
    print(f"ratio s3 data / local = {best['s3 data'] / best['local']:.2f}; "
          f"s3 data + run / local = {best['s3 data + run'] / best['local']:.2f}")


if __name__ == "__main__":
    main()
