"""Where a DDP rank sits and how it fails: its place in the job (:class:`DistSpec`), its device
and process group backend, the failure it reports to the launcher (:class:`RankFailure`), and
leaving the group. Used by :mod:`fmadask.dl.trainer` (each rank) and :mod:`fmadask.dl.launch`.
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from fmadask.errors import ConfigError, FmadaskError

if TYPE_CHECKING:
    from fmadask.dl.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistSpec:
    """Where a rank sits in the job: rank, world size, index among the ranks of its host (and so
    its GPU), how many ranks share its host, rendezvous address."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 0
    local_world_size: int = 1

    @classmethod
    def from_env(cls) -> DistSpec:
        """torchrun's variables; a single rank on a free local port when RANK is not set."""
        if "RANK" not in os.environ:
            return cls(master_port=free_port())
        try:
            return cls(rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]),
                       local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                       local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
                       master_addr=os.environ["MASTER_ADDR"],
                       master_port=int(os.environ["MASTER_PORT"]))
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"torch.distributed environment incomplete ({exc}): set RANK, "
                              "WORLD_SIZE, MASTER_ADDR and MASTER_PORT or run under torchrun"
                              ) from None


@dataclass(eq=False)
class RankFailure(Exception):
    """A rank stopped with an exception; carries what the launcher needs to name the cause.

    It crosses processes (a Dask worker to the client), so it pickles as its fields.

    Attributes
    ----------
    rank : int
        The rank that stopped.
    host : str
        Its host name.
    exc_type : str
        Name of the exception's type.
    message : str
        First line of the exception's text.
    when : float
        When it was caught, seconds since the epoch.
    peer : bool
        True when the exception came from the communication layer: most likely a consequence of
        another rank's failure.
    user_error : FmadaskError, optional
        The exception itself when a user can fix its cause (missing data, a bad option): shown as
        itself, not as a crash.
    """

    rank: int
    host: str
    exc_type: str
    message: str
    when: float
    peer: bool
    user_error: FmadaskError | None = None

    def __post_init__(self) -> None:
        super().__init__(self.rank, self.host, self.exc_type, self.message, self.when, self.peer)

    def __reduce__(self):
        return (type(self), (self.rank, self.host, self.exc_type, self.message, self.when,
                             self.peer, self.user_error))

    def __str__(self) -> str:
        return f"rank {self.rank} on {self.host}: {self.exc_type}: {self.message}"


_PEER_HINTS = ("connection closed", "connection reset", "broken pipe", "timed out", "timeout",
               "gloo", "nccl", "socket", "peer")


def is_peer_failure(exc: BaseException) -> bool:
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(h in text for h in _PEER_HINTS)


def free_port() -> int:
    """A TCP port that is free on this host now (bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def select_device(config: TrainConfig, local_rank: int) -> torch.device:
    """The rank's device: ``cuda:<local_rank mod GPUs>`` when CUDA is asked for or auto."""
    if config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"CUDA requested but not available on {socket.gethostname()}: "
                          "train on the CPU or on GPU workers")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def backend_for(device: torch.device, local_world_size: int) -> str:
    """The process group backend: NCCL when each rank of a host has a GPU of its own, else gloo.

    NCCL refuses two ranks on one GPU, which is what a host with more ranks than GPUs gets
    (``select_device`` shares them round-robin); gloo all-reduces CUDA tensors too, only slower.
    Every rank of a host computes the same answer, so the whole job agrees.
    """
    if device.type != "cuda":
        return "gloo"
    return "nccl" if local_world_size <= torch.cuda.device_count() else "gloo"


def gather_all(obj):
    """Every rank's ``obj``, in rank order, on every rank."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def teardown(abort: bool) -> None:
    """Leave the process group (after a failure, NCCL communicators are aborted, not drained)."""
    if not dist.is_initialized():
        return
    try:
        nccl = dist.get_backend() == "nccl"
        if abort and nccl and hasattr(dist.distributed_c10d, "_abort_process_group"):
            dist.distributed_c10d._abort_process_group()
        else:
            dist.destroy_process_group()
    except Exception as exc:  # the group is broken anyway; do not mask the original error
        log.warning("process group teardown: %s", exc)
