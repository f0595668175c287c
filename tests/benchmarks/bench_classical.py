"""Benchmark of the classical stage at FMA medium and large scale.

Two measurements, each printed as a table:

``growth``
    Per model (the study's ten and the scale rule's substitutes), the CPU time of one fit, in
    this process, one thread, on FMA-medium-shaped synthetic tables (518 features, 16 genres in FMA
    medium's proportions) of ``--sizes`` training rows. A model whose next fit is predicted to
    take longer than ``--budget`` seconds is not run at that size. The growth exponent ``b`` of
    ``t = a n^b`` is fitted by least squares on the log of the measured sizes, and the time at
    ``--targets`` rows (FMA small's 6,400, medium's ~20,000, large's ~85,000 training rows) is
    extrapolated from it where not measured (marked ``*``).

``stage``
    The whole stage (``fmadask.ml.train``: ten models + a ``--n-iter``-candidate
    ``--cv``-fold XGBoost random search, no unsupervised views) on a ``--rows``-track table on
    ``--stage-workers`` local workers; then the search alone on each of ``--search-workers``
    worker counts, on ``--search-rows`` tracks, with the speed-up against the first.

Numbers are synthetic (Gaussian features around a random mean per genre): timing does not depend
on what they mean. Cluster start-up and the workers' first imports are outside the timings.

Run::

    .venv/bin/python tests/benchmarks/bench_classical.py growth
    .venv/bin/python tests/benchmarks/bench_classical.py stage --rows 25000
    .venv/bin/python tests/benchmarks/bench_classical.py growth --sizes 500 1000 --budget 5  # quick
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np
import pandas as pd

#: FMA medium's 16 genres and their track counts.
MEDIUM_GENRES = {"Rock": 7103, "Electronic": 6314, "Experimental": 2251, "Hip-Hop": 2201,
                 "Folk": 1519, "Instrumental": 1350, "Pop": 1186, "International": 1018,
                 "Classical": 619, "Old-Time / Historic": 510, "Jazz": 384, "Country": 178,
                 "Soul-RnB": 154, "Spoken": 118, "Blues": 74, "Easy Listening": 21}


def medium_table(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` x 518 float32 features and genre codes in FMA medium's proportions (at least 10
    tracks per genre)."""
    total = sum(MEDIUM_GENRES.values())
    sizes = [max(10, round(rows * n / total)) for n in MEDIUM_GENRES.values()]
    rng = np.random.default_rng(seed)
    codes = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    means = rng.normal(scale=0.3, size=(len(sizes), 518))
    X = (rng.normal(size=(len(codes), 518)) + means[codes]).astype(np.float32)
    return X, codes.astype(np.int64)


def medium_dataset(rows: int, seed: int = 0):
    """A :class:`~fmadask.ml.data.Dataset` of :func:`medium_table`, split 80/10/10 by genre."""
    from fmadask.features import FEATURE_COLUMNS
    from fmadask.fma.splits import stratified_split
    from fmadask.ml.data import Dataset

    X, codes = medium_table(rows, seed)
    ids = pd.Index(np.arange(len(codes)) + 2, name="track_id")
    genre = pd.Series(np.asarray(list(MEDIUM_GENRES))[codes], index=ids, name="genre_top")
    return Dataset(pd.DataFrame(X, index=ids, columns=FEATURE_COLUMNS), genre,
                   stratified_split(genre, seed=42),
                   {"kind": "synthetic", "path": "synthetic", "sr": None, "fma_compat": True,
                    "split": "stratified"})


# ------------------------------------------------------------------------------- growth


def fit_seconds(key: str, X: np.ndarray, y: np.ndarray) -> float:
    """CPU time of one fit of estimator ``key`` (min-max scaled rows, defaults, seed 0).

    The fits run on one thread, so their CPU time is their cost, and unlike wall time it hardly
    moves when other jobs share the machine.
    """
    from fmadask.ml.models import make_estimator

    scaled = (X - X.min(axis=0)) / np.maximum(X.max(axis=0) - X.min(axis=0), 1e-12)
    start = time.process_time()
    make_estimator(key, 0).fit(scaled, y)
    return time.process_time() - start


def exponent(sizes: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) on log(sizes); NaN with fewer than 2 points."""
    if len(sizes) < 2:
        return float("nan")
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def growth(args: argparse.Namespace) -> None:
    from fmadask.ml.models import MODEL_NAMES, SUBSTITUTES, runs_as

    if args.models == ["default-path"]:     # what runs past the scale threshold
        keys = list(dict.fromkeys(runs_as(m, max(args.sizes), 0) for m in MODEL_NAMES))
    else:
        keys = args.models or [*MODEL_NAMES, *SUBSTITUTES]
    tables = {n: medium_table(n) for n in args.sizes}
    print(f"growth: one fit per model and size, one thread, sizes {args.sizes}, "
          f"budget {args.budget:.0f} s per fit", flush=True)
    rows = []
    for key in keys:
        sizes, seconds = [], []
        for n in args.sizes:
            if seconds:
                b = exponent(sizes, seconds)
                guess = seconds[-1] * (n / sizes[-1]) ** (1.0 if np.isnan(b) else max(b, 1.0))
                if guess > args.budget:
                    break
            seconds.append(fit_seconds(key, *tables[n]))
            sizes.append(n)
            print(f"  {key:<24} {n:>7} rows {seconds[-1]:8.1f} s", flush=True)
        b = exponent(sizes, seconds)
        row = {"model": key, "exponent": b}
        for target in args.targets:
            if target in sizes:
                row[target] = f"{seconds[sizes.index(target)]:.1f}"
            else:
                # With one point, assume linear growth (a lower bound for the SVMs).
                slope = 1.0 if np.isnan(b) else b
                row[target] = f"{seconds[-1] * (target / sizes[-1]) ** slope:.0f}*"
        rows.append(row)
    print("\nmodel                     exponent  " + "  ".join(f"{t:>9}" for t in args.targets))
    for row in rows:
        print(f"{row['model']:<24} {row['exponent']:>9.2f}  "
              + "  ".join(f"{row[t]:>9}" for t in args.targets))
    sizes = np.array(args.sizes, dtype=float)
    print(f"(CPU seconds per fit at each target row count; * extrapolated as t = a n^b from the "
          f"measured sizes {args.sizes}; n log n over those sizes has b = "
          f"{exponent(list(sizes), list(sizes * np.log(sizes))):.2f})")


# ------------------------------------------------------------------------------- stage


def _warm(client) -> None:
    """Import the estimators' modules on every worker, outside the timings."""
    def imports() -> bool:
        import dask_ml.preprocessing  # noqa: F401
        import sklearn.ensemble  # noqa: F401
        import sklearn.svm  # noqa: F401
        import xgboost  # noqa: F401

        return True

    client.run(imports)


def stage(args: argparse.Namespace) -> None:
    if "search" in args.parts:
        search_speedup(args)
    if "table" in args.parts:
        whole_stage(args)


def whole_stage(args: argparse.Namespace) -> None:
    from fmadask.cluster import get_client
    from fmadask.ml.train import ClassicalConfig, train

    dataset = medium_dataset(args.rows)
    n_train = int(dataset.rows("training").sum())
    print(f"stage: {args.rows} x 518 tracks in 16 genres ({n_train} training), ten models + "
          f"{args.n_iter} x {args.cv}-fold XGBoost random search", flush=True)
    with get_client(workers=args.stage_workers, quiet=True) as client, \
            tempfile.TemporaryDirectory() as out:
        _warm(client)
        start = time.perf_counter()
        config = ClassicalConfig(search="random", n_iter=args.n_iter, cv=args.cv,
                                 unsupervised=False, scale_threshold=args.scale_threshold)
        results = train(dataset, out, config, client=client, progress=True)
        total = time.perf_counter() - start
        print(f"\nstage on {args.stage_workers} worker(s): {total:.0f} s ({total / 60:.1f} min)")
        print(results[["model", "runs_as", "validation_accuracy", "test_balanced_accuracy",
                       "fit_seconds", "worker"]].to_string(index=False), flush=True)


def search_speedup(args: argparse.Namespace) -> None:
    from fmadask.cluster import get_client
    from fmadask.ml.models import runs_as, search_space
    from fmadask.ml.search import SearchSettings, run_search

    search_set = medium_dataset(args.search_rows)
    X, y = search_set.xy("training")
    key = runs_as("xgboost", len(y), args.scale_threshold)
    space = search_space(key)
    times = {}
    for workers in args.search_workers:
        with get_client(workers=workers, quiet=True) as client:
            _warm(client)
            start = time.perf_counter()
            outcome = run_search(client, X, y, SearchSettings(key, space, "random",
                                                              n_iter=args.n_iter, cv=args.cv))
            times[workers] = time.perf_counter() - start
            print(f"search ({key}, {len(y)} training rows, {args.n_iter} x {outcome.n_splits}"
                  f"-fold, halving {[round(f, 3) for f in outcome.fractions]}) on {workers} "
                  f"worker(s): {times[workers]:.0f} s, fits on {len(outcome.fit_workers)} "
                  f"worker(s), {outcome.trials['state'].value_counts().to_dict()}", flush=True)
    base = args.search_workers[0]
    for workers, seconds in times.items():
        print(f"search speed-up {workers} vs {base} worker(s): {times[base] / seconds:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    g = sub.add_parser("growth", help="per-model fit time against rows")
    g.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000, 8000])
    g.add_argument("--targets", type=int, nargs="+", default=[6400, 20000, 85000])
    g.add_argument("--budget", type=float, default=30.0, help="seconds a fit may take")
    g.add_argument("--models", nargs="+", help="estimator keys (default: all and substitutes; "
                   "'default-path': those that run past the scale threshold)")
    s = sub.add_parser("stage", help="the whole stage, then the search on 1 and 2 workers")
    s.add_argument("--rows", type=int, default=25000)
    s.add_argument("--stage-workers", type=int, default=2)
    s.add_argument("--search-rows", type=int, default=25000)
    s.add_argument("--search-workers", type=int, nargs="+", default=[1, 2])
    s.add_argument("--n-iter", type=int, default=10)
    s.add_argument("--cv", type=int, default=5)
    s.add_argument("--parts", nargs="+", default=["search", "table"], choices=["search", "table"],
                   help="what to measure, in this order (default both)")
    s.add_argument("--scale-threshold", type=int,
                   help="training rows past which the scale rule swaps models (default the "
                        "library's; lower it to measure the large-table path on a small table)")
    args = parser.parse_args(argv)
    (growth if args.what == "growth" else stage)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
