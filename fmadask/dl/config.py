"""Parameters of a CNN training run and their command-line options (no torch import here, so
``fmadask --help`` stays instant)."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from fmadask.errors import ConfigError

#: Net architectures by name (built by :func:`fmadask.dl.nets.build_net`).
ARCHS = ("naive", "naive_bn", "shortchunk_res")
OPTIMIZERS = ("adamw", "adam")
LR_SCHEDULES = ("onecycle", "cosine", "constant")


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
    amp : bool
        Mixed precision (float16 autocast + GradScaler) on CUDA; ignored on CPU.
    num_workers : int
        DataLoader worker processes (forced to 0 inside daemonic processes such as Dask workers).
    dist_timeout_s : float
        Timeout of the process group's rendezvous and collectives: how long a rank waits for a
        peer that stopped.
    out_dir : str, optional
        Output folder (default ``RUN_DIR/cnn``).
    probe : bool
        Record digests of the local gradients, the all-reduced gradients and the weights around
        the first optimiser step (and the tracks each rank read in epoch 0): evidence that DDP
        synchronised ranks that saw different data. Costs one extra forward/backward.
    inject_failure : tuple of int, optional
        ``(rank, step)``: raise inside that global training step on that rank. For testing the
        failure path.
    """

    arch: str = "naive"
    epochs: int = 20
    segment_seconds: float = 3.0
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    lr_schedule: str = "onecycle"
    patience: int = 5
    # The recipe of new work (see fmadask.dl.augment), chosen on validation: random gain and
    # label smoothing; masks and mixup cost validation accuracy within 20 epochs (the ablation
    # in README.md, "The CNN recipe and the fusion"), so they are off unless asked for.
    gain_db: float = 6.0
    masks: int = 0
    mixup: float = 0.0
    label_smoothing: float = 0.1
    width: int | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_workers: int = 0
    dist_timeout_s: float = 180.0
    out_dir: str | None = None
    probe: bool = False
    inject_failure: tuple[int, int] | None = None

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field."""
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown CNN architecture {self.arch!r}: "
                              f"choose one of {', '.join(ARCHS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}: "
                              f"choose one of {', '.join(OPTIMIZERS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown learning-rate schedule {self.lr_schedule!r}: "
                              f"choose one of {', '.join(LR_SCHEDULES)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"unknown device {self.device!r}: choose auto, cpu or cuda")
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.segment_seconds <= 0 or self.lr <= 0:
            raise ConfigError("segment_seconds and lr must be positive")
        for name in ("gain_db", "masks", "mixup"):
            if not getattr(self, name) >= 0:  # also refuses NaN
                raise ConfigError(f"{name} must be 0 (off) or positive, got {getattr(self, name)}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


def config_options(args: argparse.Namespace) -> dict:
    """The :class:`TrainConfig` fields among parsed :func:`add_config_arguments` options."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The training options shared by ``fmadask cnn`` and ``python -m fmadask.dl.trainer``."""
    d = TrainConfig()
    parser.add_argument("--arch", choices=list(ARCHS), default=d.arch,
                        help=f"net architecture (default {d.arch})")
    parser.add_argument("--epochs", type=int, default=d.epochs, metavar="N",
                        help=f"maximum epochs (default {d.epochs})")
    parser.add_argument("--segment-seconds", dest="segment_seconds", type=float, metavar="S",
                        default=d.segment_seconds,
                        help=f"segment length (default {d.segment_seconds:g} s)")
    parser.add_argument("--batch-size", dest="batch_size", type=int, metavar="B",
                        default=d.batch_size,
                        help=f"segments per rank per step (default {d.batch_size})")
    parser.add_argument("--lr", type=float, default=d.lr,
                        help=f"peak learning rate (default {d.lr:g})")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer,
                        help=f"'adam' is the study's (default {d.optimizer})")
    parser.add_argument("--lr-schedule", dest="lr_schedule", choices=LR_SCHEDULES,
                        default=d.lr_schedule,
                        help=f"learning-rate schedule (default {d.lr_schedule})")
    parser.add_argument("--patience", type=int, default=d.patience, metavar="N",
                        help="early stopping: epochs without a better validation loss "
                             f"(default {d.patience})")
    parser.add_argument("--gain-db", dest="gain_db", type=float, default=d.gain_db, metavar="DB",
                        help=f"augmentation: random gain up to +-DB dB (default {d.gain_db:g}; "
                             "0 off)")
    parser.add_argument("--masks", type=int, default=d.masks, metavar="N",
                        help=f"augmentation: N frequency and N time masks (default {d.masks}; "
                             "0 off)")
    parser.add_argument("--mixup", type=float, default=d.mixup, metavar="ALPHA",
                        help=f"augmentation: mixup Beta(ALPHA, ALPHA) (default {d.mixup:g}; "
                             "0 off)")
    parser.add_argument("--label-smoothing", dest="label_smoothing", type=float,
                        default=d.label_smoothing, metavar="EPS",
                        help=f"label smoothing (default {d.label_smoothing:g}; 0 off)")
    parser.add_argument("--width", type=int, metavar="C",
                        help="channel width (default: the architecture's)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--out", dest="out_dir", metavar="DIR",
                        help="output folder (default RUN_DIR/cnn)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint in the output folder")
