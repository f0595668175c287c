"""Hooks into a rank's training loop (:class:`Callback`, which sees each :class:`Step`), and
:func:`digest`, which tells bit-identical tensors (the tests' probes of DDP's synchronisation)."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def digest(tensors: Iterable[torch.Tensor | None]) -> str:
    """SHA-1 of the tensors' bytes (as float32, on the CPU): equal digests mean bit-identical
    tensors. ``None`` entries (a parameter without a gradient) are skipped."""
    h = hashlib.sha1()
    for t in tensors:
        if t is not None:
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class Step:
    """A training step as :class:`Callback` methods see it.

    Attributes
    ----------
    rank : int
        This rank.
    epoch : int
        Epoch index, counted from 0.
    index : int
        Step within the epoch, from 0.
    global_step : int
        ``epoch * steps_per_epoch + index``.
    steps_per_epoch : int
        Training steps per epoch on every rank.
    model : torch.nn.Module
        The bare net (its parameters and their ``.grad``).
    ddp : DistributedDataParallel
        The net as wrapped for training (its forward/backward all-reduce the gradients).
    optimizer : torch.optim.Optimizer
        The optimiser.
    x : torch.Tensor
        Batch of standardised segments, shape (batch, 1, n_mels, frames), on the rank's device,
        before training augmentation.
    y : torch.Tensor
        Class indices, shape (batch,), on the rank's device.
    track_ids : torch.Tensor
        Track id of each segment, shape (batch,), on the CPU.
    """

    rank: int
    epoch: int
    index: int
    global_step: int
    steps_per_epoch: int
    model: nn.Module
    ddp: DistributedDataParallel
    optimizer: torch.optim.Optimizer
    x: torch.Tensor
    y: torch.Tensor
    track_ids: torch.Tensor


class Callback:
    """Hooks into a rank's training loop; each method does nothing here, a subclass overrides
    those it needs (to inspect or test a run: the probes of ``tests/cnn_callbacks.py``).

    Every rank runs its own copy: callbacks travel to the Dask workers pickled with the rank's
    task, so a class from a module the workers cannot import must travel by value
    (``cloudpickle.register_pickle_by_value``). What a copy reports comes back in that rank's
    result, ``result["callbacks"][name]``.
    """

    #: Key of this callback's :meth:`state` in a rank's result (unique among a run's callbacks).
    name: str = "callback"

    def on_batch_start(self, step: Step) -> None:
        """Before the forward pass of a training step."""

    def on_after_backward(self, step: Step) -> None:
        """After the backward pass (the gradients are all-reduced), before the optimiser step."""

    def on_step_end(self, step: Step) -> None:
        """After the optimiser and learning-rate scheduler steps."""

    def on_epoch_end(self, metrics: dict) -> None:
        """After an epoch was trained and validated; ``metrics`` is its row of metrics.csv
        (``epoch`` counted from 1)."""

    def state(self) -> dict:
        """What this copy reports in the rank's result (picklable values)."""
        return {}
