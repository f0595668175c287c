"""The GPU checks and figures, all from one run: what a session with a GPU machine reruns in minutes.

Run ``python tests/benchmarks/bench_gpu.py --data DATA_DIR [--workers N] [--epochs E]
[--clips-per-genre C] [--json FILE]`` where ``DATA_DIR`` is an FMA-shaped folder (``fmadask
sample``). It prints

(a) log-mels of every good clip of DATA_DIR by torch on the GPU (:mod:`fmadask.torchmel`) against
    librosa on the CPU (the reference): largest difference of the float16 shards in dB, share of
    values that differ, and whether each difference is at most one float16 step;
(b) the log-mel step alone in one process, tracks/s: librosa on one CPU core against torch on the
    GPU (both include the CPU resampling to 22,050 Hz, decoding excluded);
(c) the featurize job (``--what spectrograms``) on a local cluster of N worker processes with
    ``mel_device`` cpu and cuda: tracks/s of each and the largest difference of their shards;
(d) ``fmadask cnn RUN --gpu --ranks 1`` (NCCL, float16 autocast + GradScaler) on the shards of
    (c): its scores;
(e) CNN throughput on synthetic shards of FMA's shape (128 x 1292 per 30 s clip): data loading
    alone (one process), 1 rank on the GPU (NCCL), 2 ranks sharing the GPU (gloo), in training
    segments/s (median of the epochs after the first), with the GPU's peak memory and mean
    utilisation sampled by ``nvidia-smi`` while each ran.

Without a CUDA device it says so and stops. Steps fail independently: one that breaks prints its
error and the rest still run.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one numeric thread per process, as on the workers

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_cnn's helpers

FIGURES: dict[str, object] = {}


def step(name: str, fn: Callable[[], None]) -> None:
    """Run one step; an error is printed and recorded, the next steps still run."""
    t0 = time.perf_counter()
    try:
        fn()
    except Exception:
        print(f"[{name}] FAILED:\n{traceback.format_exc()}", flush=True)
        FIGURES[f"{name}_error"] = traceback.format_exc().splitlines()[-1]
    print(f"[{name}] {time.perf_counter() - t0:.1f} s", flush=True)


@contextlib.contextmanager
def gpu_sampler(name: str) -> Iterator[None]:
    """Sample GPU utilisation (%) and memory used (MiB) every 200 ms with nvidia-smi."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                 "--format=csv,noheader,nounits", "-lms", "200"],
                                stdout=log, stderr=subprocess.DEVNULL)
        try:
            yield
        finally:
            proc.terminate()
            proc.wait()
            log.seek(0)
            rows = [[float(v) for v in line.split(",")] for line in log if "," in line]
    if rows:
        util, mem = zip(*rows)
        FIGURES[f"{name}_gpu_util_mean_pct"] = round(statistics.mean(util), 1)
        FIGURES[f"{name}_gpu_mem_peak_mib"] = max(mem)


def good_clips(data_dir: Path) -> list[tuple[np.ndarray, int]]:
    from fmadask.audio import AudioError, load_audio

    clips = []
    for path in sorted(data_dir.glob("fma_*/*/*.mp3")):
        try:
            clips.append(load_audio(path))
        except AudioError:
            pass
    return clips


def compare_shards(ref: np.ndarray, other: np.ndarray) -> dict:
    """Largest difference in dB, share of differing values, and how many differ by more than
    one float16 step."""
    a, b = ref.astype(np.float32), other.astype(np.float32)
    diff = np.abs(a - b)
    return {"max_abs_db": float(diff.max()), "share_differing": float(np.mean(a != b)),
            "over_one_float16_step": int(np.sum(diff > np.spacing(np.abs(ref)))),
            "values": int(a.size)}


def mel_checks(data_dir: Path) -> None:
    """(a) and (b)."""
    from fmadask.features import MelParams, log_mel
    from fmadask.torchmel import TorchLogMel

    params = MelParams()
    clips = good_clips(data_dir)
    gpu = TorchLogMel(params, "cuda")
    log_mel(*clips[0], params), gpu(*clips[0])          # warm-up: numba JIT, CUDA context
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    ref = [log_mel(y, sr, params)[0] for y, sr in clips]
    cpu_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = [gpu(y, sr)[0] for y, sr in clips]
    gpu_s = time.perf_counter() - t0
    cmp = compare_shards(np.stack(ref), np.stack(out))
    FIGURES["a_mel_gpu_vs_cpu"] = {**cmp, "clips": len(clips)}
    print(f"(a) log-mel, torch on {torch.cuda.get_device_name()} vs librosa, {len(clips)} clips: "
          f"max |diff| {cmp['max_abs_db']:.4f} dB, {100 * cmp['share_differing']:.4f} % of "
          f"values differ, {cmp['over_one_float16_step']} by more than one float16 step")
    FIGURES["b_mel_step_tracks_per_s"] = {"cpu_1_core": len(clips) / cpu_s,
                                          "gpu": len(clips) / gpu_s}
    print(f"(b) log-mel step alone: librosa 1 CPU core {len(clips) / cpu_s:7.1f} tracks/s, "
          f"torch GPU {len(clips) / gpu_s:7.1f} tracks/s, ratio {cpu_s / gpu_s:.1f}x")


def featurize_checks(data_dir: Path, work: Path, workers: int) -> None:
    """(c)."""
    from fmadask.cluster import get_client
    from fmadask.pipeline import run_featurize
    from fmadask.pipeline.featurize import FeaturizeConfig
    from fmadask.runfolder import PartitionFiles

    rates, runs = {}, {}
    with get_client(workers=workers, quiet=True) as client:
        for device in ("cpu", "cuda"):
            runs[device] = work / f"run-{device}"
            summary = run_featurize(data_dir, out=runs[device], client=client, progress=False,
                                    config=FeaturizeConfig(what=["spectrograms"],
                                                           mel_device=device, partition_size=4))
            rates[device] = summary["tracks_per_s"]
    parts = sorted(p.name for p in (runs["cpu"] / "spectrograms").glob("part-*.npy"))
    cpu = np.concatenate([np.load(runs["cpu"] / "spectrograms" / p) for p in parts])
    gpu = np.concatenate([np.load(runs["cuda"] / "spectrograms" / p) for p in parts])
    cmp = compare_shards(cpu, gpu)
    FIGURES["c_featurize_spectrograms"] = {"workers": workers, "tracks_per_s": rates, **cmp}
    print(f"(c) featurize --what spectrograms, {workers} workers: mel-device cpu "
          f"{rates['cpu']:.1f} tracks/s, cuda {rates['cuda']:.1f} tracks/s "
          f"(x{rates['cuda'] / rates['cpu']:.2f}); shards max |diff| {cmp['max_abs_db']:.4f} dB, "
          f"{cmp['over_one_float16_step']} values by more than one float16 step")
    assert PartitionFiles(runs["cuda"], 0).complete(("spectrograms",))


def cnn_cli_check(run_dir: Path, epochs: int) -> None:
    """(d): the CNN stage through the command line, one rank on the GPU."""
    cmd = [sys.executable, "-m", "fmadask.cli", "cnn", str(run_dir), "--gpu", "--ranks", "1",
           "--arch", "naive_bn", "--epochs", str(epochs), "--segment-seconds", "3"]
    with gpu_sampler("d_cnn_cli"):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
    FIGURES["d_cnn_cli_exit"] = proc.returncode
    report = run_dir / "cnn" / "report.md"
    if report.is_file():
        print(report.read_text())
        FIGURES["d_cnn_report"] = report.read_text()
    metrics = run_dir / "cnn" / "metrics.csv"
    if metrics.is_file():
        FIGURES["d_cnn_metrics"] = metrics.read_text()


def cnn_throughput(work: Path, clips_per_genre: int, epochs: int,
                   batch_sizes: list[int]) -> None:
    """(e): 1 rank with NCCL at each batch size, then 2 ranks on the one GPU (gloo) at the
    first."""
    from bench_cnn import loading_rate, training_rate

    from fmadask.cluster import get_client
    from fmadask.dl.config import TrainConfig
    from fmadask.dl.launch import run_cnn
    from fmadask.dl.synthetic import write_synthetic_spectrograms

    run_dir = work / "synthetic"
    write_synthetic_spectrograms(run_dir, tracks_per_genre=clips_per_genre, n_mels=128,
                                 seconds=30.0, tracks_per_shard=32)
    load_train, load_eval = loading_rate(run_dir, 3.0, 32)
    FIGURES["e_loading_segments_per_s"] = {"training": load_train, "evaluation": load_eval}
    print(f"(e) synthetic: {8 * clips_per_genre} clips; data loading alone {load_train:.0f} "
          f"training segments/s, {load_eval:.0f} evaluation segments/s (one process)")
    runs = [(1, f"nccl_1_rank_batch_{b}", b) for b in batch_sizes]
    runs.append((2, f"gloo_2_ranks_1_gpu_batch_{batch_sizes[0]}", batch_sizes[0]))
    with get_client(workers=2, quiet=True) as client:
        for ranks, name, batch in runs:
            out = run_dir / f"bench-{name}"
            with gpu_sampler(f"e_{name}"):
                config = TrainConfig(arch="naive_bn", epochs=epochs, device="cuda",
                                     batch_size=batch, patience=epochs, segment_seconds=3.0,
                                     out_dir=str(out))
                result = run_cnn(run_dir, config, client, ranks=ranks, progress=False)
            rate = training_rate(out)
            FIGURES[f"e_{name}"] = {"segments_per_s": rate,
                                    "backends": [r["backend"] for r in result["ranks"]],
                                    "devices": [r["device"] for r in result["ranks"]]}
            print(f"    {name}: {rate:.0f} training segments/s, backends "
                  f"{[r['backend'] for r in result['ranks']]}, GPU peak memory "
                  f"{FIGURES.get(f'e_{name}_gpu_mem_peak_mib')} MiB, mean utilisation "
                  f"{FIGURES.get(f'e_{name}_gpu_util_mean_pct')} %")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="FMA-shaped data folder")
    parser.add_argument("--workers", type=int, default=8, help="featurize workers (default 8)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each CNN run")
    parser.add_argument("--clips-per-genre", type=int, default=64,
                        help="synthetic clips per genre for (e) (default 64)")
    parser.add_argument("--batch-sizes", default="32,256",
                        help="batch sizes per rank of (e)'s 1-rank runs (default 32,256)")
    parser.add_argument("--only", default="a,c,d,e", help="steps to run (default a,c,d,e)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing to measure")
        return 0
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {os.cpu_count()} CPUs",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        work = Path(tmp)
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        steps = {
            "a": ("a_b_mel", lambda: mel_checks(args.data)),
            "c": ("c_featurize", lambda: featurize_checks(args.data, work, args.workers)),
            "d": ("d_cnn_cli", lambda: cnn_cli_check(work / "run-cuda", max(args.epochs, 8))),
            "e": ("e_cnn_throughput",
                  lambda: cnn_throughput(work, args.clips_per_genre, args.epochs, batch_sizes)),
        }
        for key in args.only.split(","):
            step(*steps[key])
    if args.json:
        args.json.write_text(json.dumps(FIGURES, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
