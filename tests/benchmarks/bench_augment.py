"""Benchmark: training throughput with the CNN recipe's augmentation against without it.

Run ``.venv/bin/python tests/benchmarks/bench_augment.py [--arch NAME] [--epochs E] [--rounds R]``.
On synthetic spectrogram shards (:mod:`fmadask.dl.synthetic`, 128 mel bands) it trains with 2 DDP
ranks on 2 Dask worker processes, in rotating order without augmentation (``off``), with the default recipe
(gain, label smoothing: ``recipe``) and with every ingredient (also SpecAugment masks and mixup:
``all``), ``R`` times each, and prints

(a) the cost of :func:`fmadask.dl.augment.augment_batch` alone per batch, in one process, with
    every ingredient, and the throughput of one training step (forward, backward, AdamW) with it
    against without (steps interleaved, medians);
(b) training segments per second of the whole job (median of the epochs after the first of each
    run, then the median over rounds) of each side, and their ratios to ``off`` (the target:
    >= 0.90).

Rounds rotate the order so that drift of a shared machine and the position in a round hit every
side alike; compare figures of one
run only.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one numeric thread per process, as on the workers

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import torch  # noqa: E402

SIDES = {"off": dict(gain_db=0.0, masks=0, mixup=0.0, label_smoothing=0.0), "recipe": {},
         "all": dict(masks=2, mixup=0.2)}


def augment_cost(batch: int, n_mels: int, frames: int, repeats: int = 200) -> float:
    """Milliseconds per call of augment_batch with every ingredient on one batch."""
    from fmadask.dl.augment import Augmentation, augment_batch, batch_generator

    aug = Augmentation(gain_db=6.0, masks=2, mixup=0.2, label_smoothing=0.1, db_per_unit=15.0)
    x, y = torch.randn(batch, 1, n_mels, frames), torch.randint(0, 8, (batch,))
    t0 = time.perf_counter()
    for step in range(repeats):
        augment_batch(x, y, 8, aug, batch_generator(0, 0, step, 0))
    return (time.perf_counter() - t0) / repeats * 1e3


def step_ratio(arch: str, batch: int, n_mels: int, frames: int, steps: int = 40) -> float:
    """Median time of a training step (forward, backward, AdamW) without augmentation over the
    median time with every ingredient, steps interleaved in one process."""
    import torch.nn.functional as F

    from fmadask.dl.augment import Augmentation, augment_batch, batch_generator
    from fmadask.dl.nets import build_net

    net = build_net(arch, 8, n_mels, frames)
    opt = torch.optim.AdamW(net.parameters())
    aug = Augmentation(gain_db=6.0, masks=2, mixup=0.2, label_smoothing=0.1, db_per_unit=15.0)
    x, y = torch.randn(batch, 1, n_mels, frames), torch.randint(0, 8, (batch,))
    times: dict[bool, list[float]] = {False: [], True: []}
    for step in range(steps):
        for augmented in (step % 2 == 0, step % 2 == 1):
            t0 = time.perf_counter()
            xb, target = (augment_batch(x, y, 8, aug, batch_generator(0, 0, step, 0))
                          if augmented else (x, y))
            loss = F.cross_entropy(net(xb), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times[augmented].append(time.perf_counter() - t0)
    return statistics.median(times[False]) / statistics.median(times[True])


def training_rate(out_dir: Path) -> float:
    """Median training segments/s of the epochs after the first."""
    rates = pd.read_csv(out_dir / "metrics.csv")["segments_per_s"]
    return float(rates.iloc[1:].median() if len(rates) > 1 else rates.median())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks-per-genre", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--arch", default="naive_bn")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--segment-seconds", type=float, default=3.0)
    args = parser.parse_args(argv)

    from fmadask.cluster import get_client
    from fmadask.dl.dataset import segment_frames
    from fmadask.dl.config import TrainConfig
    from fmadask.dl.launch import run_cnn
    from fmadask.dl.synthetic import write_synthetic_spectrograms

    with tempfile.TemporaryDirectory(prefix="bench-augment-") as tmp:
        run_dir = Path(tmp)
        write_synthetic_spectrograms(run_dir, tracks_per_genre=args.tracks_per_genre,
                                     n_mels=128, seconds=10.0, tracks_per_shard=32)
        frames = segment_frames(args.segment_seconds, {"sr": 22050, "hop_length": 512})
        print(f"{8 * args.tracks_per_genre} synthetic clips, arch {args.arch}, batch "
              f"{args.batch_size} per rank, {args.segment_seconds:g} s segments (128 x {frames}), "
              f"{args.epochs} epochs x {args.rounds} rounds; {os.cpu_count()} CPUs")
        print(f"(a) augment_batch alone: {augment_cost(args.batch_size, 128, frames):.2f} ms "
              "per batch; one training step in one process, with every ingredient against "
              f"without: {step_ratio(args.arch, args.batch_size, 128, frames):.3f} of the "
              "throughput")
        rates: dict[str, list[float]] = {side: [] for side in SIDES}
        with get_client(workers=2, quiet=True) as client:
            names = list(SIDES)
            for r in range(args.rounds):
                # each round starts with another side, so no side always runs in one position
                for side in names[r % len(names):] + names[:r % len(names)]:
                    options = SIDES[side]
                    out = run_dir / f"{side}-{r}"
                    config = TrainConfig(arch=args.arch, epochs=args.epochs,
                                         batch_size=args.batch_size, patience=args.epochs,
                                         segment_seconds=args.segment_seconds,
                                         out_dir=str(out), **options)
                    run_cnn(run_dir, config, client, ranks=2, progress=False)
                    rates[side].append(training_rate(out))
                    print(f"    round {r + 1}: {side:<6} {rates[side][-1]:8.1f} segments/s")
        median = {side: statistics.median(r) for side, r in rates.items()}
        print("(b) training, 2 ranks, segments/s: " + ", ".join(
            f"{side} {rate:.1f} ({rate / median['off']:.2f} of off)"
            for side, rate in median.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
