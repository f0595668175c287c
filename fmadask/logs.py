"""The one path of progress lines and warnings: the ``fmadask`` loggers.

Library code logs (``logging.getLogger(__name__)``: INFO for progress, WARNING for warnings) and
never prints; progress bars are tqdm. :func:`show_progress` makes those lines visible as plain
lines on stderr for the command line, and for a caller who asked a stage for ``progress=True``
without configuring logging; a program that configured logging itself keeps its own set-up.
"""
from __future__ import annotations

import logging
import sys


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is at each record (pytest and notebooks replace it)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr


class _Redacted(logging.Formatter):
    """Lines without any URL's password (a warning may name a data URL)."""

    def format(self, record: logging.LogRecord) -> str:
        from fmadask.storage import redact

        return redact(super().format(record))


def show_progress(defer_to_root: bool = False) -> None:
    """Show the ``fmadask`` loggers' INFO records and up on stderr as plain lines.

    Parameters
    ----------
    defer_to_root : bool
        Do nothing when the root logger has a handler (a library call: the program configured
        logging its own way). The command line passes False: it owns the process.

    Nothing is added when the ``fmadask`` logger already has a handler.
    """
    logger = logging.getLogger("fmadask")
    if logger.handlers or (defer_to_root and logging.getLogger().handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(_Redacted("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
