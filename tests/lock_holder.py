"""Another process holding a run-folder lock, for the tests of a second writer."""
from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def held_lock(folder: Path, owner: str) -> Iterator[subprocess.Popen]:
    """A child process that takes ``folder``'s lock as ``owner`` and holds it; it is killed on
    exit (so its lock is left behind, stale)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from fmadask.lock import RunLock\n"
         "with RunLock(sys.argv[1], sys.argv[2]):\n    print('held', flush=True)\n"
         "    time.sleep(60)", str(folder), owner], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()
