"""The constant-Q magnitude FMA's recipe needs, computed exactly like ``librosa.cqt`` but faster.

``librosa.cqt`` (through ``librosa.vqt``) rebuilds its frequency-domain filter banks on every
call, about a third of the transform's time for a 30 s clip. The banks depend only on the sample
rate and the tuning, and the tuning is quantised to 0.01 bin by ``librosa.pitch_tuning``, so
there are at most 100 of them per sample rate: each is built once, with the same librosa
functions and arithmetic as ``librosa.vqt`` (including its private ``_relative_bandwidth``), and
kept. What is applied to the signal is ``librosa.vqt``'s sequence: early downsampling and octave
halving with ``librosa.resample`` (soxr_hq), the per-octave boxcar STFT (computed with fewer
copies, same FFT library, same float64 arithmetic), the sparse projection, the length scaling.
The output equals ``np.abs(librosa.cqt(...))`` bit for bit (tests/test_features.py checks it).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import librosa
import numpy as np
import scipy.sparse

from fmadask.options import setting

#: FMA's CQT: 7 octaves of 12 bins from C1, hop 512, librosa's default resampler.
N_BINS = 84
BINS_PER_OCTAVE = 12
HOP_LENGTH = 512
RES_TYPE = "soxr_hq"
_FILTER_SCALE = 1.0
_NORM = 1
_SPARSITY = 0.01
_WINDOW = "hann"


@dataclass(frozen=True)
class _Octave:
    basis: scipy.sparse.csr_matrix   # (12, n_fft // 2 + 1) complex64, scaled for the octave's rate
    n_fft: int


@dataclass(frozen=True)
class _Plan:
    downsample: int                  # early downsampling factor (1 = none)
    octaves: tuple[_Octave, ...]     # from the highest octave down
    scale: np.ndarray                # (84, 1) float64: sqrt of the filter lengths


def _downsample_count(nyquist: float, filter_cutoff: float, hop_length: int, n_octaves: int) -> int:
    """How many early halvings ``librosa.vqt`` applies (same rule)."""
    count1 = max(0, int(np.ceil(np.log2(nyquist / filter_cutoff)) - 1) - 1)
    twos = 0
    hop = hop_length
    while hop > 0 and hop % 2 == 0:
        twos += 1
        hop //= 2
    count2 = max(0, twos - n_octaves + 1)
    return min(count1, count2)


@functools.lru_cache(maxsize=256)
def _plan(sr: float, tuning: float, dtype: type) -> _Plan:
    """The filter banks of the 84-bin CQT at rate ``sr`` and ``tuning`` (fractions of a bin)."""
    n_octaves = int(np.ceil(N_BINS / BINS_PER_OCTAVE))
    fmin = librosa.note_to_hz("C1") * 2.0 ** (tuning / BINS_PER_OCTAVE)
    freqs = librosa.interval_frequencies(n_bins=N_BINS, fmin=fmin, intervals="equal",
                                         bins_per_octave=BINS_PER_OCTAVE, sort=True)
    alpha = librosa.filters._relative_bandwidth(freqs=freqs)
    _, filter_cutoff = librosa.filters.wavelet_lengths(freqs=freqs, sr=sr, window=_WINDOW,
                                                       filter_scale=_FILTER_SCALE, gamma=0,
                                                       alpha=alpha)
    if filter_cutoff > sr / 2.0:
        raise ValueError(f"the CQT's top filter ({filter_cutoff:.0f} Hz) exceeds the Nyquist "
                         f"frequency of sr={sr:g} Hz: FMA's features need audio sampled at "
                         f"{2 * filter_cutoff:.0f} Hz or more (set {setting('featurize.sr')} "
                         "to 22050)")
    count = _downsample_count(sr / 2.0, filter_cutoff, HOP_LENGTH, n_octaves)
    factor = 2 ** count
    sr_low = sr / float(factor)
    octaves = []
    my_sr, my_hop = sr_low, HOP_LENGTH // factor
    for i in range(n_octaves):
        sl = slice(-BINS_PER_OCTAVE, None) if i == 0 else slice(-BINS_PER_OCTAVE * (i + 1),
                                                                 -BINS_PER_OCTAVE * i)
        basis, lengths = librosa.filters.wavelet(freqs=freqs[sl], sr=my_sr,
                                                 filter_scale=_FILTER_SCALE, norm=_NORM,
                                                 pad_fft=True, window=_WINDOW, gamma=0,
                                                 alpha=alpha[sl])
        n_fft = basis.shape[1]
        basis *= lengths[:, np.newaxis] / float(n_fft)
        fft_basis = librosa.get_fftlib().fft(basis, n=n_fft, axis=1)[:, : n_fft // 2 + 1]
        fft_basis = librosa.util.sparsify_rows(fft_basis, quantile=_SPARSITY, dtype=dtype)
        # librosa rescales the sparse bank in place for the octave's rate; same statement here.
        fft_basis[:] *= np.sqrt(sr_low / my_sr)
        octaves.append(_Octave(fft_basis.tocsr(), n_fft))
        if my_hop % 2 == 0:
            my_hop //= 2
            my_sr /= 2.0
    lengths, _ = librosa.filters.wavelet_lengths(freqs=freqs, sr=sr_low, window=_WINDOW,
                                                 filter_scale=_FILTER_SCALE, gamma=0, alpha=alpha)
    return _Plan(factor, tuple(octaves), np.sqrt(lengths)[:, np.newaxis])


def _boxcar_stft(y: np.ndarray, n_fft: int, hop_length: int, dtype: type) -> np.ndarray:
    """``librosa.stft(y, n_fft, hop_length, window='ones', pad_mode='constant', dtype=dtype)``.

    librosa multiplies each frame by a float64 window of ones (so the FFT runs in float64 on the
    exact samples) and writes the result into a Fortran-ordered complex64 matrix, which the sparse
    projection then copies to C order. Here the frames are a strided view of the float64 signal,
    transformed by the same FFT library straight into the C-ordered (frequency, frame) matrix the
    projection reads, and rounded to ``dtype``: the same numbers, fewer copies.
    Frames are centred (zero padding of ``n_fft // 2`` on both sides), as in librosa.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_fft // 2 + 1, 1 + len(y) // hop_length)``, C-ordered, ``dtype``.
    """
    padded = np.pad(y.astype(np.float64), n_fft // 2, mode="constant")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    # Transforming along axis 0 of the transposed view makes the FFT write (frequency, frame)
    # in C order directly.
    return librosa.get_fftlib().rfft(frames.T, axis=0).astype(dtype)


def cqt_magnitude(y: np.ndarray, sr: float, tuning: float) -> np.ndarray:
    """``np.abs(librosa.cqt(y, sr=sr, hop_length=512, bins_per_octave=12, n_bins=84,
    tuning=tuning))``, bit for bit.

    Parameters
    ----------
    y : numpy.ndarray
        Mono signal, shape ``(n_samples,)``, float32.
    sr : float
        Sample rate in Hz.
    tuning : float
        Tuning offset in fractions of a bin, as ``librosa.estimate_tuning`` returns it.

    Returns
    -------
    numpy.ndarray
        Magnitudes, shape ``(84, n_frames)``, float32, ``n_frames = 1 + len(y) // 512``.
    """
    dtype = librosa.util.dtype_r2c(y.dtype)
    plan = _plan(float(sr), float(tuning), dtype)
    hop = HOP_LENGTH
    if plan.downsample > 1:
        hop //= plan.downsample
        y = librosa.resample(y, orig_sr=plan.downsample, target_sr=1, res_type=RES_TYPE,
                             scale=True)
    responses = []
    for octave in plan.octaves:
        D = _boxcar_stft(y, octave.n_fft, hop, dtype)
        responses.append(octave.basis.dot(D))
        if hop % 2 == 0:
            hop //= 2
            y = librosa.resample(y, orig_sr=2, target_sr=1, res_type=RES_TYPE, scale=True)
    n_frames = min(r.shape[-1] for r in responses)
    V = np.empty((N_BINS, n_frames), dtype=dtype, order="F")
    end = N_BINS
    for r in responses:
        n = r.shape[0]
        if end < n:
            V[:end] = r[-end:, :n_frames]
        else:
            V[end - n:end] = r[:, :n_frames]
        end -= n
    V /= plan.scale
    return np.abs(V)
