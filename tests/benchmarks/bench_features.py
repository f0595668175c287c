"""Benchmark of the per-track work on 30 s, 44.1 kHz stereo mp3 clips, in one process.

Run:  .venv/bin/python tests/benchmarks/bench_features.py [--clips N] [--rounds R] [--dir DIR]

Prints, measured in one run after a warm-up (numba JIT, FFT plans, our CQT filter banks):

- (a) the straightforward recipe: ``librosa.load`` + ``tests/reference_recipe.compute_features``;
- (b) ours: ``fmadask.audio.load_audio`` + ``fmadask.features.fma_features``;
- (e) decode alone (``load_audio``): the floor of any per-track pipeline;
- the features alone (signals decoded beforehand) for (a) and (b);
- the ratios b/a, computed within each round and reported as the median over rounds, so
  that load from other processes on the machine, which drifts between rounds, cancels out.

BLAS/OpenMP threads are pinned to 1 (as on the Dask workers). The per-track functions are
importable (``make_clips``, ``reference_track``, ``our_track``, ``decode_track``) for the Dask
benchmark (1 vs 2 workers), which lives with the pipeline.

Not collected by pytest (``tests/benchmarks`` is excluded in pyproject.toml).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fmadask.audio import DECODER, load_audio  # noqa: E402
from fmadask.features import fma_features  # noqa: E402
from fmadask.features import _cqt  # noqa: E402
from fmadask.fma.sample import RECIPES, SAMPLE_RATE, synthesize  # noqa: E402


def make_clips(out_dir: str | Path, n: int, seconds: float = 30.0, seed: int = 0) -> list[Path]:
    """Write ``n`` stereo 44.1 kHz mp3 clips of synthetic music (one genre recipe each, cycling).

    Existing files of the same name are reused.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = out / f"bench_{seconds:g}s_{seed}_{i:03d}.mp3"
        if not path.exists():
            audio = synthesize(RECIPES[i % len(RECIPES)], seconds, np.random.default_rng([seed, i]))
            sf.write(path, audio, SAMPLE_RATE, format="MP3")
        paths.append(path)
    return paths


def reference_track(path: str | Path) -> np.ndarray:
    """(a) The straightforward recipe: librosa.load, then FMA's feature code written plainly."""
    import librosa
    import reference_recipe

    y, sr = librosa.load(path, sr=None, mono=True)
    return reference_recipe.compute_features(y, sr).to_numpy()


def our_track(path: str | Path) -> np.ndarray:
    """(b) Ours: the project's decoder and per-track features."""
    y, sr = load_audio(path)
    return fma_features(y, sr)


def decode_track(path: str | Path) -> int:
    """(e) Decoding alone."""
    return len(load_audio(path)[0])


def _seconds_per_item(fn: Callable, items: Sequence) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - start) / len(items)


def main(argv: Sequence[str] | None = None) -> None:
    import librosa
    import reference_recipe

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=4, help="clips per measurement (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--seconds", type=float, default=30.0, help="clip length (default 30)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "fmadask-bench",
                        help="where the clips are written (reused between runs)")
    args = parser.parse_args(argv)

    paths = make_clips(args.dir, args.clips, args.seconds)
    signals = [load_audio(p) for p in paths]
    ref_features = lambda s: reference_recipe.compute_features(*s)  # noqa: E731
    our_features = lambda s: fma_features(*s)  # noqa: E731
    measures: dict[str, tuple[Callable, Sequence]] = {
        "(a) reference: librosa.load + recipe": (reference_track, paths),
        "(b) ours: load_audio + fma_features": (our_track, paths),
        "(e) decode alone: load_audio": (decode_track, paths),
        "    reference recipe, features only": (ref_features, signals),
        "    fma_features, features only": (our_features, signals),
    }

    # Warm-up: numba's JIT (in librosa), FFT plans, and our CQT filter banks (one per sample rate
    # and tuning; a real job sees every tuning value within its first few hundred tracks).
    start = time.perf_counter()
    for fn, items in measures.values():
        for item in items:
            fn(item)
    warm_up = time.perf_counter() - start
    cached_banks = _cqt._plan.cache_info().currsize
    _cqt._plan.cache_clear()
    start = time.perf_counter()
    our_features(signals[0])
    cold = time.perf_counter() - start
    our_features(signals[0])

    times: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(args.rounds):
        for name, (fn, items) in measures.items():
            times[name].append(_seconds_per_item(fn, items))

    print(f"{args.clips} clips of {args.seconds:g} s, 44.1 kHz stereo mp3, {args.rounds} rounds, "
          f"one process, BLAS threads = 1; warm-up {warm_up:.1f} s not counted")
    print(f"librosa {librosa.__version__}, numpy {np.__version__}; decoder: {DECODER}")
    print(f"{'':40s} {'clips/s':>8s} {'ms/clip':>8s}   (median over rounds; min..max ms)")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:40s} {1 / med:8.2f} {1000 * med:8.1f}   "
              f"({1000 * min(values):.0f}..{1000 * max(values):.0f})")

    def ratio(a: str, b: str) -> tuple[float, list[float]]:
        per_round = [x / y for x, y in zip(times[a], times[b])]
        return statistics.median(per_round), per_round

    end_to_end, rounds_e2e = ratio("(a) reference: librosa.load + recipe",
                                   "(b) ours: load_audio + fma_features")
    features_only, rounds_feat = ratio("    reference recipe, features only",
                                       "    fma_features, features only")
    print(f"b/a (speed-up, decode + features): {end_to_end:.2f}  "
          f"(rounds: {', '.join(f'{r:.2f}' for r in rounds_e2e)})")
    print(f"b/a (speed-up, features only):     {features_only:.2f}  "
          f"(rounds: {', '.join(f'{r:.2f}' for r in rounds_feat)})")
    print(f"first clip with empty CQT filter-bank cache: {1000 * cold:.0f} ms "
          f"({cached_banks} banks were cached after warm-up)")


if __name__ == "__main__":
    main()
