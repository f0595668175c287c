"""Scale benchmark: every stage on FMA-large-shaped data sets of growing size, as a user runs it.

Run ``.venv/bin/python tests/benchmarks/bench_scale.py [--sizes 200 1000] [--where local bucket]``
(the issue's sizes: ``--sizes 1000 25000 106574``; the default is small enough for ``make
bench``). For each size it writes a data set with :func:`fmadask.fma.scale.make_large_sample`
(a pool of short clips hard-linked under every id), starts a scheduler and 2 workers of its own
(fmadask's worker environment) and runs the ``fmadask`` commands against them, the data and the
run folder on local disk or in a bucket (moto's S3 server on 127.0.0.1, started here):

- ``featurize`` (features and spectrograms of the large subset, 64 tracks a partition), then the
  same command again: the resume check of a complete run (it must find everything done). From
  ``--kill-from`` tracks on, the first featurize client is killed (SIGKILL; scheduler and
  workers stay) once ``--kill-at`` of its partitions are complete, then re-run to the end: it
  prints how many partitions were complete and in flight at the kill, how many the re-run
  computed, and whether it rewrote any that were complete (it must not); featurize's wall time
  is then the two parts' (the seconds between them are the bench's, not fmadask's);
- ``train`` (logistic regression on the features, official split);
- ``cnn`` (the study's naive net over the full spectrogram index, 2 ranks, ``--max-steps 16``:
  the same training at every size, under one epoch at 1,000 tracks; what grows is opening the
  index, the normalisation and scoring validation and test);
- ``fuse`` and ``info``.

It prints, per size and place: wall time per stage, its time per track against the smallest
size, featurize's planning/start-up time (wall time less the timed compute and the workers'
warm-up), the peak memory (RSS) of the client (the command), the scheduler and each worker
(sampled every 0.2 s), and the run folder's size and number of files. Figures of one run only;
tests never assert on them. In a bucket, moto keeps every object in memory: the data set is
uploaded one object per track (links do not survive), some 40 KB a 2 s clip.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import S3_KEY, S3_SECRET, free_port, wait_for_port  # noqa: E402
from fmadask.cluster import worker_environ  # noqa: E402
from fmadask.fma.scale import make_large_sample  # noqa: E402

GIB = 2.0 ** 30


@contextmanager
def _process(args: list[str], env: dict, log: Path) -> Iterator[subprocess.Popen]:
    """A background process (its output to ``log``), stopped with its group at the end."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)


def _rss(proc: psutil.Process) -> dict[int, int]:
    """RSS in bytes of a process and each of its descendants, by pid."""
    found = {}
    for p in [proc, *proc.children(recursive=True)]:
        try:
            found[p.pid] = p.memory_info().rss
        except psutil.Error:
            pass
    return found


def _peaks(client: subprocess.Popen, scheduler: psutil.Process,
           workers: list[psutil.Process], each=None) -> dict[str, float]:
    """Wait for ``client`` while sampling memory: peak GiB of the client (the command and its
    children), the scheduler and the largest process of each worker. ``each()``, if given, is
    called at every sample."""
    peak = {"client": 0.0, "scheduler": 0.0, "worker": 0.0}
    me = psutil.Process(client.pid)
    while client.poll() is None:
        if each is not None:
            each()
        try:
            peak["client"] = max(peak["client"], sum(_rss(me).values()) / GIB)
        except psutil.Error:
            pass
        peak["scheduler"] = max(peak["scheduler"], sum(_rss(scheduler).values()) / GIB)
        for w in workers:
            peak["worker"] = max(peak["worker"], max(_rss(w).values(), default=0) / GIB)
        time.sleep(0.2)
    return peak


def _folder_size(fs, path: str) -> tuple[int, int]:
    """(bytes, files) under a local path or a bucket prefix."""
    if fs is None:
        files = [p for p in Path(path).rglob("*") if p.is_file()]
        return sum(p.stat().st_size for p in files), len(files)
    found = fs.find(path, detail=True)
    return sum(e["size"] for e in found.values()), len(found)


def _run(args: list[str], env: dict, log: Path, scheduler: subprocess.Popen,
         workers: list[subprocess.Popen]) -> tuple[int, float, dict[str, float]]:
    """Run an ``fmadask`` command to its end: (exit status, wall s, memory peaks)."""
    start = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(BIN / "fmadask"), *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        peak = _peaks(proc, psutil.Process(scheduler.pid),
                      [psutil.Process(w.pid) for w in workers])
    return proc.returncode, time.perf_counter() - start, peak


def _records(fs, run_dir: str) -> dict[str, object]:
    """The completion records of a run folder now: name -> tag (a local file's mtime, an
    object's ETag), from one listing (a record rewritten later has another tag)."""
    if fs is None:
        folder = Path(run_dir) / "_partitions"
        try:
            return {e.name: e.stat().st_mtime_ns for e in os.scandir(folder)
                    if e.name.startswith("part-") and e.name.endswith(".json")}
        except FileNotFoundError:
            return {}
    path = f"{run_dir[len('s3://'):]}/_partitions"
    fs.invalidate_cache(path)
    try:
        found = fs.ls(path, detail=True)
    except FileNotFoundError:
        return {}
    return {e["name"].rsplit("/", 1)[-1]: e.get("ETag") for e in found
            if e["name"].endswith(".json")}


def _executing(client) -> list[int]:
    """The featurize partitions the workers are computing right now (a fresh run's bag
    partition i is the run's partition i)."""
    def running(dask_worker) -> list:
        return [ts.key for ts in dask_worker.state.executing]

    keys = [k for found in client.run(running).values() for k in found]
    return sorted(k[1] for k in keys if isinstance(k, tuple) and "featurize" in str(k[0]))


def featurize_killed(args: list[str], env: dict, log: Path, fs, run_dir: str, address: str,
                     at: float, scheduler: subprocess.Popen, workers: list[subprocess.Popen]
                     ) -> dict:
    """Featurize, its client killed (SIGKILL) once a fraction ``at`` of the partitions are
    complete, then the same command run to its end.

    Returns ``wall`` (both parts, without the bench's seconds between them), ``compute``
    (the first part from its job record's appearance to the kill, plus the re-run's timed
    compute), ``peak`` (the larger of both parts') and the kill's figures: partitions
    ``complete_at_kill``, ``in_flight_at_kill`` (executing on a worker), ``resume_run`` and
    ``resume_skipped`` (the re-run's summary), and ``rewritten``: partitions complete at the
    kill whose record the re-run wrote again (redone; must be 0). ``status`` is the re-run's
    exit status; without a kill (the run ended first) only ``wall``/``peak``/``status``.
    """
    from distributed import Client

    seen: dict = {}          # when the job record appeared, the partitions, the kill's figures

    def watch() -> None:
        if "total" not in seen:
            if not (Path(run_dir, "featurize.json").exists() if fs is None else
                    fs.exists(f"{run_dir[len('s3://'):]}/featurize.json")):
                return
            seen["planned"] = time.perf_counter()   # written as the partitions start
            seen["total"] = json.loads(_read(fs, f"{run_dir}/featurize.json"))["plan"][
                "partitions"]
        done = _records(fs, run_dir)
        if "killed" not in seen and len(done) >= at * seen["total"]:
            seen.update(flight=_executing(watcher), done=done)
            proc.kill()
            seen["killed"] = time.perf_counter()

    with Client(address, timeout=30) as watcher, open(log, "ab") as out:
        start = time.perf_counter()
        proc = subprocess.Popen([str(BIN / "fmadask"), *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        peak = _peaks(proc, psutil.Process(scheduler.pid),
                      [psutil.Process(w.pid) for w in workers], each=watch)
    if "killed" not in seen:            # ended (or failed) before the kill
        return {"wall": time.perf_counter() - start, "peak": peak, "status": proc.returncode}
    first, done, flight = seen["killed"] - start, seen["done"], seen["flight"]
    status, second, peak2 = _run(args, env, log, scheduler, workers)
    after = _records(fs, run_dir)
    summary = (json.loads(_read(fs, f"{run_dir}/featurize.json"))["summary"]
               if status == 0 else {})
    return {"wall": first + second, "status": status,
            "compute": (seen["killed"] - seen["planned"]) + summary.get("seconds", 0.0),
            "warm_up": summary.get("warm_up_s", 0.0),
            "peak": {k: max(peak[k], peak2[k]) for k in peak},
            "partitions": seen["total"], "complete_at_kill": len(done),
            "in_flight_at_kill": len(flight), "in_flight": flight,
            "resume_run": summary.get("partitions_run"),
            "resume_skipped": summary.get("partitions_skipped"),
            "rewritten": sorted(n for n, tag in done.items() if after.get(n) != tag)}


def run_size(n: int, where: str, work: Path, clips: int, seconds: float,
             kill_at: float = 0.0) -> dict:
    """Every stage at ``n`` tracks with data and run folder ``where`` ('local' or 'bucket');
    featurize's client killed once ``kill_at`` of its partitions are complete (0: not)."""
    data = work / f"data-{n}"
    if not data.exists():
        start = time.perf_counter()
        make_large_sample(data, tracks=n, clips=min(clips, n), seconds=seconds)
        print(f"  data set of {n:,} tracks written in {time.perf_counter() - start:.1f} s",
              flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    log = work / "cluster.log"
    results: dict = {"tracks": n, "where": where, "stages": {}, "memory": {}, "load": {},
                     "failed": []}
    with contextlib.ExitStack() as stack:
        fs = None
        data_dir, run_dir = str(data), str(work / f"run-{where}-{n}")
        if where == "bucket":
            port = free_port()
            stack.enter_context(_process([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p",
                                          str(port)], env, log))
            wait_for_port(port)
            env.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET,
                       AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_DEFAULT_REGION="us-east-1")
            import s3fs

            fs = s3fs.S3FileSystem(key=S3_KEY, secret=S3_SECRET,
                                   endpoint_url=f"http://127.0.0.1:{port}")
            fs.mkdir("bench")
            start = time.perf_counter()
            fs.put(f"{data}/", "bench/data/", recursive=True)
            print(f"  data set uploaded in {time.perf_counter() - start:.1f} s", flush=True)
            data_dir, run_dir = "s3://bench/data", "s3://bench/runs/r1"
        port = free_port()
        scheduler = stack.enter_context(_process(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--dashboard-address", ":0", "--no-show"], env, log))
        wait_for_port(port)
        address = f"tcp://127.0.0.1:{port}"
        workers = [stack.enter_context(_process(
            [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--nworkers", "1",
             "--memory-limit", "4GiB", "--no-dashboard"], {**env, **worker_environ()}, log))
            for _ in range(2)]
        time.sleep(5)                     # the workers register
        stages = [
            ("featurize", ["featurize", data_dir, "--out", run_dir, "--subset", "large",
                           "--partition-size", "64"]),
            ("resume_check", ["featurize", data_dir, "--out", run_dir, "--subset", "large",
                              "--partition-size", "64"]),
            ("train", ["train", run_dir, "--models", "logistic_regression",
                       "--no-unsupervised"]),
            ("cnn", ["cnn", run_dir, "--arch", "naive", "--epochs", "1", "--max-steps", "16",
                     "--ranks", "2"]),
            ("fuse", ["fuse", run_dir]),
            ("info", ["info", data_dir, "--subset", "large"]),
        ]
        for name, args in stages:
            cluster = ["--scheduler", address] if name in ("featurize", "resume_check", "train",
                                                           "cnn") else []
            log_file = work / f"{name}-{where}-{n}.log"
            log_file.unlink(missing_ok=True)
            killed = None
            if name == "featurize" and kill_at > 0:
                killed = featurize_killed([*args, *cluster], env, log_file, fs, run_dir,
                                          address, kill_at, scheduler, workers)
                status, wall, peak = killed.pop("status"), killed["wall"], killed["peak"]
            else:
                status, wall, peak = _run([*args, *cluster], env, log_file, scheduler, workers)
            if status != 0:     # shown, and the other stages still measured
                tail = log_file.read_text().strip().splitlines()[-1:]
                print(f"  {name} FAILED at {n} tracks ({where}): {' '.join(tail)}", flush=True)
                results["failed"].append(name)
                continue
            results["stages"][name] = wall
            if name == "featurize":     # before the resume check rewrites its summary
                job = json.loads(_read(fs, f"{run_dir}/featurize.json"))
                results["featurize_compute_s"] = job["summary"]["seconds"]
                results["warm_up_s"] = job["summary"]["warm_up_s"]
            if killed and "compute" in killed:
                results["featurize_compute_s"] = killed["compute"]
                results["warm_up_s"] = killed["warm_up"]
                results["kill"] = {k: killed[k] for k in (
                    "partitions", "complete_at_kill", "in_flight_at_kill", "in_flight",
                    "resume_run", "resume_skipped", "rewritten")}
                k = results["kill"]
                print(f"  featurize client killed at {k['complete_at_kill']} of "
                      f"{k['partitions']} partitions complete, {k['in_flight_at_kill']} in "
                      f"flight {k['in_flight']}; the re-run ran {k['resume_run']} and skipped "
                      f"{k['resume_skipped']}; complete at the kill and written again: "
                      f"{len(k['rewritten'])} {k['rewritten'][:10]}", flush=True)
            elif killed:
                print("  featurize ended before its client could be killed", flush=True)
            results["memory"][name] = peak
            results["load"][name] = os.getloadavg()[0]   # the machine may be shared: say so
            print(f"  {name:13s} {wall:8.1f} s   client {peak['client']:.2f} GiB, scheduler "
                  f"{peak['scheduler']:.2f} GiB, worker {peak['worker']:.2f} GiB, load "
                  f"{results['load'][name]:.1f}", flush=True)
        if "featurize" in results["failed"]:
            raise SystemExit(f"featurize failed at {n} tracks ({where}): see {work}")
        results["run_bytes"], results["run_files"] = _folder_size(
            fs, run_dir[len("s3://"):] if fs else run_dir)
    return results


def _read(fs, path: str) -> bytes:
    return fs.cat_file(path[len("s3://"):]) if fs else Path(path).read_bytes()


def report(results: list[dict]) -> None:
    """The table: wall time per stage, per track against the smallest size, memory, folder."""
    print("\n(ms/track: per track of the data set, labelled or not)\n"
          "place   tracks  stage           wall s  ms/track  x smallest  peak GiB client/"
          "scheduler/worker  load")
    base: dict[tuple[str, str], float] = {}
    for r in results:
        for stage, wall in r["stages"].items():
            per = wall / r["tracks"] * 1000
            ref = base.setdefault((r["where"], stage), per)
            m = r["memory"][stage]
            print(f"{r['where']:7s} {r['tracks']:6d}  {stage:13s} {wall:8.1f} {per:9.2f} "
                  f"{per / ref:11.2f}  {m['client']:.2f}/{m['scheduler']:.2f}/{m['worker']:.2f}"
                  f"    {r['load'][stage]:5.1f}")
        for stage in r["failed"]:
            print(f"{r['where']:7s} {r['tracks']:6d}  {stage:13s}   failed")
        overhead = r["stages"]["featurize"] - r["featurize_compute_s"] - r["warm_up_s"]
        print(f"{r['where']:7s} {r['tracks']:6d}  featurize planning and start-up {overhead:.1f} s"
              f" (workers' warm-up {r['warm_up_s']:.1f} s apart)"
              f"; resume check of the complete run {r['stages'].get('resume_check', 0):.1f} s; "
              f"run folder {r['run_bytes'] / 2**20:.1f} MiB in {r['run_files']} files")
        if "kill" in r:
            k = r["kill"]
            print(f"{r['where']:7s} {r['tracks']:6d}  featurize client killed at "
                  f"{k['complete_at_kill']} of {k['partitions']} partitions complete, "
                  f"{k['in_flight_at_kill']} in flight: the re-run ran {k['resume_run']}, "
                  f"skipped {k['resume_skipped']}, wrote again {len(k['rewritten'])} of those "
                  "complete at the kill")
    for where, stage, exponent in growth(results):
        print(f"{where:7s} growth of {stage:13s} wall ~ n^{exponent:.2f}")


def growth(results: list[dict]) -> list[tuple[str, str, float]]:
    """(place, stage, exponent) of each stage measured at two sizes or more: the slope of a
    least-squares line through log wall time against log tracks (1: linear; a step whose
    fixed cost dominates at small sizes shows less)."""
    import numpy as np

    found = []
    for where in dict.fromkeys(r["where"] for r in results):
        runs = [r for r in results if r["where"] == where]
        for stage in dict.fromkeys(s for r in runs for s in r["stages"]):
            points = [(r["tracks"], r["stages"][stage]) for r in runs if stage in r["stages"]]
            if len({n for n, _ in points}) >= 2:
                n, wall = np.log(np.array(points, dtype=float)).T
                found.append((where, stage, float(np.polyfit(n, wall, 1)[0])))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--where", nargs="+", choices=["local", "bucket"],
                        default=["local", "bucket"])
    parser.add_argument("--clips", type=int, default=300, help="distinct clips in the pool")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of a pool clip")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    parser.add_argument("--kill-at", type=float, default=0.5,
                        help="kill featurize's client once this fraction of partitions is "
                             "complete, then re-run it (0: never)")
    parser.add_argument("--kill-from", type=int, default=10_000,
                        help="kill featurize's client at this many tracks and more (at smaller "
                             "sizes the partitions lost in flight would weigh on the per-track "
                             "time)")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="fmadask-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for n in sorted(args.sizes):
            for where in args.where:
                print(f"{n:,} tracks, {where}:", flush=True)
                results.append(run_size(n, where, work, args.clips, args.seconds,
                                        args.kill_at if n >= args.kill_from else 0.0))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
