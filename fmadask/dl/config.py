"""Parameters of a CNN training run and their command-line options (no torch import here, so
``fmadask --help`` stays instant)."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from fmadask.flags import add_options
from fmadask.options import ARCHS, CnnOptions, CnnRunOptions
from fmadask.shardcache import ShardCache, gib

__all__ = ["ARCHS", "TrainConfig", "add_config_arguments", "config_options"]


@dataclass(frozen=True, kw_only=True)
class TrainConfig(CnnOptions):
    """Parameters of a CNN training run: every option of :class:`fmadask.options.CnnOptions`
    (``arch``, ``epochs``, ``lr``, ``weight_decay``, ``lr_schedule``, ``patience``, the
    augmentation, ``device``, the shard cache ... with their defaults, rules and help there),
    validated when made, and the run's own settings below.

    Attributes
    ----------
    amp : bool
        Mixed precision (float16 autocast + GradScaler) on CUDA; ignored on CPU.
    num_workers : int
        DataLoader worker processes (forced to 0 inside daemonic processes such as Dask workers).
    dist_timeout_s : float
        Timeout of the process group's rendezvous and collectives: how long a rank waits for a
        peer that stopped.
    out_dir : str, optional
        Output folder (default ``RUN_DIR/cnn``).
    target : {'genre_top', 'genres_all'}
        What the net learns (``[data] target``): one top-level genre per track, or every genre
        of a track (:mod:`fmadask.dl.task`).
    """

    amp: bool = True
    num_workers: int = 0
    dist_timeout_s: float = 180.0
    out_dir: str | None = None
    target: str = "genre_top"

    def shard_cache(self) -> ShardCache:
        """The shard cache these settings describe (for a run folder in object storage)."""
        return ShardCache(self.cache_dir or None, gib(self.cache_size))


def config_options(args: argparse.Namespace) -> dict:
    """The :class:`TrainConfig` fields among parsed :func:`add_config_arguments` options."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def add_config_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """The training options shared by ``fmadask cnn`` and ``python -m fmadask.dl.trainer``: every
    command-line option of :class:`~fmadask.options.CnnOptions` (less ``skip``), then the run's
    output folder and ``--resume``."""
    add_options(parser, CnnOptions, skip=skip)
    parser.add_argument("--out", dest="out_dir", metavar="DIR",
                        help="output folder (default RUN_DIR/cnn)")
    add_options(parser, CnnRunOptions)
