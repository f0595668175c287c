"""Failures of the machinery end in one line (issue 9, item 6): a scheduler killed mid-job and a
disk that fills up. Both run the real command in a subprocess against real Dask processes."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PY = [sys.executable, "-m"]
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _error_lines(stderr: str) -> list[str]:
    """stderr without the dashboard link and progress bars: what a user reads as the error."""
    return [line for line in stderr.splitlines()
            if line.strip() and not line.startswith(("Dask dashboard", "featurize:"))
            and "track/s]" not in line]


@pytest.mark.slow
def test_a_scheduler_killed_mid_job_ends_in_one_line(sample_dir: Path, tmp_path: Path) -> None:
    scheduler = subprocess.Popen(
        [*PY, "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--scheduler-file", str(tmp_path / "s.json")],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        for _ in range(600):
            if (tmp_path / "s.json").is_file():
                break
            time.sleep(0.1)
        address = json.loads((tmp_path / "s.json").read_text())["address"]
        worker = subprocess.Popen(
            [*PY, "distributed.cli.dask_worker", address, "--nworkers", "1", "--nthreads", "1",
             "--no-dashboard"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # the worker joins first: otherwise the job says once that it waits for one (a second
        # line, right on a loaded machine), which is not what this test is about
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=300)
        run = tmp_path / "run"
        job = subprocess.Popen(
            [*PY, "fmadask.cli", "featurize", str(sample_dir), "--out", str(run),
             "--partition-size", "2", "--scheduler", address],
            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(1200):            # until the first partition is complete
            if list((run / "_partitions").glob("part-*.json")) if (run / "_partitions").is_dir() \
                    else False:
                break
            time.sleep(0.1)
        scheduler.send_signal(signal.SIGKILL)
        out, err = job.communicate(timeout=120)
    finally:
        for proc in (scheduler, worker):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = _error_lines(err)
    assert job.returncode == 2, err
    assert len(lines) == 1 and lines[0].startswith("fmadask: lost the Dask scheduler"), err
    assert address in lines[0]


@pytest.mark.slow
def test_a_disk_that_fills_up_ends_in_one_line(sample_dir: Path, tmp_path: Path) -> None:
    """On a 1.5 MB tmpfs (own mount namespace: root needed) the spectrogram shards do not fit:
    no worker dies of SIGBUS, the command says which partitions failed and why, in one line."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare to mount a small tmpfs")
    full = tmp_path / "full"
    full.mkdir()
    command = (f"mount -t tmpfs -o size=1500k tmpfs {full} && exec {sys.executable} -m "
               f"fmadask.cli featurize {sample_dir} --out {full / 'run'} --partition-size 4 "
               "--workers 1")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", command], env=ENV, capture_output=True,
                          text=True, timeout=300)
    if "mount" in proc.stderr and "permission denied" in proc.stderr.lower():
        pytest.skip("mounting a tmpfs is not permitted here")
    lines = _error_lines(proc.stderr)
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "No space left on device" in lines[0], proc.stderr
    assert "SIGBUS" not in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_disk_full_before_the_run_is_recorded_resumes_once_space_is_freed(
        sample_dir: Path, tmp_path: Path) -> None:
    """The disk fills up at the very start, before ``featurize.json`` is written (nothing free,
    room for the lock only, room for the lock and one more page): the job ends in one line that
    says to free space and re-run, and the same command re-run once space is free resumes
    (the folder is not refused as "not an fmadask run folder", no empty lock is left)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare to mount a small tmpfs")
    full, logs = tmp_path / "full", tmp_path / "logs"
    full.mkdir()
    logs.mkdir()
    featurize = (f"{sys.executable} -m fmadask.cli featurize {sample_dir} --out {full / 'run'} "
                 "--partition-size 8 --workers 1")
    steps = [f"mount -t tmpfs -o size=64m tmpfs {full} || exit 3"]
    for leave in (0, 4, 8):      # KiB left free
        steps += [f"dd if=/dev/zero of={full / 'filler'} bs=64k 2>/dev/null",
                  f"truncate -s -{leave}K {full / 'filler'}",
                  f"{featurize} >/dev/null 2>{logs}/{leave}-full.err",
                  f"echo $? >{logs}/{leave}-full.rc",
                  f"rm {full / 'filler'}",
                  f"{featurize} >/dev/null 2>{logs}/{leave}-rerun.err",
                  f"echo $? >{logs}/{leave}-rerun.rc",
                  f"rm -r {full / 'run'}"]
    proc = subprocess.run(["unshare", "-m", "sh", "-c", "; ".join(steps)], env=ENV,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode == 3:
        pytest.skip("mounting a tmpfs is not permitted here")
    for leave in (0, 4, 8):
        err = (logs / f"{leave}-full.err").read_text()
        lines = _error_lines(err)
        assert (logs / f"{leave}-full.rc").read_text().strip() == "2", err
        assert len(lines) == 1 and "No space left on device" in lines[0] \
            and "re-run the same command" in lines[0], err
        err = (logs / f"{leave}-rerun.err").read_text()
        assert (logs / f"{leave}-rerun.rc").read_text().strip() == "0", (leave, err)
