"""Training-time augmentation of log-mel segment batches (never applied at evaluation).

The trainer calls :func:`augment_batch` on each training batch, on the batch's device, after the
loader: the loader stays a plain memory-map read (no per-item work that a Dask worker, which
loads data in-process, would pay for serially), and on a GPU the masks cost next to nothing.
Random draws come from a generator seeded by ``(seed, epoch, step, rank)``: a run is
reproducible and a resumed run draws what the uninterrupted one would have.

Ingredients (each off when its amount is 0):

- random gain: every segment shifted by ``U(-gain_db, +gain_db)`` dB (in the standardised
  units the net sees: divided by the input's standard deviation);
- SpecAugment masks (Park et al. 2019): ``masks`` frequency bands of up to 1/8 of the mel bands
  and ``masks`` time spans of up to 1/8 of the frames, set to 0 (the input mean);
- mixup (Zhang et al. 2018): the batch blended with a shuffled copy of itself by
  ``lam ~ Beta(alpha, alpha)``, and the targets blended alike;
- label smoothing: targets ``(1 - eps) * one_hot + eps / n_classes``.

Multi-label batches (``genres_all``: a 0/1 row of labels per segment) take the same gain, masks
and mixup; mixup blends two segments' label sets into soft targets for the binary
cross-entropy. They are not smoothed: spread over 161 mostly absent labels, smoothing would give
every absent genre a target above the prevalence of most sub-genres.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: Longest mask as a fraction of the mel bands (frequency masks) or frames (time masks).
MASK_FRACTION = 1 / 8


@dataclass(frozen=True)
class Augmentation:
    """How training batches are perturbed; all amounts 0 means none.

    Attributes
    ----------
    gain_db : float
        Largest random gain in dB (uniform in ``[-gain_db, gain_db]``).
    masks : int
        Frequency masks and time masks per segment (each).
    mixup : float
        Beta distribution parameter of mixup.
    label_smoothing : float
        Share of the target spread evenly over the classes.
    db_per_unit : float
        dB per unit of the standardised input (the input's standard deviation).
    """

    gain_db: float = 0.0
    masks: int = 0
    mixup: float = 0.0
    label_smoothing: float = 0.0
    db_per_unit: float = 1.0

    @property
    def active(self) -> bool:
        """Whether anything is applied (else training uses the plain batch and labels)."""
        return (self.gain_db > 0 or self.masks > 0 or self.mixup > 0
                or self.label_smoothing > 0)


def batch_generator(seed: int, epoch: int, step: int, rank: int) -> torch.Generator:
    """A CPU generator whose draws depend only on ``(seed, epoch, step, rank)``."""
    entropy = np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(entropy) & ((1 << 63) - 1))


def _mask(length: int, count: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """Boolean ``(n, length)``: True inside ``count`` random spans per row, each up to
    ``MASK_FRACTION * length`` long."""
    widest = max(1, int(length * MASK_FRACTION))
    width = torch.randint(0, widest + 1, (n, count), generator=gen)
    start = (torch.rand((n, count), generator=gen) * (length - width + 1)).long()
    pos = torch.arange(length)
    inside = (pos >= start[..., None]) & (pos < (start + width)[..., None])  # (n, count, length)
    return inside.any(dim=1)


def augment_batch(x: torch.Tensor, y: torch.Tensor, n_classes: int, aug: Augmentation,
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Perturb one training batch and give its soft targets.

    Parameters
    ----------
    x : torch.Tensor
        float ``(batch, 1, n_mels, frames)``, standardised log-mel segments (any device).
    y : torch.Tensor
        int64 ``(batch,)`` class indices, or float ``(batch, n_classes)`` 0/1 labels
        (multi-label; not smoothed, see the module docstring).
    n_classes : int
        Number of classes (labels).
    aug : Augmentation
        What to apply.
    gen : torch.Generator
        CPU generator of the random draws (see :func:`batch_generator`).

    Returns
    -------
    x : torch.Tensor
        The perturbed batch, same shape and device (a new tensor; the input is left as it is).
    targets : torch.Tensor
        float ``(batch, n_classes)``: for class indices, rows summing to 1 (a cross-entropy with
        probabilities); for multi-label rows, values in [0, 1] (a binary cross-entropy).
    """
    n, _, n_mels, frames = x.shape
    device = x.device
    multilabel = y.ndim == 2
    targets = y.float() if multilabel else torch.nn.functional.one_hot(y, n_classes).float()
    if aug.label_smoothing > 0 and not multilabel:
        targets = targets * (1 - aug.label_smoothing) + aug.label_smoothing / n_classes
    if aug.gain_db > 0:
        gain = (torch.rand(n, generator=gen) * 2 - 1) * (aug.gain_db / aug.db_per_unit)
        x = x + gain.to(device, x.dtype).view(n, 1, 1, 1)
    if aug.masks > 0:
        freq = _mask(n_mels, aug.masks, n, gen).to(device)
        time = _mask(frames, aug.masks, n, gen).to(device)
        keep = ~(freq[:, None, :, None] | time[:, None, None, :])
        x = x * keep.to(x.dtype)
    if aug.mixup > 0 and n > 1:
        # torch's Beta sampler takes no generator: draw lam with numpy, seeded from ours
        lam = float(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=gen)))
                    .beta(aug.mixup, aug.mixup))
        lam = max(lam, 1 - lam)  # the segment's own label stays the larger share
        perm = torch.randperm(n, generator=gen).to(device)
        x = lam * x + (1 - lam) * x[perm]
        targets = lam * targets + (1 - lam) * targets[perm.to(targets.device)]
    return x, targets.to(device)
