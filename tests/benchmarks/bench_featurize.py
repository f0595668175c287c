"""Benchmark of featurization on 30 s, 44.1 kHz stereo mp3 clips, all figures from one run.

Run ``.venv/bin/python tests/benchmarks/bench_featurize.py [--tracks-per-genre N] [--repeat R]``.
It prints tracks per second of

(a) FMA's straightforward recipe (``tests/reference_recipe.py``) in one process,
(b) ``fmadask.features.fma_features`` in one process,
(c) the featurize Dask job with 1 worker process, (d) with 2 worker processes,
(e) decoding alone (``fmadask.audio.load_audio``) in one process,

and the ratios b/a and d/c; then the effect on (d) of Dask's default ``MALLOC_TRIM_THRESHOLD_``
in the workers' environment and of numeric libraries left at their default thread count.

(a) and (b) featurize already decoded audio with one BLAS/OpenMP thread, as the workers do.
(c) and (d) run the whole job (decode, features, Parquet) with ``what=features`` so they compare
with (b); the ``+ spectrograms`` line also makes the log-mel shards. Job rates count good clips
over the job's timed part (worker warm-up and cluster start excluded); the sample's 7 defective
clips fail at decoding in milliseconds.

Each Dask job runs in a child process of its own with the thread and malloc variables removed
from its environment: a LocalCluster's nanny writes ``pre-spawn-environ`` into the environment
of the process that starts it, so variants run in one process would leak into each other.
Timings on a shared machine are noisy: compare figures of one run only; ``--repeat`` runs the
jobs interleaved and keeps the best of each.
"""
from __future__ import annotations

import os
import sys

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
#: The environment the job children start from: no thread or malloc settings of ours.
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in THREAD_VARS + ("MALLOC_TRIM_THRESHOLD_",)}
if "--child" not in sys.argv:
    # One numeric thread in this process (before numpy is imported), like the workers.
    for _var in THREAD_VARS:
        os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for reference_recipe

#: Dask job variants: name -> (workers, outputs, worker environment). "fmadask" is what
#: fmadask.cluster.get_client gives; the others change one thing.
JOBS: dict[str, tuple[int, tuple[str, ...], str]] = {
    "c_job_1_worker": (1, ("features",), "fmadask"),
    "d_job_2_workers": (2, ("features",), "fmadask"),
    "d_job_2_workers_with_spectrograms": (2, ("features", "spectrograms"), "fmadask"),
    "d_with_malloc_trim_65536": (2, ("features",), "malloc_trim"),
    "d_default_threads": (2, ("features",), "default_threads"),
}
LABELS = {
    "a_reference": "(a) reference recipe, 1 process",
    "b_fma_features": "(b) fma_features, 1 process",
    "c_job_1_worker": "(c) Dask job, 1 worker",
    "d_job_2_workers": "(d) Dask job, 2 workers",
    "d_job_2_workers_with_spectrograms": "    (d) + spectrograms",
    "e_decode": "(e) decode alone, 1 process",
    "d_with_malloc_trim_65536": "    (d) with MALLOC_TRIM_THRESHOLD_=65536 (Dask's default)",
    "d_default_threads": "    (d) with default BLAS/OpenMP thread counts",
}


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def _time_per_clip(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    fn()
    return _rate(n, time.perf_counter() - start)


# ------------------------------------------------------------------------ one job (child process)


def _worker_environ(variant: str) -> dict | None:
    from fmadask.cluster import worker_config

    env = worker_config()["distributed.nanny.pre-spawn-environ"]
    if variant == "fmadask":
        return None
    if variant == "malloc_trim":
        return {**env, "MALLOC_TRIM_THRESHOLD_": 65536}
    return {k: v for k, v in env.items() if k not in THREAD_VARS}


@contextlib.contextmanager
def _cluster(workers: int, environ: dict | None) -> Iterator:
    """fmadask's local cluster, or one whose workers get ``environ`` instead of fmadask's."""
    import dask
    from distributed import Client, LocalCluster

    from fmadask.cluster import get_client

    if environ is None:
        with get_client(workers=workers, quiet=True) as client:
            yield client
        return
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def _child(name: str, data: Path, partition_size: int) -> None:
    """Run one job of ``JOBS`` and print its rate and its workers' environment as JSON."""
    from fmadask.pipeline import run_featurize
    from fmadask.pipeline.featurize import FeaturizeConfig

    workers, what, variant = JOBS[name]
    with _cluster(workers, _worker_environ(variant)) as client, \
            tempfile.TemporaryDirectory() as out:
        env = client.run(lambda: {k: os.environ.get(k) for k in
                                  ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")})
        summary = run_featurize(data, out=Path(out) / "run", client=client, progress=False,
                                config=FeaturizeConfig(what=what, partition_size=partition_size))
    print(json.dumps({"rate": _rate(summary["ok"], summary["seconds"]),
                      "env": next(iter(env.values()))}))


def _job_rate(name: str, data: Path, partition_size: int) -> tuple[float, dict]:
    proc = subprocess.run([sys.executable, __file__, "--child", name, "--data", str(data),
                           "--partition-size", str(partition_size)],
                          env=CLEAN_ENV, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"job {name} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["rate"], result["env"]


# ------------------------------------------------------------------------------------- main


def _good_clips(data: Path) -> list[str]:
    from fmadask.audio import AudioError, load_audio
    from fmadask.fma.tracks import track_table

    paths = []
    for path in track_table(data)["path"]:
        try:
            load_audio(path)
        except AudioError:
            continue
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks-per-genre", type=int, default=4,
                        help="good 30 s clips per genre in the generated sample (default 4: 32)")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "fmadask-bench",
                        help="sample folder, generated once and reused")
    parser.add_argument("--partition-size", type=int, default=4,
                        help="tracks per partition: small, so 2 workers share the clips evenly")
    parser.add_argument("--reference-clips", type=int, default=8,
                        help="clips for the slow reference recipe (a)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each Dask job, interleaved; the best counts (default 1)")
    parser.add_argument("--no-variants", action="store_true",
                        help="skip the MALLOC_TRIM_THRESHOLD_ and thread-count runs")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--child", choices=list(JOBS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.data, args.partition_size)
        return 0

    from fmadask.audio import load_audio
    from fmadask.features import fma_features
    from fmadask.fma.sample import make_sample
    from reference_recipe import compute_features

    data = args.data / f"n{args.tracks_per_genre}"
    if not (data / "fma_metadata" / "tracks.csv").is_file():
        print(f"generating {args.tracks_per_genre} x 8 clips of 30 s in {data} ...", flush=True)
        shutil.rmtree(data, ignore_errors=True)
        make_sample(data, tracks_per_genre=args.tracks_per_genre, seconds=30.0, seed=0)
    paths = _good_clips(data)
    n = len(paths)
    figures: dict[str, float] = {}

    figures["e_decode"] = _time_per_clip(lambda: [load_audio(p) for p in paths], n)
    decoded = [load_audio(p) for p in paths]
    fma_features(*decoded[0])                                           # numba compiles (untimed)
    figures["b_fma_features"] = _time_per_clip(
        lambda: [fma_features(y, sr) for y, sr in decoded], n)
    few = decoded[:args.reference_clips]
    compute_features(*few[0])
    figures["a_reference"] = _time_per_clip(
        lambda: [compute_features(y, sr) for y, sr in few], len(few))

    jobs = [name for name, (_, _, variant) in JOBS.items()
            if not (args.no_variants and variant != "fmadask")]
    environs: dict[str, dict] = {}
    for _ in range(args.repeat):
        for name in jobs:
            rate, environs[name] = _job_rate(name, data, args.partition_size)
            figures[name] = max(rate, figures.get(name, 0.0))

    print(f"\n{n} good clips of 30 s, 44.1 kHz stereo mp3 ({len(few)} for (a)); partition size "
          f"{args.partition_size}; best of {args.repeat} per job; {os.cpu_count()} CPUs")
    for key, label in LABELS.items():
        if key in figures:
            extra = f"   workers' env {environs[key]}" if key in environs else ""
            print(f"  {label:<58} {figures[key]:7.2f} tracks/s{extra}")
    ratios = {"b/a": figures["b_fma_features"] / figures["a_reference"],
              "d/c": figures["d_job_2_workers"] / figures["c_job_1_worker"],
              "c/b": figures["c_job_1_worker"] / figures["b_fma_features"]}
    if not args.no_variants:
        ratios["d/d_malloc_trim"] = figures["d_job_2_workers"] / figures["d_with_malloc_trim_65536"]
        ratios["d/d_default_threads"] = figures["d_job_2_workers"] / figures["d_default_threads"]
    for name, value in ratios.items():
        print(f"  {name:<24} {value:5.2f}")
    if args.json:
        args.json.write_text(json.dumps({"clips": n, "figures": figures, "ratios": ratios,
                                         "environments": environs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
