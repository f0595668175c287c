"""Errors a user can cause.

Every exception here carries a message that is one line naming the thing and the fix. The CLI
prints ``fmadask: <message>`` and exits with status 2 instead of a traceback.
"""
from __future__ import annotations

import errno
import re


class FmadaskError(Exception):
    """A problem the user can fix: a missing path, a wrong schema, an unreachable scheduler."""


class DataError(FmadaskError):
    """An input file or folder is missing or is not in FMA's format."""


class ConfigError(FmadaskError):
    """A job spec, option or argument is invalid."""


class ClusterError(FmadaskError):
    """A Dask scheduler or cluster could not be reached or started."""


class DownloadError(FmadaskError):
    """A download failed, or its checksum did not match."""


def os_error_line(exc: OSError) -> str:
    """The one line of an OSError that reached the command line: the file and the reason, with
    "free space" advised only when the disk or the quota is full (ENOSPC, EDQUOT), never for a
    timeout (a cluster without workers) or a file that cannot be read.

    Parameters
    ----------
    exc : OSError

    Returns
    -------
    str
        One line, without the ``fmadask:`` prefix.
    """
    reason = " ".join(str(exc.strerror or exc).split())[:300] or type(exc).__name__
    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"cannot write{where}: {reason}: free space or choose another folder, then "
                "re-run the same command")
    if isinstance(exc, TimeoutError):
        return (f"timed out: {reason}: check that the cluster has workers and its scheduler and "
                "data can be reached, then re-run the same command")
    return (f"{where.strip() + ': ' if where else ''}{reason} ({type(exc).__name__}): fix "
            "that, then re-run the same command")


class WorkersLeft(ClusterError):
    """Workers left the cluster with work of theirs unfinished (a SLURM job past its lifetime or
    cancelled, a lost node): the work can go on from what is complete once others are there."""


#: The ``user:password@`` of a URL, anywhere in a text (it ends at the first ``/``, blank or
#: quote after ``scheme://``).
_USERINFO = re.compile(r"\b([a-zA-Z][\w+.-]*://)[^/@\s'\"]*@")


def redact(text: object) -> str:
    """``text`` (a location, a message, a record) without the ``user:password@`` of any URL
    in it: safe to print and record.

    The one redaction, applied where text leaves fmadask: the command line's messages and
    logged lines, the records and ``job.toml`` of a run folder, the errors it stores."""
    return _USERINFO.sub(r"\1", str(text))
