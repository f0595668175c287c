"""The CNN's log-mel spectrogram computed with torch, for featurize workers that have a GPU.

Same recipe, same samples, same output as :func:`fmadask.features.log_mel` (which stays the
reference and the default): the signal is cropped and resampled on the CPU by the shared
:func:`fmadask.features.mel.prepare_signal` (soxr, as librosa), and only the transform runs on
the device. Arithmetic follows librosa's: the windowed FFT in float64 rounded to complex64, the
power in float32, the mel projection (computed in float64, rounded to float32) and the dB
conversion in float32. The largest difference from the CPU shards is stated in the README's
performance section (measured by ``tests/benchmarks/bench_gpu.py``); the tests hold it on the CPU.

This module imports torch; :mod:`fmadask.pipeline.partition` imports it only for
``mel_device='cuda'``.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from fmadask.features.mel import AMIN, MelParams, fixed_size, mel_filters, prepare_signal


class TorchLogMel:
    """Log-mel spectrograms on a torch device; holds the window and filter bank there.

    Parameters
    ----------
    params : MelParams
        The recipe.
    device : str or torch.device
        Where the transform runs (``cuda``, ``cuda:1``, ``cpu``).
    """

    def __init__(self, params: MelParams = MelParams(), device: str | torch.device = "cuda"):
        self.params = params
        self.device = torch.device(device)
        # librosa multiplies float32 frames by a float64 periodic Hann window and takes a float64
        # FFT, rounded to complex64 afterwards: the same here.
        self.window = torch.hann_window(params.n_fft, periodic=True, dtype=torch.float64,
                                        device=self.device)
        self.filters = torch.from_numpy(mel_filters(params).astype(np.float64)).to(self.device)

    def power(self, y: np.ndarray) -> torch.Tensor:
        """Mel power spectrogram of a prepared signal: float32 ``(n_mels, 1 + n // hop)``."""
        x = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)).to(self.device)
        spec = torch.stft(x.double(), self.params.n_fft, self.params.hop_length,
                          window=self.window, center=True, pad_mode="constant",
                          return_complex=True).to(torch.complex64)
        magnitude_sq = spec.abs().pow(2)               # float32, as np.abs(S) ** 2
        return (self.filters @ magnitude_sq.double()).float()

    def __call__(self, y: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
        """The fixed-size log-mel spectrogram of a mono signal (as :func:`log_mel`).

        Parameters
        ----------
        y : numpy.ndarray
            Mono signal, shape ``(n_samples,)``, float32.
        sr : int
            Its sample rate in Hz.

        Returns
        -------
        spectrogram : numpy.ndarray
            Shape ``(params.n_mels, params.frames)``, float16, dB in ``[-top_db, 0]``.
        valid_frames : int
            Frames computed from the signal; the rest are padding.
        """
        power = self.power(prepare_signal(y, sr, self.params))
        peak = power.max()
        if peak.item() > AMIN:
            db = 10.0 * torch.log10(power.clamp(min=AMIN)) - 10.0 * torch.log10(peak)
            db = torch.maximum(db, db.max() - self.params.top_db)
        else:  # digital silence is the floor, as on the CPU
            db = torch.full_like(power, self.params.pad_value)
        return fixed_size(db.cpu().numpy(), self.params)


@functools.lru_cache(maxsize=4)
def log_mel_on(device: str, params: MelParams = MelParams()) -> TorchLogMel:
    """The process's :class:`TorchLogMel` for ``device`` and ``params`` (built once)."""
    return TorchLogMel(params, device)
