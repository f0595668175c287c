"""Training-loop callbacks for the CNN tests: evidence from inside the ranks, and a failure.

The ranks run on Dask worker processes, which need not be able to import this test module: the
tests register it with ``cloudpickle.register_pickle_by_value``, so its classes travel with the
rank's task.
"""
from __future__ import annotations

import torch.nn.functional as F

from fmadask.dl.callbacks import Callback, Step, digest
from fmadask.errors import DataError


class Probe(Callback):
    """Digests of this rank's own gradient (no all-reduce), the all-reduced gradient and the
    weights around the first optimiser step, the tracks the rank read in epoch 0, the training
    steps per epoch and the epochs that ended: evidence that DDP synchronised ranks that saw
    different data. Costs one extra forward/backward in the first step."""

    name = "probe"

    def __init__(self) -> None:
        self.report: dict = {"epochs_ended": []}

    def on_batch_start(self, step: Step) -> None:
        self.report["steps_per_epoch"] = step.steps_per_epoch
        if step.global_step != 0:
            return
        self.report["params_before_step"] = digest(step.model.parameters())
        with step.ddp.no_sync():
            F.cross_entropy(step.ddp(step.x), step.y).backward()
        self.report["local_grad"] = digest(p.grad for p in step.model.parameters())
        step.optimizer.zero_grad(set_to_none=True)

    def on_after_backward(self, step: Step) -> None:
        if step.global_step == 0:
            self.report["synced_grad"] = digest(p.grad for p in step.model.parameters())

    def on_step_end(self, step: Step) -> None:
        self.report["steps"] = self.report.get("steps", 0) + 1
        if step.global_step == 0:
            self.report["params_after_step"] = digest(step.model.parameters())
        if step.epoch == 0:
            self.report.setdefault("tracks_epoch0", []).extend(step.track_ids.tolist())

    def on_epoch_end(self, metrics: dict) -> None:
        self.report["epochs_ended"].append(metrics["epoch"])

    def state(self) -> dict:
        return self.report


class FailAt(Callback):
    """Raise in global training step ``global_step`` (counted from 0) on rank ``rank``."""

    name = "fail_at"

    def __init__(self, rank: int, global_step: int) -> None:
        self.rank, self.global_step = rank, global_step

    def on_batch_start(self, step: Step) -> None:
        if (step.rank, step.global_step) == (self.rank, self.global_step):
            raise RuntimeError(f"injected failure at step {step.global_step}")


class StopAt(Callback):
    """Raise a DataError in global training step ``global_step`` on every rank at once: the job
    ends as after a user error, its workers spared (no rank is left in a collective), with the
    checkpoint of the epochs before."""

    name = "stop_at"

    def __init__(self, global_step: int) -> None:
        self.global_step = global_step

    def on_batch_start(self, step: Step) -> None:
        if step.global_step == self.global_step:
            raise DataError(f"stopped at step {step.global_step}")
