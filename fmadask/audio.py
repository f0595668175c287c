"""Decoding: the one entry point from an audio file to a mono float32 signal.

:func:`load_audio` decodes exactly like today's ``librosa.load(path, sr=None, mono=True)``:
libsndfile (through soundfile; MP3 through its mpg123 decoder) to float32, channels averaged in
float32 the way ``librosa.to_mono`` does, so the samples are the same, bit for bit. That matters:
FMA's features were made with librosa's loader, and another mp3 decoder moves some statistics by
more than 1e-3. Files libsndfile cannot open or read (e.g. AAC in MP4) are decoded by FFmpeg
through PyAV instead; its samples are not bit-identical to libsndfile's, so such tracks are logged
(logger ``fmadask.audio``) and the fallback is named in :data:`DECODER`.

Memory: the file is read in blocks of :data:`BLOCK_FRAMES` frames and mixed to mono block by
block, so peak memory is the mono signal plus one block (``librosa.load`` holds the whole
multi-channel signal and then the mono copy, 3x the mono size for stereo). A file whose duration
(from its header, before any decoding) exceeds ``max_seconds`` is refused with
:class:`TooLongAudio`; if a header understates the duration, decoding stops as soon as it passes
``max_seconds``. So no call holds more than ``max_seconds`` of mono audio (4 bytes x rate x
seconds: 30 s at 44.1 kHz is 5.3 MB, 3 h is 1.9 GB). Features of hours-long tracks are not
computed in windows: set ``max_seconds`` to refuse them.

Bad files raise subclasses of :class:`AudioError`, each with a ``kind`` (the ``error_type``
recorded in ``errors/``): ``empty``, ``too_short``, ``too_long``, ``truncated``, ``unreadable``,
``missing``.
"""
from __future__ import annotations

import io
import logging
import math
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np
import soundfile as sf
import soxr

from fmadask import storage
from fmadask.errors import ConfigError, DataError
from fmadask.options import setting

log = logging.getLogger(__name__)

#: Shortest signal accepted, in seconds. FMA's recipe needs a few dozen frames for meaningful
#: statistics (1 s gives 87 frames at hop 512 and 44.1 kHz); shorter clips in FMA are defects
#: (clips of 0.25-0.8 s, cut-off uploads). The CQT itself also runs on shorter input, but its
#: lowest filters (about 0.5 s long at C1) would then see mostly padding.
MIN_SECONDS = 1.0

#: A decode that yields less than this fraction of the frames the header announces is a
#: truncated file (a download or upload cut short), not a short track.
TRUNCATED_FRACTION = 0.9

#: Length of FMA's clips, in seconds: the pieces a long file is cut into for a model trained on
#: them (:func:`segments`).
SEGMENT_SECONDS = 30.0

#: A too-long file's advice where no option sets the limit (predict, whose limit is the one the
#: model's features were made with).
EXCERPT_FIX = "predict an excerpt instead (e.g. ffmpeg -i FILE -t {limit:g} excerpt.mp3)"

#: Frames per block when decoding with libsndfile (about 6 s at 44.1 kHz).
BLOCK_FRAMES = 1 << 18

#: Most bytes one second of audio can take: lossy formats up to 640 kbit/s (MP3's free format;
#: FMA's mp3s are at most 320), anything else uncompressed (8 channels of float32 at 192 kHz).
#: With ``max_seconds`` a larger file is refused before a decoder reads it: a 2 GiB file of
#: zeros named ``.mp3`` once made FFmpeg hold 2.5 GB before it failed.
LOSSY_SUFFIXES = (".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma")
LOSSY_BYTES_PER_SECOND = 80_000
RAW_BYTES_PER_SECOND = 192_000 * 8 * 4
#: Room for tags and cover art on top of the audio.
TAG_ALLOWANCE = 16 * 2**20


def _ffmpeg_version() -> str:
    version = getattr(av, "ffmpeg_version_info", None)
    if version:
        return str(version)
    major, minor, micro = av.library_versions.get("libavcodec", (0, 0, 0))
    return f"libavcodec {major}.{minor}.{micro}"


#: The decoder that produces our samples (recorded with every table we write).
DECODER = (f"libsndfile {sf.__libsndfile_version__} (mpg123 for MP3) via soundfile {sf.__version__}"
           f"; fallback FFmpeg {_ffmpeg_version()} via PyAV {av.__version__}")


class AudioError(DataError):
    """A track whose audio cannot be used; the job records it and goes on.

    Attributes
    ----------
    kind : str
        Short machine-readable type, recorded as ``error_type``.
    path : str
        The file.
    """

    kind = "audio"

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnreadableAudio(AudioError):
    """Corrupt, truncated, missing or not audio: no decoder could read it fully."""

    kind = "unreadable"


class TruncatedAudio(UnreadableAudio):
    """The file ends well before the duration its header announces (a cut-off download)."""

    kind = "truncated"


class MissingAudio(UnreadableAudio):
    """The file does not exist."""

    kind = "missing"


class EmptyAudio(AudioError):
    """The file holds no audio at all (0 bytes, only tags, or 0 decoded samples)."""

    kind = "empty"


class TooShortAudio(AudioError):
    """Shorter than :data:`MIN_SECONDS`, too short for meaningful features."""

    kind = "too_short"


class TooLongAudio(AudioError):
    """Longer than the ``max_seconds`` asked for; refused before decoding."""

    kind = "too_long"


def load_audio(path: str | os.PathLike, sr: int | None = None,
               max_seconds: float | None = None,
               storage_options: Mapping[str, Any] | None = None,
               too_long_fix: str | None = None) -> tuple[np.ndarray, int]:
    """Decode an audio file to a mono float32 signal.

    Parameters
    ----------
    path : str or os.PathLike
        The audio file (MP3 for FMA; anything libsndfile or FFmpeg reads): a local path or an
        fsspec URL. An object is fetched whole into memory (retried on transient errors, and
        bounded by ``max_seconds`` as below) and decoded from there: one track at a time, no
        copy on local disk.
    sr : int, optional
        Target sample rate in Hz; resampled with soxr (HQ, as librosa's default ``soxr_hq``).
        None keeps the file's native rate (FMA's setting).
    max_seconds : float, optional
        Refuse files longer than this many seconds (from the header, before decoding).
    storage_options : mapping, optional
        fsspec options of a URL (credentials, endpoint).
    too_long_fix : str, optional
        Advice of a too-long file's error (``{limit}``: ``max_seconds``), e.g.
        :data:`EXCERPT_FIX`; by default: raise ``featurize.max_seconds``.

    Returns
    -------
    y : numpy.ndarray
        Mono signal, shape ``(n_samples,)``, float32, in [-1, 1] for PCM-like sources.
    sr : int
        Its sample rate in Hz.

    Raises
    ------
    MissingAudio, UnreadableAudio, TruncatedAudio, EmptyAudio, TooShortAudio, TooLongAudio
        All subclasses of :class:`AudioError`; see their ``kind``.
    ConfigError
        If ``sr`` or ``max_seconds`` is not positive.
    """
    if sr is not None and (int(sr) != sr or sr <= 0):
        raise ConfigError(f"sample rate must be a positive integer or None, not {sr!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise ConfigError(f"max_seconds must be positive or None, not {max_seconds!r}")
    url = storage.is_url(path)
    path = path if url else Path(path)
    if not url and not path.is_file():
        raise _not_a_file(path)
    try:
        size = storage.size(path, storage_options)
    except (FileNotFoundError, IsADirectoryError):
        raise MissingAudio(path, "no such file; check the data directory") from None
    if size == 0:
        raise EmptyAudio(path, "the file is empty (0 bytes)")
    try:
        return _decode(path, url, size, sr, max_seconds, storage_options)
    except TooLongAudio as exc:     # the advice depends on who sets the limit
        fix = (too_long_fix or f"raise {setting('featurize.max_seconds')} to include it")
        raise TooLongAudio(path, f"{exc.reason}; {fix.format(limit=max_seconds)}") from None


def _not_a_file(path: Path) -> UnreadableAudio:
    """Why ``path``, which is not a regular file, is not read. It is never opened: reading a
    FIFO would wait forever for a writer."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return MissingAudio(path, "no such file; check the data directory")
    except OSError as exc:          # a symbolic link loop, a folder above it not readable
        return UnreadableAudio(path, f"cannot be opened: {exc.strerror}")
    what = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device")
    return UnreadableAudio(path, f"{what}, not a regular file: pass audio files")


def _decode(path: str | Path, url: bool, size: int, sr: int | None, max_seconds: float | None,
            storage_options: Mapping[str, Any] | None) -> tuple[np.ndarray, int]:
    """:func:`load_audio` of a file known to exist, of ``size`` bytes."""
    if max_seconds is not None and size > max_file_bytes(path, max_seconds):
        raise TooLongAudio(path, f"{size / 2**20:.0f} MiB, more than {max_seconds:g} s of audio "
                                 "can take in this format")
    # A URL is decoded from memory: a failed fetch is retried as a whole and is never mistaken
    # for a damaged file (a decoder reading a network stream cannot tell the two apart).
    source: str | Path | BinaryIO = (io.BytesIO(storage.read_bytes(path, storage_options))
                                     if url else path)
    try:
        y, native_sr, expected = _decode_libsndfile(path, source, max_seconds)
    except (sf.LibsndfileError, RuntimeError) as sndfile_error:
        try:
            y, native_sr, expected = _decode_pyav(path, source, max_seconds)
        except (av.FFmpegError, ValueError, IndexError, RuntimeError) as ffmpeg_error:
            if _holds_only_tags(source):
                raise EmptyAudio(path, "no audio frames (the file holds only tags)") from None
            raise UnreadableAudio(path, f"not decodable: libsndfile: {sndfile_error}; "
                                        f"FFmpeg: {ffmpeg_error}") from None
        log.info("%s: decoded with the fallback (FFmpeg via PyAV): %s", path, sndfile_error)
    _check_length(path, y, native_sr, expected)
    if sr is None or sr == native_sr:
        return y, native_sr
    return resample(y, native_sr, int(sr)), int(sr)


def max_file_bytes(path: str | os.PathLike, max_seconds: float) -> int:
    """The largest file that can hold ``max_seconds`` of audio in ``path``'s format."""
    rate = (LOSSY_BYTES_PER_SECOND if os.path.splitext(str(path))[1].lower() in LOSSY_SUFFIXES
            else RAW_BYTES_PER_SECOND)
    return int(max_seconds * rate) + TAG_ALLOWANCE


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample like ``librosa.resample(y, orig_sr, target_sr, res_type='soxr_hq')``.

    Parameters
    ----------
    y : numpy.ndarray
        Mono float32 signal, shape ``(n,)``.
    orig_sr, target_sr : int
        Rates in Hz.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(ceil(n * target_sr / orig_sr),)`` (padded with zeros or trimmed to
        that length, as librosa does).
    """
    if orig_sr == target_sr:
        return y
    n_out = int(np.ceil(y.shape[-1] * float(target_sr) / orig_sr))
    out = soxr.resample(y, orig_sr, target_sr, quality="HQ")
    if len(out) < n_out:
        out = np.pad(out, (0, n_out - len(out)))
    return np.asarray(out[:n_out], dtype=y.dtype)


def segments(y: np.ndarray, sr: int, seconds: float = SEGMENT_SECONDS) -> list[np.ndarray]:
    """Cut a signal into consecutive ``seconds``-long pieces.

    A signal up to 1.5 segments long is one piece; otherwise a last piece shorter than half a
    segment is dropped (its statistics would be noisier than the clips the model knows).

    Parameters
    ----------
    y : numpy.ndarray, shape (n,)
        Mono samples.
    sr : int
        Sample rate in Hz.
    seconds : float
        Length of a piece in seconds.

    Returns
    -------
    list of numpy.ndarray
        Views of ``y``: ``y`` itself when it is short, else pieces of ``round(seconds * sr)``
        samples (the last one possibly shorter, but at least half of that).
    """
    size = int(round(seconds * sr))
    if len(y) <= 1.5 * size:
        return [y]
    pieces = [y[start:start + size] for start in range(0, len(y), size)]
    return [p for p in pieces if len(p) >= size // 2]


def _refuse_if_too_long(path: str | Path, seconds: float | None, max_seconds: float | None) -> None:
    if max_seconds is not None and seconds is not None and seconds > max_seconds:
        raise TooLongAudio(path, f"{seconds:.0f} s long, more than the limit of "
                                 f"{max_seconds:g} s")


def _rewound(source: str | Path | BinaryIO) -> str | Path | BinaryIO:
    """``source`` ready to be read from its start (a file object read before is rewound)."""
    if not isinstance(source, (str, Path)):
        source.seek(0)
    return source


def _decode_libsndfile(path: str | Path, source: str | Path | BinaryIO, max_seconds: float | None
                       ) -> tuple[np.ndarray, int, int | None]:
    """Decode with libsndfile block by block; returns (mono, rate, frames announced by header).

    ``path`` names the track in messages; ``source`` is what is read (the path or its bytes).
    """
    with sf.SoundFile(_rewound(source)) as f:
        rate, frames = f.samplerate, f.frames
        # libsndfile reports an unknown length as a huge number; trust only plausible ones.
        announced = frames if 0 < frames < 2**62 else None
        _refuse_if_too_long(path, announced / rate if announced else None, max_seconds)
        limit = None if max_seconds is None else int(math.floor(max_seconds * rate)) + 1
        out = _MonoBuffer(announced or BLOCK_FRAMES)
        while True:
            block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
            if len(block) == 0:
                break
            out.append(_to_mono(block))
            if limit is not None and len(out) >= limit:
                _refuse_if_too_long(path, len(out) / rate, max_seconds)
    return out.result(), rate, announced


def _decode_pyav(path: str | Path, source: str | Path | BinaryIO, max_seconds: float | None
                 ) -> tuple[np.ndarray, int, int | None]:
    """Decode the first audio stream with FFmpeg; returns (mono, rate, None)."""
    source = _rewound(source)
    with av.open(source if not isinstance(source, Path) else str(source)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate or stream.codec_context.sample_rate
        if container.duration is not None:
            _refuse_if_too_long(path, container.duration / 1e6, max_seconds)
        limit = None if max_seconds is None else int(math.floor(max_seconds * rate)) + 1
        out = _MonoBuffer(BLOCK_FRAMES)
        resampler = None
        for frame in container.decode(stream):
            if frame.sample_rate != rate:
                raise ValueError(f"sample rate changes within the stream ({rate} -> "
                                 f"{frame.sample_rate} Hz)")
            if frame.format.name != "fltp":
                # Format conversion only: same layout and rate, so no remixing or resampling.
                resampler = resampler or av.AudioResampler(format="fltp", layout=frame.layout,
                                                           rate=rate)
                planes = [f.to_ndarray() for f in resampler.resample(frame)]
            else:
                planes = [frame.to_ndarray()]
            for plane in planes:
                out.append(_to_mono(plane.T))
            if limit is not None and len(out) >= limit:
                _refuse_if_too_long(path, len(out) / rate, max_seconds)
    return out.result(), int(rate), None


def _to_mono(block: np.ndarray) -> np.ndarray:
    """Average the channels of a ``(frames, channels)`` float32 block as ``librosa.to_mono`` does.

    librosa reads ``(frames, channels)``, transposes and takes ``np.mean(axis=0)`` in float32;
    the same expression on each block gives the same samples.
    """
    if block.shape[1] == 1:
        return block[:, 0].copy()
    return np.mean(block.T, axis=0)


class _MonoBuffer:
    """A growing float32 buffer, preallocated from the header's length, holding one copy only."""

    def __init__(self, capacity: int) -> None:
        self._data = np.empty(max(int(capacity), 1), dtype=np.float32)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def append(self, samples: np.ndarray) -> None:
        end = self._n + len(samples)
        if end > len(self._data):
            grown = np.empty(max(end, 2 * len(self._data)), dtype=np.float32)
            grown[:self._n] = self._data[:self._n]
            self._data = grown
        self._data[self._n:end] = samples
        self._n = end

    def result(self) -> np.ndarray:
        if self._n == len(self._data):
            return self._data
        return self._data[:self._n].copy()


def _check_length(path: str | Path, y: np.ndarray, rate: int, announced: int | None) -> None:
    if len(y) == 0:
        raise EmptyAudio(path, "no audio (0 samples decoded)")
    if announced and len(y) < TRUNCATED_FRACTION * announced:
        raise TruncatedAudio(path, f"truncated: decoded {len(y) / rate:.2f} s of the "
                                   f"{announced / rate:.2f} s its header announces; "
                                   "download the file again")
    if len(y) < MIN_SECONDS * rate:
        raise TooShortAudio(path, f"{len(y) / rate:.2f} s of audio, shorter than the "
                                  f"{MIN_SECONDS:g} s minimum for features")


def _holds_only_tags(source: str | Path | BinaryIO) -> bool:
    """True if the file is nothing but ID3 tags (and padding): metadata without audio."""
    if isinstance(source, (str, Path)):
        if Path(source).stat().st_size > 1 << 20:
            return False
        data = Path(source).read_bytes()
    else:
        data = _rewound(source).read(1 << 20 | 1)
        if len(data) > 1 << 20:
            return False
    while data[:3] == b"ID3" and len(data) >= 10:
        size = 0
        for byte in data[6:10]:           # a syncsafe integer: 4 x 7 bits
            size = (size << 7) | (byte & 0x7F)
        footer = 10 if data[5] & 0x10 else 0
        data = data[10 + size + footer:]
    if data[-128:-125] == b"TAG":         # an ID3v1 tag at the end
        data = data[:-128]
    return not data.strip(b"\x00")
