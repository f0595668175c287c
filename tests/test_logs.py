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
