"""Benchmark of the classical stage on a features table the size of FMA small (8,000 x 518).

Measures, in one run, with a local Dask cluster of 1 and then of 2 worker processes (one thread
each):

- the full table: the study's ten models with their default settings, fitted and scored
  (``fmadask.ml.train`` without the unsupervised views);
- a 20-candidate x 5-fold XGBoost random search (dask-ml ``RandomizedSearchCV`` on the cluster,
  XGBoost's default search space);

and prints the wall times and the 1-worker / N-worker ratios. Numbers are synthetic (8 genres,
Gaussian features with genre-dependent means): timing does not depend on what the numbers mean.
Cluster start-up and the workers' first imports are outside the timings.

Run::

    .venv/bin/python tests/benchmarks/bench_classical.py                  # the full measurement
    .venv/bin/python tests/benchmarks/bench_classical.py --quick          # a short check
    .venv/bin/python tests/benchmarks/bench_classical.py --workers 1 2 4 --rows 8000
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np
import pandas as pd


def synthetic_dataset(rows: int, seed: int = 0):
    """``rows`` tracks in 8 balanced genres with the 518 FEATURE_COLUMNS, split 80/10/10."""
    from fmadask.features import FEATURE_COLUMNS
    from fmadask.fma.splits import stratified_split
    from fmadask.ml.data import Dataset

    rng = np.random.default_rng(seed)
    k = 8
    codes = np.arange(rows) % k
    means = rng.normal(scale=0.3, size=(k, len(FEATURE_COLUMNS)))
    X = (rng.normal(size=(rows, len(FEATURE_COLUMNS))) + means[codes]).astype(np.float32)
    ids = pd.Index(np.arange(rows) + 2, name="track_id")
    genre = pd.Series([f"genre{c}" for c in codes], index=ids, name="genre_top")
    return Dataset(pd.DataFrame(X, index=ids, columns=FEATURE_COLUMNS), genre,
                   stratified_split(genre, seed=42),
                   {"kind": "synthetic", "path": "synthetic", "sr": None, "fma_compat": True,
                    "split": "stratified"})


def _warm(client) -> None:
    """Import the estimators' modules on every worker, outside the timings."""
    def imports() -> bool:
        import dask_ml.preprocessing  # noqa: F401
        import sklearn.ensemble  # noqa: F401
        import sklearn.svm  # noqa: F401
        import xgboost  # noqa: F401

        return True

    client.run(imports)


def measure(workers: int, dataset, args: argparse.Namespace) -> dict[str, float]:
    from fmadask.cluster import get_client
    from fmadask.ml import train
    from fmadask.ml.models import Int, search_space
    from fmadask.ml.search import random_search

    times: dict[str, float] = {}
    with get_client(workers=workers, quiet=True) as client, \
            tempfile.TemporaryDirectory() as out:
        _warm(client)
        if "table" in args.what:
            start = time.perf_counter()
            results = train(dataset, out, client=client, unsupervised=False, progress=False)
            times["table"] = time.perf_counter() - start
            print(f"  {workers} worker(s): table {times['table']:.1f} s; per model (s): "
                  + ", ".join(f"{r.name} {r.fit_seconds:.1f}" for r in results.itertuples()),
                  flush=True)
        if "search" in args.what:
            X, y = dataset.xy("training")
            overrides = ({"n_estimators": Int(*args.xgb_estimators)} if args.xgb_estimators
                         else None)
            space = search_space("xgboost", overrides)
            start = time.perf_counter()
            outcome = random_search(client, "xgboost", X, y, space, n_iter=args.n_iter,
                                    cv=args.cv, seed=0)
            times["search"] = time.perf_counter() - start
            print(f"  {workers} worker(s): search {times['search']:.1f} s "
                  f"({args.n_iter} candidates x {outcome.n_splits} folds on "
                  f"{len(outcome.fit_workers)} worker(s); best cv accuracy "
                  f"{outcome.best_score:.3f})", flush=True)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=8000, help="tracks (default 8000)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="cluster sizes to compare (default 1 2)")
    parser.add_argument("--what", nargs="+", default=["table", "search"],
                        choices=["table", "search"])
    parser.add_argument("--n-iter", type=int, default=20, help="search candidates (default 20)")
    parser.add_argument("--cv", type=int, default=5, help="search folds (default 5)")
    parser.add_argument("--xgb-estimators", type=int, nargs=2, metavar=("LOW", "HIGH"),
                        help="n_estimators range of the search (default XGBoost's space: 100 600)")
    parser.add_argument("--quick", action="store_true",
                        help="short check: 2,000 rows, 4 candidates, n_estimators 10-30")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.n_iter = 2000, 4
        args.xgb_estimators = args.xgb_estimators or [10, 30]
    dataset = synthetic_dataset(args.rows)
    counts = dataset.split.value_counts().to_dict()
    print(f"classical benchmark: {args.rows} x 518 synthetic features "
          f"({counts.get('training', 0)} training / {counts.get('validation', 0)} validation / "
          f"{counts.get('test', 0)} test), workers {args.workers}, "
          f"search {args.n_iter} x {args.cv}-fold", flush=True)
    measured = {w: measure(w, dataset, args) for w in args.workers}
    base = args.workers[0]
    print("\nworkers  " + "  ".join(f"{what:>10}" for what in args.what)
          + "  " + "  ".join(f"{'x ' + what:>10}" for what in args.what))
    for w in args.workers:
        times = measured[w]
        speedups = [measured[base][what] / times[what] for what in args.what]
        print(f"{w:>7}  " + "  ".join(f"{times[what]:>9.1f}s" for what in args.what)
              + "  " + "  ".join(f"{s:>10.2f}" for s in speedups))
    print(f"(x: wall time with {base} worker(s) divided by the row's wall time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
