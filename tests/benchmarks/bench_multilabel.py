"""Benchmark of the classical stage's multi-label models (``genres_all``) at growing rows.

Per multi-label model (:data:`fmadask.ml.multilabel.FORMS`), the CPU time of one fit plus its
scoring of a validation split of a tenth of the rows, in this process, one thread, on synthetic
tables of 518 features and ``--labels`` genres (default 161, FMA's): 16 top-level genres and
their sub-genres, each track one top-level genre (a third of them two) and one of its sub-genres,
sub-genres in a long-tailed share as in FMA. Then the per-genre thresholds on validation
(:func:`fmadask.report.multilabel.evaluate`). A model whose next fit is predicted (from its growth
so far) to take longer than ``--budget`` seconds is not run at that size.

Printed per model and size: seconds, seconds per 1,000 rows, the ratio to the smallest size, and
the growth exponent ``b`` of ``t = a n^b`` fitted on the log of the measured sizes, with the
time extrapolated to ``--target`` rows (FMA large's ~85,000 training rows), marked ``*``. Numbers
are synthetic (Gaussian features around a mean per genre): timing does not depend on what they
mean. Ratios measured in one run only mean something on a quiet machine.

Run::

    .venv/bin/python tests/benchmarks/bench_multilabel.py                       # 500 .. 4,000
    .venv/bin/python tests/benchmarks/bench_multilabel.py --sizes 1000 4000 16000 --budget 600
    .venv/bin/python tests/benchmarks/bench_multilabel.py --models linear_svc \
        --sizes 4000 16000 48000 --sample-labels 5 --budget 1000    # 5 of 161 binary fits x 161

With fewer rows than its 518 features (500) liblinear takes its dual solver for the linear SVC,
which converges slowly on these tables; with more it takes the primal one, as on FMA large.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def multilabel_table(rows: int, n_labels: int = 161, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, list[int], dict[int, int]]:
    """``rows`` x 518 float32 features, an (rows, n_labels) 0/1 matrix, the label ids and the
    genre tree (id -> parent, 0 at the top): 16 top-level genres, the rest sub-genres."""
    rng = np.random.default_rng(seed)
    tops = list(range(1, 17))
    children = list(range(100, 100 + n_labels - len(tops)))
    parents = {**dict.fromkeys(tops, 0), **{c: tops[i % len(tops)] for i, c in enumerate(children)}}
    labels = tops + children
    column = {g: j for j, g in enumerate(labels)}
    share = 1.0 / np.arange(1, len(children) + 1)             # a long tail of sub-genres
    Y = np.zeros((rows, len(labels)), dtype=np.uint8)
    means = rng.normal(scale=0.3, size=(len(labels), 518))
    X = rng.normal(size=(rows, 518))
    for i in range(rows):
        for _ in range(2 if rng.random() < 1 / 3 else 1):
            child = int(rng.choice(children, p=share / share.sum()))
            for g in (child, parents[child]):
                Y[i, column[g]] = 1
        X[i] += means[Y[i].astype(bool)].mean(axis=0)
    return X.astype(np.float32), Y, labels, parents


def _scaled(table: tuple) -> tuple:
    """The table with its features min-max scaled, as the job's classical stage scales them
    (the linear models' solvers converge ~15x slower on the raw Gaussians)."""
    from sklearn.preprocessing import MinMaxScaler

    X, *rest = table
    return (MinMaxScaler().fit_transform(X).astype(np.float32), *rest)


def time_fit(name: str, X: np.ndarray, Y: np.ndarray) -> float:
    """CPU seconds of one fit of model ``name``'s multi-label form and its scoring of a tenth."""
    from threadpoolctl import threadpool_limits

    from fmadask.ml.multilabel import fit_multilabel

    n_val = max(1, len(X) // 10)
    with threadpool_limits(1):
        start = time.process_time()
        outcome = fit_multilabel(name, {}, 0, X[n_val:], Y[n_val:], {"validation": X[:n_val]})
        seconds = time.process_time() - start
    if outcome.error:
        raise SystemExit(f"{name} failed: {outcome.error}")
    return seconds


def time_sampled_fit(name: str, X: np.ndarray, Y: np.ndarray, labels: int) -> float:
    """CPU seconds of a one-vs-rest model's fit estimated from ``labels`` of its binary fits
    (labels spread from the most to the least frequent), scaled to all of them: one-vs-rest
    fits each label alone, so the whole costs their sum (scoring left out)."""
    from threadpoolctl import threadpool_limits

    from fmadask.ml.models import make_estimator

    support = Y.sum(axis=0)
    order = [j for j in np.argsort(-support) if 0 < support[j] < len(Y)]
    picks = [order[i] for i in np.linspace(0, len(order) - 1, labels).astype(int)]
    with threadpool_limits(1):
        start = time.process_time()
        for j in picks:
            make_estimator(name, 0).fit(X, Y[:, j])
        seconds = time.process_time() - start
    return seconds / len(picks) * Y.shape[1]


def growth(sizes: list[int], times: list[float]) -> float:
    """Exponent ``b`` of ``t = a n^b`` by least squares on logs (NaN with one size)."""
    if len(times) < 2:
        return float("nan")
    return float(np.polyfit(np.log(sizes[:len(times)]), np.log(times), 1)[0])


def main() -> None:
    from fmadask.ml.multilabel import FORMS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    parser.add_argument("--labels", type=int, default=161)
    parser.add_argument("--models", nargs="+", default=list(FORMS))
    parser.add_argument("--budget", type=float, default=120.0,
                        help="skip a fit predicted to take longer (CPU seconds)")
    parser.add_argument("--target", type=int, default=85_000)
    parser.add_argument("--sample-labels", type=int, default=0,
                        help="time one-vs-rest models on this many of their binary fits, scaled "
                             "to all labels (0: the whole fit)")
    args = parser.parse_args()
    tables = {n: _scaled(multilabel_table(n, args.labels)) for n in args.sizes}
    print(f"multi-label fits, {args.labels} labels, 518 features, one thread (CPU seconds)")
    print(f"{'model':<22}" + "".join(f"{n:>10,}" for n in args.sizes)
          + f"{'b':>7}{args.target:>12,}*")
    for name in args.models:
        times: list[float] = []
        for n in args.sizes:
            if len(times) >= 2:
                predicted = times[-1] * (n / args.sizes[len(times) - 1]) ** growth(args.sizes, times)
                if predicted > args.budget:
                    break
            X, Y, _, _ = tables[n]
            sampled = args.sample_labels and FORMS.get(name) == "one-vs-rest"
            times.append(time_sampled_fit(name, X, Y, args.sample_labels) if sampled
                         else time_fit(name, X, Y))
        b = growth(args.sizes, times)
        at_target = (times[-1] * (args.target / args.sizes[len(times) - 1]) ** b
                     if np.isfinite(b) else float("nan"))
        cells = [f"{t:>10.2f}" for t in times] + [f"{'-':>10}"] * (len(args.sizes) - len(times))
        print(f"{name:<22}" + "".join(cells) + f"{b:>7.2f}{at_target:>13.0f}")
        ratios = [t / times[0] for t in times]
        print(f"{'  ratio to smallest':<22}" + "".join(f"{r:>10.2f}" for r in ratios))
        print(f"{'  s per 1,000 rows':<22}"
              + "".join(f"{t / n * 1000:>10.3f}" for t, n in zip(times, args.sizes)))
    from fmadask.report.multilabel import Split, evaluate

    X, Y, labels, parents = tables[args.sizes[-1]]
    proba = np.clip(Y + np.random.default_rng(1).normal(scale=0.4, size=Y.shape), 0, 1)
    half = len(Y) // 2
    start = time.process_time()
    evaluate(Split(Y[:half], proba[:half], np.zeros(half, int)),
             Split(Y[half:], proba[half:], np.zeros(len(Y) - half, int)), labels, parents,
             {g: str(g) for g in labels})
    print(f"thresholds + scores of {len(Y):,} tracks x {len(labels)} labels: "
          f"{time.process_time() - start:.2f} s")


if __name__ == "__main__":
    main()
