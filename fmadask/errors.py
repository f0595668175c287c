"""Errors a user can cause.

Every exception here carries a message that is one line naming the thing and the fix. The CLI
prints ``fmadask: <message>`` and exits with status 2 instead of a traceback.
"""
from __future__ import annotations


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


class WorkersLeft(ClusterError):
    """Workers left the cluster with work of theirs unfinished (a SLURM job past its lifetime or
    cancelled, a lost node): the work can go on from what is complete once others are there."""
