"""Write an FMA-large-shaped data set of any size (:mod:`fmadask.fma.scale`) and time it.

Run ``.venv/bin/python tests/benchmarks/fma_large.py OUT [--tracks 106574] [--clips 300]
[--seconds 2]``. The scale benchmark (``bench_scale.py``) makes its data sets the same way; this
tool makes one to keep (FMA large's shape at full size takes a few minutes: it is file-system
work, a few hundred clips synthesised and a hard link per track and subset).

It is a benchmark tool, not a ``fmadask sample`` option: its audio is a few hundred clips reused
under every id, so a model trained on it learns nothing of FMA; it measures what grows with the
number of tracks (planning, task overhead, listings, memory), not the music.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fmadask.fma.scale import LARGE_TRACKS, make_large_sample  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="new or empty folder (or an earlier sample's)")
    parser.add_argument("--tracks", type=int, default=LARGE_TRACKS)
    parser.add_argument("--clips", type=int, default=300, help="distinct clips in the pool")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of a pool clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=0, help="0: one per core")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    make_large_sample(args.out, tracks=args.tracks, clips=args.clips, seconds=args.seconds,
                      seed=args.seed, processes=args.processes)
    seconds = time.perf_counter() - start
    print(f"{args.tracks:,} tracks ({args.clips} clips of {args.seconds:g} s) written to "
          f"{args.out} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
