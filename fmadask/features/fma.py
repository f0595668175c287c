"""The 518 FMA features of one track, by FMA's published recipe, computed fast.

FMA's recipe (``features.py``, librosa defaults of 2017), as reproduced plainly in
``tests/reference_recipe.py``:

- zcr over frames of 2048, hop 512;
- ``|cqt|`` (hop 512, 12 bins per octave, 84 bins, tuning estimated) -> chroma_cqt, chroma_cens
  (12 chroma, 7 octaves, 12 bins per octave) -> tonnetz of the CENS chroma;
- ``S = |stft|`` (n_fft 2048, hop 512) -> chroma_stft of ``S**2``, rms, spectral centroid,
  bandwidth, contrast (6 bands), rolloff; mel spectrogram of ``S**2`` at the true rate -> dB ->
  20 MFCCs;
- FMA passed no ``sr`` to chroma_stft and the spectral_* functions, so their frequency axes use
  librosa's default 22,050 Hz whatever the file's rate (``fma_compat=True``, the default).
  ``fma_compat=False`` passes the true rate (physically correct centroid, bandwidth, rolloff in Hz;
  contrast bands and chroma at the right frequencies) — not comparable with FMA's table;
- each feature summarised over frames by kurtosis, max, mean, median, min, skew, std.

What makes it fast (one process, same numbers; see the module docstrings of ``_cqt`` and
``_spectral`` for each step):

- one STFT, shared: librosa's recipe computes it twice (once more inside the CQT's tuning
  estimate, on the same frames) and squares it twice;
- the two tuning estimates (CQT: magnitude at the true rate; chroma_stft: power at the spectral
  rate) run on the 150 Hz - 4 kHz band they keep, not the whole spectrum;
- the CQT filter banks are built once per (rate, tuning) instead of per call;
- centroid and bandwidth from one matrix product, rolloff by a compiled scan that stops at the
  rolloff bin, contrast sorted along contiguous memory, zcr from one cumulative count, the mel
  filter bank cached;
- the 7 statistics of all features in 4 stacked calls (one per dtype and memory layout) instead
  of 11, each computing the deviations from the mean once for std, skew and kurtosis.

Everything but spectral centroid and bandwidth (float64 rounding, ~1e-7 relative) is equal to
the plain recipe bit for bit on the clips tested; tests/test_features.py holds it to
rtol 1e-3 (+ atol 1e-5 for statistics near zero) on all 518 columns.
"""
from __future__ import annotations

import functools

import librosa
import numpy as np

from fmadask.features import _spectral
from fmadask.features._cqt import BINS_PER_OCTAVE, HOP_LENGTH, cqt_magnitude
from fmadask.features.columns import FEATURE_COLUMNS, FEATURE_SIZES, STATISTICS

N_FFT = 2048
#: The rate librosa assumes when no ``sr`` is passed, which FMA's spectral features got.
LIBROSA_DEFAULT_SR = 22050
N_MFCC = 20
N_CHROMA = 12
N_OCTAVES = 7


@functools.lru_cache(maxsize=16)
def _mel_basis(sr: float, n_fft: int) -> np.ndarray:
    """melspectrogram's default filter bank (128 Slaney mels), built once per rate."""
    basis = librosa.filters.mel(sr=sr, n_fft=n_fft)
    basis.flags.writeable = False
    return basis


@functools.lru_cache(maxsize=16)
def _fft_freqs(sr: float, n_fft: int) -> np.ndarray:
    freqs = librosa.fft_frequencies(sr=sr, n_fft=n_fft)
    freqs.flags.writeable = False
    return freqs


def _summaries(values: np.ndarray) -> dict[str, np.ndarray]:
    """FMA's 7 statistics over frames (axis 1) of a ``(n_rows, n_frames)`` matrix.

    FMA called ``np.mean``, ``np.std``, ``scipy.stats.skew``, ``scipy.stats.kurtosis`` (biased,
    Fisher), ``np.median``, ``np.min``, ``np.max``. The three moment statistics each recompute
    the mean and the deviations (and scipy checks them for NaN and precision loss); here the
    deviations and their powers are computed once, with the same numpy operations, dtypes and
    layout as scipy 1.17's ``_moment`` and numpy's ``_var``, so the values are the same:

    - std = sqrt(mean(d * d)), skew = m3 / m2**1.5, kurtosis = m4 / m2**2 - 3,
      with d = x - mean(x), m2 = mean(d**2), m3 = mean(d**2 * d), m4 = mean((d**2)**2);
    - where m2 <= (eps * mean)**2 (a constant row, e.g. a chroma bin that never moves), skew is
      0 and kurtosis -3: SciPy returns NaN there since 1.9, but the SciPy FMA used (2017) gave
      0 and -3, and that is what FMA's features.csv holds.

    Each row is reduced on its own, so stacking several features' rows (with the same dtype and
    memory layout) gives each row's own values.
    """
    mean = np.mean(values, axis=1, keepdims=True)
    deviation = values - mean
    square = deviation ** 2
    m2 = np.mean(square, axis=1)
    m3 = np.mean(square * deviation, axis=1)
    m4 = np.mean(square ** 2, axis=1)
    mean = mean[:, 0]
    with np.errstate(all="ignore"):
        constant = m2 <= (np.finfo(m2.dtype).eps * mean) ** 2
        skew = np.where(constant, 0.0, m3 / m2 ** 1.5)
        kurtosis = np.where(constant, 0.0, m4 / m2 ** 2.0) - 3
    return {
        "kurtosis": kurtosis,
        "max": np.max(values, axis=1),
        "mean": mean,
        "median": np.median(values, axis=1),
        "min": np.min(values, axis=1),
        "skew": skew,
        "std": np.sqrt(m2),
    }


def _frame_features(y: np.ndarray, sr: int, fma_compat: bool) -> dict[str, np.ndarray]:
    """Every feature of FMA's recipe per frame: name -> ``(n_rows, n_frames)``."""
    spectral_sr = LIBROSA_DEFAULT_SR if fma_compat else sr
    out: dict[str, np.ndarray] = {}
    out["zcr"] = _spectral.zero_crossing_rate(y, frame_length=N_FFT, hop_length=HOP_LENGTH)

    # The magnitude STFT, once. librosa.cqt(tuning=None) estimates its tuning from exactly this
    # spectrogram (same frames, window and padding) at the true rate.
    S = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH))
    cqt_tuning = _spectral.estimate_tuning(S, sr=sr, bins_per_octave=BINS_PER_OCTAVE)
    C = cqt_magnitude(y, sr, cqt_tuning)
    out["chroma_cqt"] = librosa.feature.chroma_cqt(C=C, n_chroma=N_CHROMA, n_octaves=N_OCTAVES,
                                                   bins_per_octave=BINS_PER_OCTAVE)
    cens = librosa.feature.chroma_cens(C=C, n_chroma=N_CHROMA, n_octaves=N_OCTAVES,
                                       bins_per_octave=BINS_PER_OCTAVE)
    out["chroma_cens"] = cens
    out["tonnetz"] = librosa.feature.tonnetz(chroma=cens)
    del C

    power = S ** 2
    chroma_tuning = _spectral.estimate_tuning(power, sr=spectral_sr, bins_per_octave=N_CHROMA)
    out["chroma_stft"] = librosa.feature.chroma_stft(S=power, sr=spectral_sr, n_chroma=N_CHROMA,
                                                     tuning=chroma_tuning)
    out["rmse"] = librosa.feature.rms(S=S)
    freq = _fft_freqs(float(spectral_sr), N_FFT)
    out["spectral_centroid"], out["spectral_bandwidth"] = _spectral.centroid_bandwidth(S, freq)
    out["spectral_contrast"] = _spectral.contrast(S, freq, sr=spectral_sr, n_bands=6)
    out["spectral_rolloff"] = _spectral.rolloff(S, freq)
    del S

    # librosa.feature.melspectrogram(sr=sr, S=power), with its filter bank built once.
    mel = np.einsum("...ft,mf->...mt", power, _mel_basis(float(sr), N_FFT), optimize=True)
    del power
    out["mfcc"] = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=N_MFCC)
    return out


def fma_features(y: np.ndarray, sr: int, fma_compat: bool = True) -> np.ndarray:
    """The 518 FMA features of a mono signal.

    Parameters
    ----------
    y : numpy.ndarray
        Mono signal, shape ``(n_samples,)``, float32 as ``fmadask.audio.load_audio`` returns it
        (other dtypes are converted), at least about a second long (``audio.MIN_SECONDS``).
    sr : int
        Its sample rate in Hz (the file's native rate for FMA's numbers; 22050 for the study's).
    fma_compat : bool
        True (default): FMA's recipe, including its quirk of reading the chroma_stft and
        spectral_* frequency axes at 22,050 Hz whatever ``sr`` is. False: the true ``sr``
        everywhere; a physically correct variant that is NOT comparable with FMA's features.csv.

    Returns
    -------
    numpy.ndarray
        Shape ``(518,)``, float32, in the order of :data:`fmadask.features.FEATURE_COLUMNS`.
        Equal to FMA's recipe computed plainly with librosa within a relative tolerance of 1e-3
        (see tests/test_features.py for the tolerance on values near zero).
    """
    # float32 as librosa.load returns it: every dtype-dependent step (float32 spectra, the float32
    # cumulative sums and statistics) then matches FMA's recipe.
    y = np.ascontiguousarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"fma_features needs a mono signal of shape (n,), got {y.shape}")
    frames = _frame_features(y, sr, fma_compat)
    # FMA summarised each feature in its own dtype and memory layout: float32 sums over frames
    # depend on the summation order, which numpy takes from the layout (pairwise along contiguous
    # rows, sequential across the columns of a Fortran-ordered matrix), and skew/kurtosis near 0
    # are sensitive to it at the 1e-4 level. So rows are stacked by (dtype, layout), each stack
    # keeps its layout, and each stack is summarised once (4 calls instead of 11).
    groups: dict[tuple[np.dtype, str], list[str]] = {}
    for name in sorted(frames):
        values = frames[name]
        order = "C" if values.flags.c_contiguous else "F"
        groups.setdefault((values.dtype, order), []).append(name)
    result: dict[str, np.ndarray] = {}
    for (_, order), names in groups.items():
        stacked = np.concatenate([frames[n] for n in names], axis=0)
        summary = _summaries(np.asarray(stacked, order=order))
        start = 0
        for name in names:
            size = FEATURE_SIZES[name]
            for statistic in STATISTICS:
                result[f"{name}_{statistic}"] = summary[statistic][start:start + size]
            start += size
    row = np.concatenate([result[f"{name}_{statistic}"]
                          for name in sorted(FEATURE_SIZES) for statistic in STATISTICS])
    assert row.shape == (len(FEATURE_COLUMNS),)
    return row.astype(np.float32)
