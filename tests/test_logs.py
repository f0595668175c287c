"""The one progress path: library lines are ``fmadask`` log records, shown on stderr once."""
from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import logging, sys
{setup}
from fmadask.logs import show_progress
show_progress(defer_to_root={defer})
show_progress(defer_to_root={defer})          # twice: still one handler
logging.getLogger("fmadask.ml.train").info("classical: a progress line")
logging.getLogger("fmadask.pipeline.featurize").warning("warning: a warning")
"""


def _stderr(setup: str = "", defer: bool = True) -> str:
    code = SCRIPT.format(setup=setup, defer=defer)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout == ""
    return done.stderr


def test_progress_lines_reach_stderr_once_as_plain_lines() -> None:
    assert _stderr() == "classical: a progress line\nwarning: a warning\n"


def test_a_program_that_configured_logging_keeps_its_own_format() -> None:
    err = _stderr("logging.basicConfig(level=logging.INFO, format='APP %(name)s: %(message)s')")
    assert err == ("APP fmadask.ml.train: classical: a progress line\n"
                   "APP fmadask.pipeline.featurize: warning: a warning\n")


def test_the_command_line_shows_progress_whatever_the_root_logger() -> None:
    err = _stderr("logging.basicConfig(level=logging.WARNING, format='APP %(message)s')",
                  defer=False)
    assert err.startswith("classical: a progress line\n")


def test_ctrl_c_in_a_terminal_prints_only_the_one_line_and_leaves_nothing_running(
        sample_dir, tmp_path) -> None:
    """A terminal's Ctrl-C signals the whole foreground process group: the command and its
    local Dask workers. Only the command's one line may be shown (workers printed
    KeyboardInterrupt tracebacks, their nannies warnings), with exit status 130."""
    import contextlib
    import os
    import signal
    import threading
    import time
    from pathlib import Path

    import psutil

    fmadask = str(Path(sys.executable).with_name("fmadask"))
    proc = subprocess.Popen([fmadask, "featurize", str(sample_dir), "--out", str(tmp_path / "run"),
                             "--workers", "2", "--partition-size", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)      # its own group, as a terminal's job
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(
        lambda: os.read(proc.stderr.fileno(), 4096), b"")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while b"featurize:" not in b"".join(chunks):    # the progress bar: tasks are running
        assert proc.poll() is None and time.monotonic() < deadline, b"".join(chunks).decode()
        time.sleep(0.05)
    group = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    assert len(group) >= 3                            # the command and its two workers at least
    os.killpg(proc.pid, signal.SIGINT)

    def running() -> list[int]:
        alive = []
        for pid in group:
            with contextlib.suppress(psutil.NoSuchProcess):
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
        return alive

    try:
        code = proc.wait(timeout=120)
        deadline = time.monotonic() + 10       # the workers' exit is seen a moment later
        while running() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = running()
    finally:
        for pid in running():                  # whatever the outcome: nothing of ours stays
            os.kill(pid, signal.SIGKILL)
    reader.join(timeout=10)
    err = b"".join(chunks).decode()
    lines = [line for line in err.replace("\r", "\n").splitlines()
             if line.strip() and not line.startswith("featurize:")]
    assert code == 130, err
    assert lines == ["fmadask: interrupted; re-run the same command to resume"], err
    assert left == [], left
