"""Model files cannot run code (issue 9, item 5): crafted pickles, skops files, checkpoints and
pointers are refused in one line, and the command a crafted file was meant to run never runs."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
import soundfile as sf
import torch
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from fmadask.cli import main
from fmadask.dl.config import TrainConfig
from fmadask.dl.launch import run_cnn
from fmadask.dl.nets import build_net
from fmadask.dl.predict import load_model, save_model
from fmadask.dl.synthetic import write_synthetic_spectrograms
from fmadask.dl.checkpoint import load_checkpoint
from fmadask.errors import DataError
from fmadask.features import FEATURE_COLUMNS
from fmadask.integrity import describe
from fmadask.ml.models import make_pipeline
from fmadask.ml.persist import load_classical, save_classical
from fmadask.predict import predict

GENRES = ["Folk", "Pop", "Rock"]


class _Payload:
    """Pickles into 'run a shell command that creates the marker file'."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _card(tmp_path: Path, files: dict) -> None:
    (tmp_path / "model.json").write_text(json.dumps(
        {"kind": "classical", "format": 2, "classes": GENRES, "files": files,
         "feature_columns": [], "features": {}}))


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    X = np.random.default_rng(0).random((30, 4)).astype(np.float32)
    y = np.arange(30) % 3
    folder = tmp_path / "model"
    save_classical(folder, make_pipeline("logistic_regression").fit(X, y), {"classes": GENRES})
    return folder


def test_a_crafted_pickle_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    (tmp_path / "pipeline.joblib").write_bytes(pickle.dumps(_Payload(marker)))
    (tmp_path / "model.json").write_text(json.dumps(
        {"kind": "classical", "format": 1, "classes": GENRES, "feature_columns": [],
         "files": {"pipeline": "pipeline.joblib"}}))
    with pytest.raises(DataError, match="older fmadask") as info:
        predict(tmp_path, [tmp_path / "x.mp3"])
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_a_skops_file_holding_untrusted_types_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    crafted = Pipeline([("scale", FunctionTransformer(os.system)), ("model", FunctionTransformer())])
    sio.dump(crafted, tmp_path / "pipeline.skops")
    _card(tmp_path, describe(tmp_path, {"pipeline": "pipeline.skops"}))   # checksums match
    with pytest.raises(DataError, match="types fmadask does not load.*system"):
        load_classical(tmp_path)
    assert not marker.exists()


def test_a_replaced_or_truncated_model_file_is_refused(model_dir: Path) -> None:
    pipeline, _ = load_classical(model_dir)          # as written: loads
    path = model_dir / "pipeline.skops"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="checksum"):
        load_classical(model_dir)


@pytest.mark.parametrize("name", ["../elsewhere/pipeline.skops", "/etc/passwd", "link.skops"])
def test_model_file_names_stay_inside_the_model_folder(model_dir: Path, tmp_path: Path,
                                                       name: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(model_dir / "pipeline.skops", elsewhere / "pipeline.skops")
    (model_dir / "link.skops").symlink_to(elsewhere / "pipeline.skops")
    card = json.loads((model_dir / "model.json").read_text())
    card["files"]["pipeline"]["name"] = name
    (model_dir / "model.json").write_text(json.dumps(card))
    with pytest.raises(DataError, match="outside the folder|not a name inside"):
        load_classical(model_dir)


def test_best_json_may_not_point_outside_its_stage(model_dir: Path, tmp_path: Path) -> None:
    stage = tmp_path / "classical"
    stage.mkdir()
    (stage / "best.json").write_text(json.dumps({"path": str(model_dir)}))   # absolute: out
    with pytest.raises(DataError, match="not a name inside|outside"):
        predict(stage, [tmp_path / "x.mp3"])
    (stage / "best.json").write_text(json.dumps({"path": "../model"}))
    with pytest.raises(DataError, match="outside"):
        predict(stage, [tmp_path / "x.mp3"])


def _cnn(tmp_path: Path) -> Path:
    params = {"sr": 22050, "n_fft": 2048, "hop_length": 512, "n_mels": 32, "seconds": 30.0,
              "top_db": 80.0, "frames": 1292, "decode_sr": "native"}
    net = build_net("naive", 3, 32, 43, width=4)
    return save_model(tmp_path / "cnn", net, arch="naive", width=4, classes=GENRES,
                      params=params, segment_seconds=1.0, seg=43, norm=(-40.0, 10.0))


def test_cnn_weights_are_checked_and_a_damaged_card_is_one_line(tmp_path: Path) -> None:
    folder = _cnn(tmp_path)
    load_model(folder)
    meta = json.loads((folder / "model.json").read_text())
    del meta["segment_frames"]
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="lacks segment_frames"):
        load_model(folder)
    folder = _cnn(tmp_path)
    torch.save({"x": torch.zeros(1)}, folder / "model.pt")                  # swapped weights
    with pytest.raises(DataError, match="checksum"):
        load_model(folder)


def test_a_crafted_checkpoint_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "last.pt"
    torch.save({"format": 1, "config": _Payload(marker)}, path)
    with pytest.raises(DataError, match="cannot be loaded safely"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.slow
def test_cnn_resume_from_a_crafted_checkpoint_is_refused_before_any_rank_starts(
        tmp_path: Path, local_client) -> None:
    write_synthetic_spectrograms(tmp_path, tracks_per_genre=2, n_mels=16, seconds=2.0)
    marker = tmp_path / "marker"
    out = tmp_path / "cnn"
    (out / "checkpoints").mkdir(parents=True)
    torch.save({"format": 1, "config": _Payload(marker)}, out / "checkpoints" / "last.pt")
    with pytest.raises(DataError, match="cannot be loaded safely"):
        run_cnn(tmp_path, TrainConfig(arch="naive", epochs=1, segment_seconds=0.5,
                                      out_dir=str(out)),
                local_client, ranks=1, progress=False, resume=True)
    assert not marker.exists()


# ------------------------------------------------- damaged cards: validated as options are


def _wav(path: Path, seconds: float = 30.0) -> Path:
    rng = np.random.default_rng(0)
    sf.write(path, (0.1 * rng.standard_normal(int(seconds * 22050))).astype(np.float32), 22050)
    return path


def _edit_card(folder: Path, change) -> None:
    card = json.loads((folder / "model.json").read_text())
    change(card)
    (folder / "model.json").write_text(json.dumps(card))


def _predict_line(capsys, folder: Path, audio: Path) -> str:
    """``fmadask predict`` on a damaged model: exit status 2 and one line."""
    assert main(["predict", str(folder), str(audio)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fmadask: ") and "\n" not in err, err
    return err


def _set(card: dict, dotted: str, value: object) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        card = card[key]
    card[last] = value


@pytest.mark.parametrize("key, value, words", [
    ("norm.mean", "x", "norm.mean must be a number"),
    ("norm.std", 0.0, "norm.std must be at least"),
    ("norm.std", float("nan"), "norm.std must be a finite number"),
    ("mel_params.n_fft", -1, "mel_params.n_fft must be at least 1"),
    ("mel_params.hop_length", "512", "mel_params.hop_length must be an integer"),
    ("segment_frames", 0, "segment_frames must be at least 1"),
    ("arch", "resnet9000", "unknown arch 'resnet9000'"),
    ("classes", "Rock", "classes must be a list"),
    ("norm", 5, "norm must be a table"),
])
def test_a_damaged_cnn_card_is_one_line_naming_the_value(tmp_path: Path, capsys, key: str,
                                                         value: object, words: str) -> None:
    folder = _cnn(tmp_path)
    _edit_card(folder, lambda card: _set(card, key, value))
    with pytest.raises(DataError, match="model.json"):
        load_model(folder)
    assert words in _predict_line(capsys, folder, _wav(tmp_path / "a.wav", 2.0))


def _classical_for_audio(folder: Path) -> Path:
    """A classical model over the 518 features (random data: what it predicts is not tested)."""
    X = np.random.default_rng(0).random((30, len(FEATURE_COLUMNS))).astype(np.float32)
    return save_classical(folder, make_pipeline("logistic_regression").fit(X, np.arange(30) % 3),
                          {"classes": GENRES, "feature_columns": list(FEATURE_COLUMNS),
                           "features": {"sr": None, "fma_compat": True, "max_seconds": None}})


@pytest.mark.parametrize("key, value, words", [
    ("classes", "Rock", "classes must be a list"),
    ("classes", [], "classes"),
    ("files.pipeline.name", "pipeline\x00.skops", "not a name inside"),
    ("features.sr", "fast", "features.sr must be"),
])
def test_a_damaged_classical_card_is_one_line(tmp_path: Path, capsys, key: str, value: object,
                                              words: str) -> None:
    folder = _classical_for_audio(tmp_path / "model")
    _edit_card(folder, lambda card: _set(card, key, value))
    with pytest.raises(DataError):
        load_classical(folder)
    assert words in _predict_line(capsys, folder, _wav(tmp_path / "a.wav", 2.0))


@pytest.fixture
def fused_model(tmp_path: Path) -> Path:
    """A fusion folder of a classical model and a tiny CNN, as ``fmadask fuse`` lays it out."""
    folder = tmp_path / "fusion"
    _classical_for_audio(folder / "parts" / "classical")
    _cnn(folder / "parts")                                   # parts/cnn
    (folder / "model.json").write_text(json.dumps(
        {"kind": "fusion", "format": 1, "classes": GENRES, "rule": "geometric",
         "weights": {"classical": 0.5, "cnn": 0.5},
         "parts": {"classical": "parts/classical", "cnn": "parts/cnn"}}))
    return folder


@pytest.mark.parametrize("key, value, words", [
    ("weights.classical", float("nan"), "weights.classical must be a finite number"),
    ("weights.cnn", "0.5", "weights.cnn must be a number"),
    ("weights.cnn", -0.5, "weights.cnn must be at least 0"),
    ("parts.cnn", 5, "parts.cnn"),
    ("parts.classical", "parts/\x00classical", "parts.classical"),
])
def test_a_damaged_fusion_card_is_refused_not_predicted(fused_model: Path, tmp_path: Path,
                                                        capsys, key: str, value: object,
                                                        words: str) -> None:
    """A NaN weight used to give NaN for every genre with exit status 0."""
    audio = _wav(tmp_path / "song.wav")
    assert main(["predict", str(fused_model), str(audio)]) == 0     # as written: it predicts
    assert "nan" not in capsys.readouterr().out
    _edit_card(fused_model, lambda card: _set(card, key, value))
    assert words in _predict_line(capsys, fused_model, audio)


def test_a_card_nested_too_deeply_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "model.json").write_text('{"kind": "cnn", "x": ' + "[" * 100_000 + "]" * 100_000
                                         + "}")
    assert "model.json" in _predict_line(capsys, tmp_path, tmp_path / "a.wav")
