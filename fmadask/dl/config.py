"""Parameters of a CNN training run and their command-line options (no torch import here, so
``fmadask --help`` stays instant)."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from fmadask.errors import ConfigError
from fmadask.options import add_option, check, default
from fmadask.shardcache import ShardCache, gib

#: Net architectures by name (built by :func:`fmadask.dl.nets.build_net`).
ARCHS = ("naive", "naive_bn", "shortchunk_res")
#: TrainConfig fields that are options (``cnn.<field>`` in :data:`fmadask.options.OPTIONS`).
_OPTION_FIELDS = ("epochs", "segment_seconds", "batch_size", "lr", "weight_decay", "optimizer",
                  "lr_schedule", "patience", "gain_db", "masks", "mixup", "label_smoothing",
                  "width", "seed", "device", "cache_dir", "cache_size")


@dataclass
class TrainConfig:
    """Parameters of a CNN training run.

    Attributes
    ----------
    arch : str
        Net name (``naive``, ``naive_bn``, ``shortchunk_res``).
    epochs : int
        Maximum epochs (early stopping may end sooner).
    segment_seconds : float
        Segment length in seconds (converted to frames with params.json's sr and hop).
    batch_size : int
        Segments per rank per step (the global batch is ``batch_size * world_size``).
    lr : float
        Peak learning rate.
    weight_decay : float
        Weight decay (decoupled for AdamW).
    optimizer : str
        ``adamw`` or ``adam`` (the study's).
    lr_schedule : str
        ``onecycle`` (warm-up then cosine decay), ``cosine`` (decay per step) or ``constant``.
    patience : int
        Stop after this many epochs without a lower validation loss.
    gain_db : float
        Training augmentation: random gain of up to this many dB per segment (0: off).
    masks : int
        Training augmentation: SpecAugment frequency and time masks per segment, each (0: off).
    mixup : float
        Training augmentation: mixup's Beta parameter (0: off).
    label_smoothing : float
        Share of each training target spread over all classes (0: off).
    width : int, optional
        Channel width of the net (architecture default when None).
    seed : int
        Seed of initial weights, shuffling and segment offsets.
    device : str
        ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    cache_dir : str
        Local folder of the host's shard cache for a run folder in object storage ('': the
        default place, see :mod:`fmadask.shardcache`).
    cache_size : float
        Bound of that cache in GiB.
    amp : bool
        Mixed precision (float16 autocast + GradScaler) on CUDA; ignored on CPU.
    num_workers : int
        DataLoader worker processes (forced to 0 inside daemonic processes such as Dask workers).
    dist_timeout_s : float
        Timeout of the process group's rendezvous and collectives: how long a rank waits for a
        peer that stopped.
    out_dir : str, optional
        Output folder (default ``RUN_DIR/cnn``).
    """

    arch: str = default("cnn.arch")
    epochs: int = default("cnn.epochs")
    segment_seconds: float = default("cnn.segment_seconds")
    batch_size: int = default("cnn.batch_size")
    lr: float = default("cnn.lr")
    weight_decay: float = default("cnn.weight_decay")
    optimizer: str = default("cnn.optimizer")
    lr_schedule: str = default("cnn.lr_schedule")
    patience: int = default("cnn.patience")
    gain_db: float = default("cnn.gain_db")
    masks: int = default("cnn.masks")
    mixup: float = default("cnn.mixup")
    label_smoothing: float = default("cnn.label_smoothing")
    width: int | None = default("cnn.width")
    seed: int = default("cnn.seed")
    device: str = default("cnn.device")
    cache_dir: str = default("cnn.cache_dir")
    cache_size: float = default("cnn.cache_size")
    amp: bool = True
    num_workers: int = 0
    dist_timeout_s: float = 180.0
    out_dir: str | None = None

    def validate(self) -> None:
        """Raise ConfigError (an :class:`~fmadask.options.OptionError`) naming the first invalid
        field."""
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown CNN architecture {self.arch!r}: "
                              f"choose one of {', '.join(ARCHS)}")
        for name in _OPTION_FIELDS:
            check(f"cnn.{name}", getattr(self, name))

    def shard_cache(self) -> ShardCache:
        """The shard cache these settings describe (for a run folder in object storage)."""
        return ShardCache(self.cache_dir or None, gib(self.cache_size))


def config_options(args: argparse.Namespace) -> dict:
    """The :class:`TrainConfig` fields among parsed :func:`add_config_arguments` options."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The training options shared by ``fmadask cnn`` and ``python -m fmadask.dl.trainer``
    (defaults, help and rules from :data:`fmadask.options.OPTIONS`)."""
    add_option(parser, "cnn.arch", choices=list(ARCHS))
    add_option(parser, "cnn.epochs", metavar="N")
    add_option(parser, "cnn.segment_seconds", metavar="S")
    add_option(parser, "cnn.batch_size", metavar="B")
    add_option(parser, "cnn.lr", metavar="LR")
    add_option(parser, "cnn.optimizer", metavar="NAME")
    add_option(parser, "cnn.lr_schedule", metavar="NAME")
    add_option(parser, "cnn.patience", metavar="N")
    add_option(parser, "cnn.gain_db", metavar="DB")
    add_option(parser, "cnn.masks", metavar="N")
    add_option(parser, "cnn.mixup", metavar="ALPHA")
    add_option(parser, "cnn.label_smoothing", metavar="EPS")
    add_option(parser, "cnn.width", metavar="C")
    add_option(parser, "cnn.seed", metavar="K")
    add_option(parser, "cnn.cache_dir", metavar="DIR")
    add_option(parser, "cnn.cache_size", metavar="GIB")
    parser.add_argument("--out", dest="out_dir", metavar="DIR",
                        help="output folder (default RUN_DIR/cnn)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint in the output folder")
