"""Benchmark of the CNN stage, all figures from one run.

Run ``.venv/bin/python tests/benchmarks/bench_cnn.py [--tracks-per-genre N] [--epochs E]
[--arch NAME]``. On synthetic spectrogram shards of FMA's shape (128 mel bands x 1292 frames per
30 s clip, float16, written in the featurize job's format by :mod:`fmadask.dl.synthetic`) it
prints

(a) data loading alone: training segments per second out of :class:`SegmentDataset` through a
    ``DataLoader`` in one process (random 3 s segments read from the memory-mapped shards,
    standardised, batched), and evaluation segments per second;
(b) training throughput with 1 DDP rank on 1 Dask worker process (gloo), (c) with 2 ranks on 2
    worker processes, in training segments per second of the whole job (all ranks), and the
    ratio c/b;
(d) where CUDA is available: one rank on the GPU (NCCL, float16 autocast + GradScaler), its
    segments per second and peak GPU memory; otherwise a line saying the GPU path was not
    measured.

Training rates are the median of the epochs after the first (``segments_per_s`` of
``metrics.csv``: training time only, validation excluded). Shards are read from the page cache
after the first pass. Timings on a shared machine are noisy: compare figures of one run only.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one numeric thread per process, as on the workers

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402


def loading_rate(run_dir: Path, seconds: float, batch_size: int) -> tuple[float, float]:
    """Training and evaluation segments per second of the dataset alone (one process)."""
    from fmadask.dl.dataset import (SegmentDataset, normalisation, open_spectrograms,
                                    segment_frames)

    spec = open_spectrograms(run_dir)
    seg = segment_frames(seconds, spec.params)
    mean, std = normalisation(spec, spec.tracks("training"))
    rates = []
    for split, train in (("training", True), ("validation", False)):
        ds = SegmentDataset(spec.root, spec.tracks(split), spec.classes, seg, train=train,
                            mean=mean, std=std)
        loader = DataLoader(ds, batch_size=batch_size, shuffle=train)
        for _ in loader:  # first pass: page cache warm-up
            pass
        best = 0.0
        for epoch in range(3):
            ds.set_epoch(epoch + 1)
            t0 = time.perf_counter()
            n = sum(len(x) for x, _, _ in loader)
            best = max(best, n / (time.perf_counter() - t0))
        rates.append(best)
    return rates[0], rates[1]


def training_rate(out_dir: Path) -> float:
    """Median training segments/s of the epochs after the first."""
    metrics = pd.read_csv(out_dir / "metrics.csv")
    rates = metrics["segments_per_s"].iloc[1:] if len(metrics) > 1 else metrics["segments_per_s"]
    return float(rates.median())


def gpu_run(run_dir: Path, args: argparse.Namespace) -> tuple[float, float]:
    """One rank on the GPU in this process: segments/s and peak GPU memory in MiB."""
    from fmadask.dl.config import TrainConfig
    from fmadask.dl.trainer import train

    torch.cuda.reset_peak_memory_stats()
    out = run_dir / "bench-gpu"
    train(run_dir, TrainConfig(arch=args.arch, epochs=args.epochs, device="cuda", amp=True,
                               batch_size=args.batch_size, segment_seconds=args.segment_seconds,
                               patience=args.epochs, out_dir=str(out)))
    return training_rate(out), torch.cuda.max_memory_allocated() / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks-per-genre", type=int, default=48,
                        help="synthetic 30 s clips per genre (60 %% training; default 48)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--arch", default="naive")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--segment-seconds", type=float, default=3.0)
    args = parser.parse_args(argv)

    from fmadask.cluster import get_client
    from fmadask.dl.config import TrainConfig
    from fmadask.dl.launch import run_cnn
    from fmadask.dl.synthetic import write_synthetic_spectrograms

    with tempfile.TemporaryDirectory(prefix="bench-cnn-") as tmp:
        run_dir = Path(tmp)
        t0 = time.perf_counter()
        write_synthetic_spectrograms(run_dir, tracks_per_genre=args.tracks_per_genre,
                                     n_mels=128, seconds=30.0, tracks_per_shard=32)
        print(f"synthetic shards: {8 * args.tracks_per_genre} clips of 128 x 1292 in "
              f"{time.perf_counter() - t0:.1f} s; arch {args.arch}, batch {args.batch_size} per "
              f"rank, {args.segment_seconds:g} s segments, {args.epochs} epochs; "
              f"{os.cpu_count()} CPUs, torch {torch.__version__}")
        load_train, load_eval = loading_rate(run_dir, args.segment_seconds, args.batch_size)
        print(f"(a) data loading alone: {load_train:8.0f} training segments/s, "
              f"{load_eval:8.0f} evaluation segments/s")

        rates = {}
        with get_client(workers=2, quiet=True) as client:
            for ranks in (1, 2):
                out = run_dir / f"bench-{ranks}"
                config = TrainConfig(arch=args.arch, epochs=args.epochs,
                                     batch_size=args.batch_size, patience=args.epochs,
                                     segment_seconds=args.segment_seconds, out_dir=str(out))
                run_cnn(run_dir, config, client, ranks=ranks, progress=False)
                rates[ranks] = training_rate(out)
        print(f"(b) training, 1 rank  (gloo, CPU): {rates[1]:8.1f} segments/s")
        print(f"(c) training, 2 ranks (gloo, CPU): {rates[2]:8.1f} segments/s   "
              f"c/b = {rates[2] / rates[1]:.2f}")
        if torch.cuda.is_available():
            rate, mib = gpu_run(run_dir, args)
            print(f"(d) training, 1 rank on {torch.cuda.get_device_name()} (NCCL, AMP): "
                  f"{rate:8.1f} segments/s, peak GPU memory {mib:.0f} MiB")
        else:
            print("(d) GPU path not measured: no CUDA device here")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
