"""Fast equivalents of the librosa spectral features FMA's recipe calls.

Each function here takes what the recipe already computed once (the magnitude STFT ``S``, its
power ``S**2``) instead of recomputing it, and does only the work its output needs. Where the
arithmetic can be kept the same as librosa's at no cost, it is (same operations, same order, same
dtypes), so the result is bit-identical; where a faster formulation changes only rounding, the
docstring says so and the tests bound the difference.

Shapes: ``S`` is ``(1 + n_fft // 2, n_frames)`` float32 as returned by
``np.abs(librosa.stft(y, n_fft=2048, hop_length=512))`` (Fortran-ordered).
"""
from __future__ import annotations

import numba
import numpy as np
from librosa import fft_frequencies, pitch_tuning

# librosa.piptrack's defaults, which estimate_tuning (and so cqt(tuning=None) and chroma_stft)
# uses.
_PIP_FMIN = 150.0
_PIP_FMAX = 4000.0
_PIP_THRESHOLD = 0.1


def estimate_tuning(S: np.ndarray, sr: float, bins_per_octave: int = 12) -> float:
    """``librosa.estimate_tuning(S=S, sr=sr, bins_per_octave=...)``, computed on its band only.

    ``librosa.piptrack`` interpolates, thresholds and finds peaks over the whole spectrum and then
    keeps only the bins between 150 Hz and 4 kHz. Every per-bin quantity it uses depends only on a
    bin and its two neighbours (plus the column maximum for the threshold), so computing them on
    the band plus one bin on each side gives the same values for the bins that are kept: 17 %
    of the spectrum at 44.1 kHz, 35 % at 22.05 kHz. The arithmetic (dtypes included) follows
    librosa 0.11's ``piptrack``/``_parabolic_interpolation``/``localmax``, so the estimate is the
    same number (tests compare it with librosa's).

    Parameters
    ----------
    S : numpy.ndarray
        Magnitude or power spectrogram, shape ``(1 + n_fft // 2, n_frames)``, float32.
    sr : float
        The sample rate the frequency axis is read with, in Hz.
    bins_per_octave : int
        Tuning resolution, as in librosa.

    Returns
    -------
    float
        Tuning offset in fractions of a bin, in ``[-0.5, 0.5)``.
    """
    n_bins = S.shape[0]
    n_fft = 2 * (n_bins - 1)
    freqs = fft_frequencies(sr=sr, n_fft=n_fft)
    fmax = min(_PIP_FMAX, float(sr) / 2)
    band = np.flatnonzero((_PIP_FMIN <= freqs) & (freqs < fmax))
    if band.size == 0:
        return 0.0
    # Bin 0 (0 Hz) and the Nyquist bin (= sr/2 >= fmax) are never in the band, so the band's bins
    # always have both neighbours: slice one bin more on each side.
    lo, hi = int(band[0]), int(band[-1]) + 1
    x = S[lo - 1:hi + 1]

    # Peaks: local maxima of the spectrum after zeroing what is below 10 % of the column maximum.
    ref = _PIP_THRESHOLD * np.max(S, axis=0)
    gated = x * (x > ref)
    peaks = (gated[1:-1] > gated[:-2]) & (gated[1:-1] >= gated[2:])
    # S is Fortran-ordered: listing the peaks frame by frame (through the transpose) reads memory
    # in order. The order of the peaks does not matter: only their median and histogram do.
    cols, rows = np.nonzero(peaks.T)
    # librosa interpolates every bin and then keeps the peaks; only the peaks are interpolated
    # here. Its arithmetic, dtypes included: np.gradient's interior (x[+1] - x[-1]) / 2 in S's
    # dtype; the numba stencil's a = (x[+1] + x[-1]) - 2 * x[0] and b = (x[+1] - x[-1]) / 2 in
    # float64, shift = -b / a (0 where |b| >= |a|) stored in S's dtype.
    center = x[rows + 1, cols]
    below = x[rows, cols]
    above = x[rows + 2, cols]
    a = (above + below).astype(np.float64) - 2.0 * center.astype(np.float64)
    b = (above - below).astype(np.float64) / 2.0
    interpolate = np.abs(b) < np.abs(a)
    shift = np.zeros(a.shape, dtype=np.float64)
    shift[interpolate] = -b[interpolate] / a[interpolate]
    shift = shift.astype(S.dtype)
    avg = (above - below) / 2.0
    dskew = 0.5 * avg * shift
    pitch = ((rows + lo) + shift) * float(sr) / n_fft
    pitch = pitch.astype(S.dtype)
    mag = center + dskew

    # estimate_tuning: keep the peaks at least as strong as the median peak.
    positive = pitch > 0
    if not positive.any():
        return 0.0      # what pitch_tuning returns for no pitch (e.g. silence), minus its warning
    threshold = np.median(mag[positive])
    return float(pitch_tuning(pitch[(mag >= threshold) & positive], resolution=0.01,
                              bins_per_octave=bins_per_octave))


def centroid_bandwidth(S: np.ndarray, freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``spectral_centroid(S=S)`` and ``spectral_bandwidth(S=S)`` (p=2) in one pass.

    librosa normalises each column to unit sum (in float64, rounding the normalised spectrum to
    float32), then sums ``freq * S_norm`` and, for the bandwidth, ``S_norm * (freq - centroid)**2``
    (recomputing the centroid). Here both come from one float64 matrix product with
    ``[freq, freq**2]``: centroid = m1 / L, bandwidth = sqrt(m2 / L - centroid**2). In float64
    the cancellation in the variance form costs ~1e-16 * (centroid / bandwidth)**2 relative,
    far below float32 resolution; the results differ from librosa's by rounding only (~1e-7
    relative, from librosa's own float32 rounding of S_norm).

    Parameters
    ----------
    S : numpy.ndarray
        Magnitude spectrogram, shape ``(n_bins, n_frames)``, non-negative.
    freq : numpy.ndarray
        Bin frequencies in Hz, shape ``(n_bins,)``, float64.

    Returns
    -------
    centroid, bandwidth : numpy.ndarray
        Shape ``(1, n_frames)`` each, float64, in Hz.
    """
    S64 = S.astype(np.float64)
    # librosa.util.normalize(norm=1): columns whose sum is below float32's tiny are left as is.
    length = np.sum(S64, axis=0)
    length[length < np.finfo(S.dtype).tiny] = 1.0
    moments = np.stack([freq, freq * freq]) @ S64
    centroid = moments[0] / length
    variance = np.maximum(moments[1] / length - centroid * centroid, 0.0)
    return centroid[np.newaxis], np.sqrt(variance)[np.newaxis]


def rolloff(S: np.ndarray, freq: np.ndarray, roll_percent: float = 0.85) -> np.ndarray:
    """``librosa.feature.spectral_rolloff(S=S, freq=freq)``, bit-identical.

    librosa marks every bin whose float32 cumulative energy reaches ``roll_percent`` of the
    total and takes the smallest marked frequency (``nanmin`` over a float64 copy of the
    spectrogram). The frequencies increase, so that is the frequency of the first marked bin.
    numpy's ``cumsum`` over the spectrogram costs ~13 ms for a 30 s clip; the compiled kernel
    below adds the same float32 values in the same order, stops at the first marked bin, and
    takes ~3 ms.

    Returns
    -------
    numpy.ndarray
        Shape ``(1, n_frames)``, float64, in Hz.
    """
    return freq[_rolloff_bins(S, roll_percent)][np.newaxis]


@numba.njit(cache=True, nogil=True)
def _rolloff_bins(S: np.ndarray, roll_percent: float) -> np.ndarray:  # pragma: no cover (jit)
    """Index of the first bin whose float32 cumulative sum reaches roll_percent of the total."""
    n_bins, n_frames = S.shape
    percent = np.float32(roll_percent)
    totals = np.empty(n_frames, dtype=np.float32)
    # A float sum is bound by the latency of each addition: sum four frames side by side.
    t = 0
    while t + 4 <= n_frames:
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        for f in range(n_bins):
            a0 += S[f, t]
            a1 += S[f, t + 1]
            a2 += S[f, t + 2]
            a3 += S[f, t + 3]
        totals[t], totals[t + 1], totals[t + 2], totals[t + 3] = a0, a1, a2, a3
        t += 4
    for u in range(t, n_frames):
        total = np.float32(0.0)
        for f in range(n_bins):
            total += S[f, u]
        totals[u] = total
    out = np.zeros(n_frames, dtype=np.int64)
    for u in range(n_frames):
        threshold = percent * totals[u]
        running = np.float32(0.0)
        for f in range(n_bins):
            running += S[f, u]
            if running >= threshold:
                out[u] = f
                break
    return out


def contrast(S: np.ndarray, freq: np.ndarray, sr: float, n_bands: int = 6, fmin: float = 200.0,
             quantile: float = 0.02) -> np.ndarray:
    """``librosa.feature.spectral_contrast(S=S, sr=sr, freq=freq, n_bands=n_bands)``, bit-identical.

    Same bands, same quantile sizes, same sums and the same dB conversion as librosa; only the
    sort runs along contiguous memory.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_bands + 1, n_frames)``, float64, in dB.
    """
    from librosa import power_to_db

    octa = np.zeros(n_bands + 2)
    octa[1:] = fmin * (2.0 ** np.arange(0, n_bands + 1))
    if np.any(octa[:-1] >= 0.5 * sr):
        raise ValueError(f"spectral contrast band exceeds the Nyquist frequency of sr={sr}")
    # The spectrum with frames as rows: each band is then a contiguous slice of every row, which
    # numpy sorts several times faster than librosa's sort along the strided axis.
    rows = S.T
    valley = np.zeros((n_bands + 1, S.shape[1]))
    peak = np.zeros_like(valley)
    for k, (f_low, f_high) in enumerate(zip(octa[:-1], octa[1:])):
        current = np.logical_and(freq >= f_low, freq <= f_high)
        idx = np.flatnonzero(current)
        if k > 0:
            current[idx[0] - 1] = True
        if k == n_bands:
            current[idx[-1] + 1:] = True
        band = np.flatnonzero(current)
        start, stop = int(band[0]), int(band[-1]) + 1
        if k < n_bands:
            stop -= 1
        n = int(max(np.rint(quantile * current.sum()), 1))
        ordered = np.sort(rows[:, start:stop], axis=1)
        valley[k] = _sequential_mean(ordered[:, :n])
        peak[k] = _sequential_mean(ordered[:, -n:])
    return power_to_db(peak) - power_to_db(valley)


def _sequential_mean(values: np.ndarray) -> np.ndarray:
    """Mean over axis 1, summing the columns left to right in ``values``' dtype.

    This is the order numpy sums the strided axis in librosa's ``np.mean(sorted[:n], axis=-2)``,
    so the result is the same to the bit (a contiguous ``np.mean`` would sum pairwise).
    """
    total = values[:, 0].copy()
    for i in range(1, values.shape[1]):
        total += values[:, i]
    return total / values.shape[1]


def zero_crossing_rate(y: np.ndarray, frame_length: int = 2048, hop_length: int = 512,
                       threshold: float = 1e-10) -> np.ndarray:
    """``librosa.feature.zero_crossing_rate(y, frame_length, hop_length)``, bit-identical.

    librosa frames the edge-padded signal (a ``frame_length``-fold copy) and tests every pair of
    neighbours in every frame. A crossing between two neighbours does not depend on the frame it
    is counted in, so each is tested once and the per-frame counts are differences of a cumulative
    count. Samples with ``|y| <= threshold`` count as zero (positive), as in librosa.

    Returns
    -------
    numpy.ndarray
        Shape ``(1, 1 + len(y) // hop_length)``, float64: crossings per frame / frame_length.
    """
    half = frame_length // 2
    negative = y < -np.float64(threshold)
    negative = np.pad(negative, half, mode="edge")
    crossing = negative[1:] != negative[:-1]
    counts = np.concatenate([[0], np.cumsum(crossing, dtype=np.int64)])
    n_frames = 1 + (len(negative) - frame_length) // hop_length
    starts = np.arange(n_frames) * hop_length
    # Frame j holds samples starts[j] .. starts[j] + frame_length - 1 of the padded signal; its
    # pairs (i - 1, i) for i = starts[j] + 1 .. starts[j] + frame_length - 1.
    per_frame = counts[starts + frame_length - 1] - counts[starts]
    return (per_frame / float(frame_length))[np.newaxis]
