"""The CNNs, chosen by name.

- ``naive``: the study's net, two convolution layers each followed by max-pooling, then one
  dense layer;
- ``naive_bn``: the same with batch normalisation after each convolution (the study's variant);
- ``shortchunk_res``: the short-chunk CNN with residual blocks of Won et al., "Evaluation of
  CNN-based automatic music tagging models" (SMC 2020), the strongest of their comparison on
  short segments: input batch-norm, seven stride-2 residual blocks of 3x3 convolutions that shrink
  frequency and time to ~1, global max-pooling, a two-layer head with dropout;
- ``vgg_gap``: four VGG-style blocks (3x3 convolution, batch-norm, ReLU, 2x2 max-pooling),
  averaged over frequency, then mean- and max-pooled over time into one dense layer: a small net
  whose global pooling summarises a segment much as the 518 features summarise a clip
  (statistics over time of spectral shape); the default of new work.

Every net maps a float32 batch ``(batch, 1, n_mels, frames)`` of standardised log-mel segments to
class logits ``(batch, n_classes)``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fmadask.dl.config import ARCHS
from fmadask.errors import ConfigError

__all__ = ["ARCHS", "NaiveCNN", "ShortChunkResCNN", "VggGapCNN", "build_net"]


class NaiveCNN(nn.Module):
    """The study's net: (conv 3x3 -> [BN] -> ReLU -> max-pool 4x4) x 2 -> dense.

    Parameters
    ----------
    n_classes, n_mels, frames : int
        Output classes and input shape (mel bands x frames of a segment).
    width : int
        Channels of the first convolution; the second has twice as many.
    batch_norm : bool
        Batch-normalise after each convolution (``naive_bn``).
    """

    def __init__(self, n_classes: int, n_mels: int, frames: int, width: int = 16,
                 batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in (width, 2 * width):
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            # ceil_mode keeps at least one cell when a tiny segment is pooled
            layers += [nn.ReLU(inplace=True), nn.MaxPool2d(4, ceil_mode=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        with torch.no_grad():  # the flattened size, exactly as the layers compute it
            n_flat = self.features(torch.zeros(1, 1, n_mels, frames)).numel()
        self.classifier = nn.Linear(n_flat, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class _ResBlock(nn.Module):
    """Two 3x3 convolutions with batch-norm, the first of stride 2, plus a projected shortcut."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                                      nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ShortChunkResCNN(nn.Module):
    """Short-chunk residual CNN (Won et al. 2020), width-scalable.

    Parameters
    ----------
    n_classes, n_mels, frames : int
        Output classes and input shape; the input shape only matters through the stride-2
        blocks, which round up, so any size works.
    width : int
        Channels of the first blocks (the paper uses 128; blocks 3-6 use 2x, block 7 uses 4x).
    dropout : float
        Dropout before the last dense layer.
    """

    def __init__(self, n_classes: int, n_mels: int, frames: int, width: int = 64,
                 dropout: float = 0.5):
        super().__init__()
        channels = [width, width, 2 * width, 2 * width, 2 * width, 2 * width, 4 * width]
        blocks: list[nn.Module] = []
        c_in = 1
        for c_out in channels:
            blocks.append(_ResBlock(c_in, c_out))
            c_in = c_out
        self.input_bn = nn.BatchNorm2d(1)
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Linear(c_in, c_in), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout), nn.Linear(c_in, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.input_bn(x))
        x = torch.amax(x, dim=(2, 3))  # global max-pool over what is left of frequency and time
        return self.head(x)


class VggGapCNN(nn.Module):
    """Four (conv 3x3 -> BN -> ReLU -> max-pool 2x2) blocks, global pooling, one dense layer.

    Parameters
    ----------
    n_classes, n_mels, frames : int
        Output classes and input shape; the net pools globally (and its 2x2 pools round up), so
        any input size works, whatever the segment length it was trained on.
    width : int
        Channels of the first block; then 2x, 4x, 4x.
    dropout : float
        Dropout before the dense layer.
    """

    def __init__(self, n_classes: int, n_mels: int, frames: int, width: int = 16,
                 dropout: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in (width, 2 * width, 4 * width, 4 * width):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * c_in, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean(dim=2)            # (batch, channels, time): frequency averaged
        return self.head(torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1))


def _naive(n_classes: int, n_mels: int, frames: int, width: int | None) -> nn.Module:
    return NaiveCNN(n_classes, n_mels, frames, width=width or 16)


def _naive_bn(n_classes: int, n_mels: int, frames: int, width: int | None) -> nn.Module:
    return NaiveCNN(n_classes, n_mels, frames, width=width or 16, batch_norm=True)


def _shortchunk_res(n_classes: int, n_mels: int, frames: int, width: int | None) -> nn.Module:
    return ShortChunkResCNN(n_classes, n_mels, frames, width=width or 64)


def _vgg_gap(n_classes: int, n_mels: int, frames: int, width: int | None) -> nn.Module:
    return VggGapCNN(n_classes, n_mels, frames, width=width or 16)


_BUILDERS: dict[str, Callable[[int, int, int, int | None], nn.Module]] = {
    "naive": _naive, "naive_bn": _naive_bn, "shortchunk_res": _shortchunk_res,
    "vgg_gap": _vgg_gap,
}
assert tuple(_BUILDERS) == ARCHS, "fmadask.dl.config.ARCHS lists the nets built here"


def build_net(arch: str, n_classes: int, n_mels: int, frames: int,
              width: int | None = None) -> nn.Module:
    """A freshly initialised net of architecture ``arch``.

    Parameters
    ----------
    arch : str
        One of :data:`fmadask.dl.config.ARCHS`: ``'naive'``, ``'naive_bn'``, ``'shortchunk_res'``,
        ``'vgg_gap'``.
    n_classes : int
        Number of genres.
    n_mels, frames : int
        Input segment shape: mel bands x frames.
    width : int, optional
        Channel width (architecture default when None).

    Raises
    ------
    ConfigError
        For an unknown architecture name.
    """
    if arch not in _BUILDERS:
        raise ConfigError(f"unknown CNN architecture {arch!r}: choose one of {', '.join(ARCHS)}")
    return _BUILDERS[arch](n_classes, n_mels, frames, width)
