"""The CNN's input: a fixed-size log-mel spectrogram per clip, stored as float16.

Recipe (recorded with the data through :meth:`MelParams.to_dict`):

1. resample the mono signal to ``params.sr`` (soxr HQ, as ``fmadask.audio.resample``);
2. keep its first ``params.seconds`` (longer tracks are cropped *before* any transform, so a long
   track costs no more than a clip);
3. mel power spectrogram (``n_fft``, ``hop_length``, centred frames, Hann window, ``n_mels``
   Slaney-normalised mel bands from ``fmin`` to ``fmax``);
4. to dB relative to the clip's loudest bin (``ref=np.max``: the peak is 0 dB), floored at
   ``-top_db`` (librosa's ``power_to_db``), so every value lies in ``[-top_db, 0]``; a clip of
   digital silence is ``-top_db`` everywhere (librosa would call it 0 dB, its own peak);
5. padded on the right to exactly :attr:`MelParams.frames` frames with the floor value
   ``-top_db`` (silence), never with 0 dB.

float16 keeps ~0.03 dB resolution over that range: far finer than anything the net resolves,
at a quarter of float64's size.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from fmadask.audio import resample

#: Power below which a bin counts as silent (librosa.power_to_db's default ``amin``).
AMIN = 1e-10

#: How short clips are completed to the fixed length (recorded in params.json).
PAD_POLICY = "right-pad with -top_db (the dB floor); crop longer signals to their first `seconds`"


@dataclass(frozen=True)
class MelParams:
    """Parameters of the log-mel spectrogram.

    Attributes
    ----------
    sr : int
        Sample rate the signal is resampled to, in Hz.
    n_fft : int
        FFT size in samples.
    hop_length : int
        Hop between frames in samples.
    n_mels : int
        Number of mel bands.
    fmin, fmax : float
        Band edges in Hz (``fmax`` None = ``sr / 2``).
    seconds : float
        Fixed clip length in seconds: longer signals are cropped, shorter padded.
    top_db : float
        Dynamic range kept below the clip's peak, in dB; also the padding value's magnitude.
    """

    sr: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    seconds: float = 30.0
    top_db: float = 80.0

    def __post_init__(self) -> None:
        for name in ("sr", "n_fft", "hop_length", "n_mels"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"MelParams.{name} must be positive, not {getattr(self, name)}")
        if not self.seconds > 0 or not self.top_db > 0:
            raise ValueError("MelParams.seconds and MelParams.top_db must be positive")

    @property
    def samples(self) -> int:
        """Samples of the fixed-length clip."""
        return int(round(self.seconds * self.sr))

    @property
    def frames(self) -> int:
        """Frames of every spectrogram (centred frames of ``samples`` samples)."""
        return 1 + self.samples // self.hop_length

    @property
    def pad_value(self) -> float:
        """The dB value of padded frames (the floor, ``-top_db``)."""
        return -float(self.top_db)

    def to_dict(self) -> dict:
        """All parameters, plus the derived ``frames``, the dB reference and the padding policy."""
        return {**asdict(self), "frames": self.frames, "db_ref": "max", "dtype": "float16",
                "pad": PAD_POLICY, "pad_value": self.pad_value}


def prepare_signal(y: np.ndarray, sr: int, params: MelParams = MelParams()) -> np.ndarray:
    """Step 1-2 of the recipe: the mono signal cropped to ``params.seconds`` at ``params.sr``.

    Shared by :func:`log_mel` and the GPU path (:mod:`fmadask.torchmel`), so that both transform
    the same samples.

    Parameters
    ----------
    y : numpy.ndarray
        Mono signal, shape ``(n_samples,)``.
    sr : int
        Its sample rate in Hz.
    params : MelParams
        The recipe.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(min(n, params.samples),)`` (after resampling), at ``params.sr``.
    """
    if y.ndim != 1:
        raise ValueError(f"log_mel needs a mono signal of shape (n,), got {y.shape}")
    # Crop before resampling, with a second of margin so that the resampler's edge effects stay
    # outside what is kept, then exactly after.
    margin = int(np.ceil(params.samples * sr / params.sr)) + int(sr)
    y = np.ascontiguousarray(y[:margin], dtype=np.float32)
    return resample(y, sr, params.sr)[:params.samples]


def mel_filters(params: MelParams = MelParams()) -> np.ndarray:
    """The Slaney mel filter bank of the recipe, shape ``(n_mels, 1 + n_fft // 2)``, float32."""
    import librosa      # here: planning a job (MelParams) must not pay librosa's import

    return librosa.filters.mel(sr=params.sr, n_fft=params.n_fft, n_mels=params.n_mels,
                               fmin=params.fmin, fmax=params.fmax)


def fixed_size(db: np.ndarray, params: MelParams = MelParams()) -> tuple[np.ndarray, int]:
    """Step 5: dB frames ``(n_mels, t)`` as float16 of exactly ``params.frames`` frames.

    Returns the padded spectrogram and the number of frames computed from the signal.
    """
    valid = min(db.shape[1], params.frames)
    out = np.full((params.n_mels, params.frames), params.pad_value, dtype=np.float16)
    out[:, :valid] = db[:, :valid]
    return out, valid


def log_mel(y: np.ndarray, sr: int, params: MelParams = MelParams()) -> tuple[np.ndarray, int]:
    """The fixed-size log-mel spectrogram of a mono signal.

    Parameters
    ----------
    y : numpy.ndarray
        Mono signal, shape ``(n_samples,)``, float32.
    sr : int
        Its sample rate in Hz (resampled to ``params.sr`` if different).
    params : MelParams
        The recipe.

    Returns
    -------
    spectrogram : numpy.ndarray
        Shape ``(params.n_mels, params.frames)``, float16, dB in ``[-top_db, 0]``.
    valid_frames : int
        Frames computed from the signal; the rest (up to ``params.frames``) are padding.
    """
    import librosa

    y = prepare_signal(y, sr, params)
    power = librosa.feature.melspectrogram(y=y, sr=params.sr, n_fft=params.n_fft,
                                           hop_length=params.hop_length, n_mels=params.n_mels,
                                           fmin=params.fmin, fmax=params.fmax, power=2.0)
    if power.max() > AMIN:
        db = librosa.power_to_db(power, ref=np.max, amin=AMIN, top_db=params.top_db)
    else:
        # Digital silence: relative to its own (zero) peak librosa would make it 0 dB everywhere,
        # the loudest possible value; it is the floor instead.
        db = np.full(power.shape, params.pad_value, dtype=power.dtype)
    return fixed_size(db, params)
