"""FMA's published feature recipe, written plainly with librosa calls, kept as the test oracle.

This is the straightforward, unoptimised implementation that ``fmadask.features.fma_features``
must equal (within the tolerance stated in ``tests/test_features.py``). It follows FMA's
``features.py`` (2017) translated to today's librosa so that it gives FMA's numbers:

- ``librosa.feature.rmse`` is now ``librosa.feature.rms`` (FMA still calls the column ``rmse``);
- ``chroma_cqt`` / ``chroma_cens`` get ``bins_per_octave=12`` explicitly, because today's default
  (36) no longer matches the 12-bins-per-octave CQT that FMA feeds them;
- ``chroma_stft`` and the ``spectral_*`` functions get NO ``sr`` (FMA passed none, so librosa's
  default of 22050 Hz is used even for 44.1 kHz audio); the mel spectrogram gets the real ``sr``.

With ``fma_compat=False`` the true ``sr`` is passed everywhere (the physically correct variant).

It is imported by the tests and by ``tests/benchmarks/bench_features.py``; nothing in the
``fmadask`` package imports it.
"""
from __future__ import annotations

import librosa
import numpy as np
import pandas as pd
from scipy import stats

#: FMA's feature sizes, as in FMA's ``features.py``.
FEATURE_SIZES = dict(chroma_stft=12, chroma_cqt=12, chroma_cens=12, tonnetz=6, mfcc=20, rmse=1,
                     zcr=1, spectral_centroid=1, spectral_bandwidth=1, spectral_contrast=7,
                     spectral_rolloff=1)
MOMENTS = ("mean", "std", "skew", "kurtosis", "median", "min", "max")


def columns() -> pd.MultiIndex:
    """FMA's column index: (feature, statistics, number), sorted as in ``features.csv``."""
    tuples = [(name, moment, f"{i + 1:02d}")
              for name, size in FEATURE_SIZES.items() for moment in MOMENTS for i in range(size)]
    index = pd.MultiIndex.from_tuples(tuples, names=("feature", "statistics", "number"))
    return index.sort_values()


def compute_features(x: np.ndarray, sr: int, fma_compat: bool = True) -> pd.Series:
    """The 518 FMA features of a mono signal, by FMA's recipe.

    Parameters
    ----------
    x : numpy.ndarray
        Mono float32 signal, shape ``(n_samples,)``.
    sr : int
        Its sample rate in Hz.
    fma_compat : bool
        True: FMA's calls (no ``sr`` to chroma_stft and spectral_*). False: true ``sr`` everywhere.

    Returns
    -------
    pandas.Series
        float32, indexed by :func:`columns`.
    """
    # FMA filled a float32 Series; pandas >= 3 refuses lossy assignment, so fill float64 and
    # round to float32 once at the end (the same single rounding of each value).
    features = pd.Series(index=columns(), dtype=np.float64)
    spectral_sr = {} if fma_compat else {"sr": sr}

    def feature_stats(name: str, values: np.ndarray) -> None:
        features[name, "mean"] = np.mean(values, axis=1)
        features[name, "std"] = np.std(values, axis=1)
        # SciPy >= 1.9 gives NaN for a constant row; the SciPy of FMA's time (2017) gave 0 and -3.
        features[name, "skew"] = np.nan_to_num(stats.skew(values, axis=1), nan=0.0)
        features[name, "kurtosis"] = np.nan_to_num(stats.kurtosis(values, axis=1), nan=-3.0)
        features[name, "median"] = np.median(values, axis=1)
        features[name, "min"] = np.min(values, axis=1)
        features[name, "max"] = np.max(values, axis=1)

    f = librosa.feature.zero_crossing_rate(x, frame_length=2048, hop_length=512)
    feature_stats("zcr", f)

    cqt = np.abs(librosa.cqt(x, sr=sr, hop_length=512, bins_per_octave=12, n_bins=7 * 12,
                             tuning=None))
    assert cqt.shape[0] == 7 * 12
    assert np.ceil(len(x) / 512) <= cqt.shape[1] <= np.ceil(len(x) / 512) + 1

    f = librosa.feature.chroma_cqt(C=cqt, n_chroma=12, n_octaves=7, bins_per_octave=12)
    feature_stats("chroma_cqt", f)
    f = librosa.feature.chroma_cens(C=cqt, n_chroma=12, n_octaves=7, bins_per_octave=12)
    feature_stats("chroma_cens", f)
    f = librosa.feature.tonnetz(chroma=f)
    feature_stats("tonnetz", f)

    del cqt
    stft = np.abs(librosa.stft(x, n_fft=2048, hop_length=512))
    assert stft.shape[0] == 1 + 2048 // 2
    assert np.ceil(len(x) / 512) <= stft.shape[1] <= np.ceil(len(x) / 512) + 1

    f = librosa.feature.chroma_stft(S=stft ** 2, n_chroma=12, **spectral_sr)
    feature_stats("chroma_stft", f)

    f = librosa.feature.rms(S=stft)
    feature_stats("rmse", f)

    f = librosa.feature.spectral_centroid(S=stft, **spectral_sr)
    feature_stats("spectral_centroid", f)
    f = librosa.feature.spectral_bandwidth(S=stft, **spectral_sr)
    feature_stats("spectral_bandwidth", f)
    f = librosa.feature.spectral_contrast(S=stft, n_bands=6, **spectral_sr)
    feature_stats("spectral_contrast", f)
    f = librosa.feature.spectral_rolloff(S=stft, **spectral_sr)
    feature_stats("spectral_rolloff", f)

    mel = librosa.feature.melspectrogram(sr=sr, S=stft ** 2)
    del stft
    f = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=20)
    feature_stats("mfcc", f)

    return features.astype(np.float32)
