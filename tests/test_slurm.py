"""fmadask on a real one-node SLURM (scripts/slurm-local.sh: Debian's slurmctld, slurmd, munge).

The demo job end to end through dask-jobqueue; worker jobs that retire before a walltime shorter
than the job and are replaced; worker jobs cancelled mid-featurize and mid-CNN; jobs that cannot
start; and no worker job left in the queue after a run, a failure, Ctrl-C or a killed client.
Skipped, with SLURM's own words, where the one-node SLURM cannot start (not root, no apt).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from fmadask.jobspec import load_job
from fmadask.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm-local.sh"
FMADASK = [sys.executable, "-m", "fmadask.cli"]

# The demo job, small: 31 tracks of 5 s, two classical models, a short CNN.
SMALL = ["--set", "data.sample_tracks_per_genre=3", "--set", "data.sample_seconds=5",
         "--set", 'classical.models=["logistic_regression", "random_forest"]',
         "--set", "classical.search=none", "--set", "cnn.epochs=8", "--set", "cnn.crops=1",
         "--set", "cluster.workers=2", "--set", "cluster.worker_timeout=600"]


# ----------------------------------------------------------------- settings (no SLURM needed)


def test_a_walltime_is_taken_as_written_unquoted_in_a_spec_and_in_set(tmp_path: Path) -> None:
    spec_file = tmp_path / "job.toml"
    spec_file.write_text((ROOT / "jobs" / "demo.toml").read_text().replace(
        'kind = "local"', 'kind = "slurm"\nwalltime = 04:00:00'))
    assert load_job(spec_file).cluster.walltime == "04:00:00"
    spec = load_job(ROOT / "jobs" / "demo.toml", ["cluster.walltime=12:30:00"])
    assert spec.cluster.walltime == "12:30:00"
    assert load_job(ROOT / "jobs" / "demo.toml",
                    ['cluster.walltime="2-00:00:00"']).cluster.walltime == "2-00:00:00"
    with pytest.raises(ConfigError, match=r"cluster.walltime must be a walltime \[D-\]HH:MM:SS"):
        load_job(ROOT / "jobs" / "demo.toml", ['cluster.walltime="4h"'])


def test_workers_retire_before_the_walltime_staggered() -> None:
    from fmadask.slurm import lifetime_settings

    for walltime in ("00:02:00", "01:00:00", "04:00:00", "2-00:00:00"):
        life, stagger = lifetime_settings(walltime, "auto")
        wall = sum(int(p) * s for p, s in zip(walltime.split("-")[-1].split(":"),
                                              (3600, 60, 1))) + (172800 if "-" in walltime else 0)
        assert 0 < stagger < life and life + stagger < wall      # the latest retirement is early
        assert wall - (life + stagger) <= 600                    # ... but not much too early
    assert lifetime_settings("04:00:00", "none") is None
    assert lifetime_settings("04:00:00", 3600.0) == (3600.0, 300.0)
    with pytest.raises(Exception, match="does not end before the walltime"):
        lifetime_settings("01:00:00", 3500.0)


def test_job_settings_speak_per_job_and_per_worker() -> None:
    pytest.importorskip("dask_jobqueue")
    from fmadask.errors import ConfigError
    from fmadask.slurm import job_settings

    s = job_settings({"cores": 8, "processes": 4, "memory": "3GiB", "walltime": "04:00:00",
                      "lifetime": "auto", "queue": "cpu", "account": "",
                      "job_directives": ["--exclusive"]})
    assert (s["cores"], s["processes"], s["memory"]) == (8, 4, "12.00GiB")   # 4 x 3 GiB
    assert s["queue"] == "cpu" and "account" not in s
    assert s["job_extra_directives"] == ["--exclusive"]
    assert s["worker_extra_args"] == ["--lifetime=13500s", "--lifetime-stagger=300s"]
    with pytest.raises(ConfigError, match="processes.* 4 is more than .*cores.* 2"):
        job_settings({"cores": 2, "processes": 4})
    with pytest.raises(ConfigError, match="'lots' is not a memory size"):
        job_settings({"memory": "lots"})


def test_run_check_prints_the_worker_job_script() -> None:
    pytest.importorskip("dask_jobqueue")
    out = subprocess.run([*FMADASK, "run", str(ROOT / "jobs" / "demo.toml"), "--check",
                          "--set", "cluster.kind=slurm", "--set", "cluster.workers=16",
                          "--set", "cluster.cores=8", "--set", "cluster.processes=8",
                          "--set", "cluster.walltime=08:00:00", "--set", "cluster.queue=cpu",
                          "--set", 'cluster.job_directives=["--exclusive"]'],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    script = out.stdout
    assert "16 worker processes in 2 job(s) of 8" in script
    for line in ("#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G", "#SBATCH -t 08:00:00",
                 "#SBATCH -p cpu", "#SBATCH --exclusive", "--lifetime=", "--nworkers 8"):
        assert line in script, line


def test_describe_queue_names_slurms_reason() -> None:
    from fmadask.slurm import describe_queue

    said = describe_queue([("1", "PENDING", "PartitionConfig"), ("2", "RUNNING", "None")])
    assert said.startswith("1 worker job pending (PartitionConfig: the job asks for more")
    assert said.endswith(", 1 starting")


# -------------------------------------------------------------------------- the one-node SLURM


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A running one-node SLURM and the environment a client needs (SLURM_CONF, and Dask's
    jobqueue settings: short death timeout, logs in a temporary folder)."""
    pytest.importorskip("dask_jobqueue")
    if os.geteuid() != 0:
        pytest.skip("the one-node SLURM needs root (munge's user, slurmd)")
    started = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True,
                             timeout=600)
    if started.returncode != 0:
        pytest.skip(f"SLURM cannot start here: {started.stderr.strip().splitlines()[-1:]}")
    conf = re.search(r"SLURM_CONF=(\S+)", subprocess.run(
        ["bash", str(SCRIPT), "env"], capture_output=True, text=True).stdout).group(1)
    folder = tmp_path_factory.mktemp("jobqueue")
    (folder / "jobqueue.yaml").write_text(
        "jobqueue:\n  slurm:\n    death-timeout: 15\n"
        f"    local-directory: {folder}\n    log-directory: {folder / 'logs'}\n")
    env = {**os.environ, "SLURM_CONF": conf, "DASK_CONFIG": str(folder)}
    yield env
    _cancel_all(env)


def _queue(env: dict[str, str]) -> list[str]:
    """fmadask's worker jobs in the queue: 'id state reason' each."""
    out = subprocess.run(["squeue", "-h", "-n", "fmadask-worker", "-o", "%i %T %r"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\n")[:-1]


def _cancel_all(env: dict[str, str]) -> None:
    subprocess.run(["scancel", "-n", "fmadask-worker"], env=env, timeout=30)


def _no_job_left(env: dict[str, str], within_s: float = 30.0) -> list[str]:
    deadline = time.monotonic() + within_s
    while (left := _queue(env)) and time.monotonic() < deadline:
        time.sleep(1)
    return left


def _run(env: dict[str, str], tmp: Path, run: str, *extra: str, timeout: float = 900
         ) -> subprocess.CompletedProcess:
    return subprocess.run([*FMADASK, "run", str(ROOT / "jobs" / "demo.toml"), "--scheduler",
                           "slurm", "--set", f"data.dir={tmp / 'data'}", "--set",
                           f"output.dir={tmp / run}", *SMALL, *extra], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=tmp)


@pytest.fixture(scope="module")
def reference(slurm: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small demo job run end to end on SLURM, without meeting its walltime."""
    tmp = tmp_path_factory.mktemp("slurm-runs")
    done = _run(slurm, tmp, "reference")
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp


def _features(run: Path) -> pd.DataFrame:
    from fmadask.runfolder import read_features

    return read_features(run).sort_index()


def _classical(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "classical" / "results.csv").sort_values("model")[
        ["model", "validation_accuracy", "test_accuracy"]].reset_index(drop=True)


@pytest.mark.slurm
def test_the_demo_job_runs_end_to_end_and_leaves_no_job(slurm, reference: Path) -> None:
    run = reference / "reference"
    assert (run / "fusion" / "report.md").is_file()
    assert len(_features(run)) == 24 and len(_classical(run)) == 2
    assert _no_job_left(slurm) == []


@pytest.mark.slurm
def test_jobs_that_cannot_start_end_in_one_line_and_leave_no_job(slurm, tmp_path: Path) -> None:
    too_big = _run(slurm, tmp_path, "r1", "--set", "cluster.cores=512", "--set",
                   "cluster.processes=1", timeout=120)
    assert too_big.returncode == 2
    line = too_big.stderr.strip().splitlines()[-1]
    assert line.startswith("fmadask: SLURM refuses the worker jobs (")
    assert "512 cores" in line and "cluster.cores" in line
    assert _queue(slurm) == []
    never = _run(slurm, tmp_path, "r2", "--set", 'cluster.job_directives=["--begin=now+1hour"]',
                 "--set", "cluster.worker_timeout=8", timeout=120)
    assert never.returncode == 2
    line = never.stderr.strip().splitlines()[-1]
    assert "no SLURM worker joined within 8 s: 2 worker jobs pending (BeginTime" in line, line
    assert "Traceback" not in never.stderr
    assert _no_job_left(slurm) == []


def _watch(proc: subprocess.Popen, lines: list[str], hooks: dict[str, callable]) -> None:
    """Read the run's output; call each hook once, at the first line that contains its key."""
    for raw in proc.stdout:
        lines.append(raw)
        for key in list(hooks):
            if key in raw:
                hooks.pop(key)()


def _cancel_one(env: dict[str, str]) -> None:
    running = [j.split()[0] for j in _queue(env) if " RUNNING " in j]
    assert running, "no running worker job to cancel"
    subprocess.run(["scancel", running[0]], env=env, check=True, timeout=30)


#: CNN epochs of the walltime run: enough that the job outlasts its workers' 1-minute walltime
#: even on a quiet machine (the reference's 8 take about a minute end to end there). Their
#: lifetime is set to 40 s rather than derived ('auto' is unit-tested above): replaced workers
#: must still retire before the job ends.
EPOCHS = 40


@pytest.mark.slurm
def test_a_walltime_shorter_than_the_job_and_cancelled_jobs_are_survived(
        slurm, reference: Path, tmp_path: Path) -> None:
    """Workers retire before a 1-minute walltime (the job takes longer) and are replaced; a
    worker job cancelled mid-featurize and another mid-CNN are replaced too. Same features and
    classical scores as the reference run; the CNN goes on from its checkpoints."""
    lines: list[str] = []
    proc = subprocess.Popen([*FMADASK, "run", str(ROOT / "jobs" / "demo.toml"), "--scheduler",
                             "slurm", "--set", f"data.dir={reference / 'data'}", "--set",
                             f"output.dir={tmp_path / 'run'}", *SMALL, "--set",
                             "cluster.walltime=00:01:00", "--set", "cluster.lifetime=40",
                             "--set", f"cnn.epochs={EPOCHS}",
                             # every epoch runs: early stopping ended the net at epoch 34 of 40
                             # once the sample's sub-genres made it harder
                             "--set", f"cnn.patience={EPOCHS}"],
                            env=slurm, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watcher = threading.Thread(target=_watch, args=(proc, lines, {
        "== featurize": lambda: _cancel_one(slurm),
        "epoch 2/": lambda: _cancel_one(slurm)}), daemon=True)
    watcher.start()
    assert proc.wait(timeout=1200) == 0, "".join(lines)[-3000:]
    watcher.join(timeout=10)
    assert "resuming from the last checkpoint" in "".join(lines)
    logs = Path(slurm["DASK_CONFIG"]) / "logs"
    assert any("worker-lifetime-reached" in p.read_text() for p in logs.glob("*.err")), \
        "no worker retired before its walltime"
    pd.testing.assert_frame_equal(_features(tmp_path / "run"), _features(reference / "reference"))
    pd.testing.assert_frame_equal(_classical(tmp_path / "run"),
                                  _classical(reference / "reference"))
    metrics = pd.read_csv(tmp_path / "run" / "cnn" / "vgg_gap" / "metrics.csv")
    assert list(metrics["epoch"]) == list(range(1, EPOCHS + 1))
    assert _no_job_left(slurm) == []


@pytest.mark.slurm
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "killed"])
def test_an_interrupted_or_killed_client_leaves_no_job(slurm, reference: Path, tmp_path: Path,
                                                      how: signal.Signals) -> None:
    proc = subprocess.Popen([*FMADASK, "run", str(ROOT / "jobs" / "demo.toml"), "--scheduler",
                             "slurm", "--set", f"data.dir={reference / 'data'}", "--set",
                             f"output.dir={tmp_path / 'run'}", *SMALL], env=slurm, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    up = threading.Event()
    watcher = threading.Thread(target=_watch, args=(proc, lines, {"== featurize": up.set}),
                               daemon=True)
    watcher.start()
    assert up.wait(timeout=300), "".join(lines)
    assert _queue(slurm)
    os.killpg(proc.pid, how)            # the terminal's whole foreground group, as Ctrl-C does
    proc.wait(timeout=120)
    if how == signal.SIGINT:
        assert proc.returncode == 130
        assert _no_job_left(slurm, within_s=30) == []
    else:   # nothing cancels the jobs: the workers end when their scheduler is gone for good
        assert _no_job_left(slurm, within_s=120) == []
