"""Decoding real audio files: same samples as librosa.load, the fallback decoder, typed errors."""
from __future__ import annotations

import logging
from pathlib import Path

import av
import librosa
import numpy as np
import pytest
import soundfile as sf

from fmadask import audio
from fmadask.audio import (AudioError, EmptyAudio, MissingAudio, TooLongAudio, TooShortAudio,
                           TruncatedAudio, UnreadableAudio, load_audio)
from fmadask.errors import ConfigError, DataError
from fmadask.fma.sample import RECIPES, synthesize

SR = 44100


def _write_mp3(path: Path, seconds: float, seed: int = 0, channels: int = 2) -> Path:
    stereo = synthesize(RECIPES[seed % len(RECIPES)], seconds, np.random.default_rng(seed))
    data = stereo if channels == 2 else stereo[:, 0]
    sf.write(path, data, SR, format="MP3")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real files: good mp3s (stereo, mono), FMA's defects, a file only FFmpeg reads."""
    d = tmp_path_factory.mktemp("audio")
    out = {
        "stereo": _write_mp3(d / "stereo.mp3", 3.0, seed=1),
        "mono": _write_mp3(d / "mono.mp3", 2.0, seed=2, channels=1),
        "short": _write_mp3(d / "short.mp3", 0.5, seed=3),
        "empty": d / "empty.mp3",
        "tags_only": d / "tags_only.mp3",
        "garbage": d / "garbage.mp3",
    }
    out["empty"].write_bytes(b"")
    # An ID3v2.3 tag of 256 padding bytes and no MPEG frame: metadata without audio.
    out["tags_only"].write_bytes(b"ID3\x03\x00\x00\x00\x00\x02\x00" + b"\x00" * 256)
    out["garbage"].write_bytes(np.random.default_rng(0).bytes(20000))
    # Cut at half its bytes: the Xing header still announces the full 4 s.
    whole = _write_mp3(d / "whole.mp3", 4.0, seed=4).read_bytes()
    out["truncated"] = d / "truncated.mp3"
    out["truncated"].write_bytes(whole[: len(whole) // 2])
    out["m4a"] = _write_m4a(d / "tone.m4a", seconds=2.0)
    return out


def _write_m4a(path: Path, seconds: float) -> Path:
    """AAC in MP4, encoded by FFmpeg: a real format libsndfile cannot open."""
    t = np.arange(int(seconds * SR)) / SR
    tone = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=SR)
        stream.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate = SR
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.mark.parametrize("name", ["stereo", "mono"])
def test_decode_equals_librosa_load_sample_for_sample(files: dict[str, Path], name: str) -> None:
    y, sr = load_audio(files[name])
    ref, ref_sr = librosa.load(files[name], sr=None, mono=True)
    assert sr == ref_sr == SR
    assert y.dtype == np.float32 and y.ndim == 1
    np.testing.assert_array_equal(y, ref)


def test_decode_in_blocks_equals_one_read(files: dict[str, Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Blocks much smaller than the file (and not a multiple of the MP3 frame size).
    monkeypatch.setattr(audio, "BLOCK_FRAMES", 10_007)
    y, _ = load_audio(files["stereo"])
    ref, _ = librosa.load(files["stereo"], sr=None, mono=True)
    np.testing.assert_array_equal(y, ref)


def test_resampling_equals_librosa_soxr_hq(files: dict[str, Path]) -> None:
    y, sr = load_audio(files["stereo"], sr=22050)
    ref, _ = librosa.load(files["stereo"], sr=22050, mono=True, res_type="soxr_hq")
    assert sr == 22050 and y.dtype == np.float32
    np.testing.assert_array_equal(y, ref)


def test_fallback_decoder_reads_what_libsndfile_cannot(files: dict[str, Path],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(sf.LibsndfileError):
        sf.info(files["m4a"])
    with caplog.at_level(logging.INFO, logger="fmadask.audio"):
        y, sr = load_audio(files["m4a"])
    assert "fallback" in caplog.text
    assert sr == SR and y.dtype == np.float32
    # AAC adds encoder delay and padding, so the length is ~2 s, not exact.
    assert abs(len(y) / sr - 2.0) < 0.1
    spectrum = np.abs(np.fft.rfft(y[SR // 2: SR // 2 + 8192]))
    assert abs(np.argmax(spectrum) * SR / 8192 - 440.0) < 6.0
    assert 0.2 < np.abs(y[SR // 2: SR]).max() < 0.4


@pytest.mark.parametrize("name, error, kind", [
    ("empty", EmptyAudio, "empty"),
    ("tags_only", EmptyAudio, "empty"),
    ("short", TooShortAudio, "too_short"),
    ("truncated", TruncatedAudio, "truncated"),
    ("garbage", UnreadableAudio, "unreadable"),
])
def test_defects_raise_typed_errors(files: dict[str, Path], name: str, error: type,
                                    kind: str) -> None:
    with pytest.raises(error) as caught:
        load_audio(files[name])
    assert caught.value.kind == kind
    assert isinstance(caught.value, AudioError) and isinstance(caught.value, DataError)
    assert str(files[name]) in str(caught.value) and "\n" not in str(caught.value)


def test_truncated_is_unreadable(files: dict[str, Path]) -> None:
    with pytest.raises(UnreadableAudio):
        load_audio(files["truncated"])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MissingAudio) as caught:
        load_audio(tmp_path / "nope.mp3")
    assert caught.value.kind == "missing" and isinstance(caught.value, UnreadableAudio)


def test_too_long_is_refused_from_the_header(files: dict[str, Path]) -> None:
    with pytest.raises(TooLongAudio) as caught:
        load_audio(files["stereo"], max_seconds=2.0)
    assert caught.value.kind == "too_long"
    # The truncated file decodes to ~2 s but its header says 4 s: refusing it at max_seconds=3
    # shows the decision is taken from the header, before decoding.
    with pytest.raises(TooLongAudio):
        load_audio(files["truncated"], max_seconds=3.0)
    y, _ = load_audio(files["stereo"], max_seconds=3.5)
    assert len(y) == 3 * SR


def test_error_kinds_are_distinct() -> None:
    kinds = [cls.kind for cls in (UnreadableAudio, TruncatedAudio, MissingAudio, EmptyAudio,
                                  TooShortAudio, TooLongAudio)]
    assert len(set(kinds)) == len(kinds)


def test_bad_arguments(files: dict[str, Path]) -> None:
    with pytest.raises(ConfigError):
        load_audio(files["stereo"], sr=0)
    with pytest.raises(ConfigError):
        load_audio(files["stereo"], max_seconds=-1)


def test_decoder_is_described() -> None:
    assert f"libsndfile {sf.__libsndfile_version__}" in audio.DECODER
    assert "PyAV" in audio.DECODER and audio.MIN_SECONDS == 1.0


def test_fma_shaped_sample_defects_are_classified(sample_dir: Path) -> None:
    """Every clip of the generated FMA sample decodes as librosa does, or gets its defect's kind."""
    kinds: dict[str, int] = {}
    for path in sorted(sample_dir.glob("fma_small/*/*.mp3")):
        try:
            y, sr = load_audio(path)
        except AudioError as error:
            kinds[error.kind] = kinds.get(error.kind, 0) + 1
            continue
        ref, ref_sr = librosa.load(path, sr=None, mono=True)
        assert sr == ref_sr
        np.testing.assert_array_equal(y, ref)
        kinds["ok"] = kinds.get("ok", 0) + 1
    assert kinds.pop("ok") >= 8
    assert kinds == {"empty": 3, "too_short": 3, "truncated": 1}


def test_a_file_too_large_for_max_seconds_is_refused_before_decoding(tmp_path: Path) -> None:
    """A 2 GiB file of zeros named .mp3 (sparse: no disk used) is refused from its size; the
    decoding process never grows (it once held 2.5 GB in the FFmpeg fallback)."""
    import subprocess
    import sys

    path = tmp_path / "zeros.mp3"
    with open(path, "wb") as fh:
        fh.truncate(2 * 2**30)
    # The peak of this process's own memory (VmHWM, KiB): getrusage's ru_maxrss would also
    # count the parent's memory at the fork (Linux carries it over the exec).
    code = ("import sys\n"
            "from fmadask.audio import load_audio, TooLongAudio\n"
            "try:\n    load_audio(sys.argv[1], max_seconds=1200)\n"
            "except TooLongAudio as exc:\n    print(exc.kind)\n"
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, timeout=120).stdout.split()
    assert out[0] == "too_long"
    assert int(out[1]) < 600 * 1024                       # KiB: far below the file's size
