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
import torch
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from fmadask.dl.launch import run_cnn
from fmadask.dl.nets import build_net
from fmadask.dl.predict import load_model, save_model
from fmadask.dl.synthetic import write_synthetic_spectrograms
from fmadask.dl.trainer import load_checkpoint
from fmadask.errors import DataError
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
        run_cnn(tmp_path, "naive", epochs=1, ranks=1, client=local_client, progress=False,
                resume=True, segment_seconds=0.5, out_dir=str(out))
    assert not marker.exists()
