"""``predict`` and the ``train``/``predict`` commands on real mp3s of the generated sample.

A model is trained on the featurize job's Parquet output of the session's sample; ``predict``
must decode and featurize a file exactly as that job did (so a training clip's probabilities
equal those of its stored features row), and a bad file must get a clear line while the others
are scored.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fmadask.audio import segments
from fmadask.cli import main
from fmadask.errors import DataError
from fmadask.fma.tracks import track_table
from fmadask.ml.models import class_scores
from fmadask.ml.persist import load_classical
from fmadask.ml.train import ClassicalConfig, train
from fmadask.pipeline import run_featurize
from fmadask.pipeline.featurize import FeaturizeConfig
from fmadask.predict import expand_paths, format_predictions, predict
from fmadask.runfolder import read_errors, read_features

SMALL = {"xgboost": {"n_estimators": 10}}


@pytest.fixture(scope="module")
def run(sample_dir: Path, local_client, tmp_path_factory) -> Path:
    """The sample featurized (features only, the study's stratified split) and three models
    trained on it."""
    out = tmp_path_factory.mktemp("predict") / "run"
    run_featurize(sample_dir, out=out, client=local_client,
                  config=FeaturizeConfig(what=["features"], split="stratified"), progress=False)
    train(out, config=ClassicalConfig(models=["xgboost", "svc", "logistic_regression"],
                                      model_params=SMALL, unsupervised=False),
          client=local_client, progress=False)
    return out


@pytest.fixture(scope="module")
def files(run: Path, sample_dir: Path) -> dict[str, list[Path]]:
    """The sample's good clips (featurized) and its defective ones (recorded as errors)."""
    paths = track_table(sample_dir)["path"]
    good = [Path(paths[t]) for t in read_features(run).index[:4]]
    bad = [Path(paths[t]) for t in read_errors(run)["track_id"]]
    return {"good": good, "bad": bad}


def test_a_clip_gets_the_probabilities_of_its_featurized_row(run, files):
    model_dir = run / "classical" / "models" / "xgboost"
    table = predict(model_dir, files["good"])
    pipeline, card = load_classical(model_dir)
    features = read_features(run)
    classes = card["classes"]
    assert table.attrs["outputs"] == "probability" and table.attrs["classes"] == classes
    assert table["error"].isna().all()
    stored = features.loc[features.index[:4], card["feature_columns"]].to_numpy(np.float32)
    expected, _ = class_scores(pipeline, stored)
    # Same decoder entry point, sample rate, feature code and thread count as the featurize
    # job: the same numbers (a tree model's output jumps if a feature moves across a split).
    np.testing.assert_allclose(table[classes].to_numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(table[classes].sum(axis=1), 1.0, rtol=1e-5)
    assert list(table["genre"]) == [classes[i] for i in expected.argmax(axis=1)]
    assert (table["n_segments"] == 1).all()


def test_bad_files_get_their_error_and_the_others_are_scored(run, files, tmp_path):
    text = tmp_path / "notes.mp3"
    text.write_text("not audio at all\n" * 50)
    missing = tmp_path / "gone.mp3"
    paths = [files["good"][0], *files["bad"], text, missing, files["good"][1]]
    table = predict(run / "classical" / "models" / "logistic_regression", paths)
    assert list(table["path"]) == [str(p) for p in paths]
    assert table["genre"].iloc[[0, -1]].notna().all()
    errors = table["error"].iloc[1:-1]
    assert errors.notna().all()
    kinds = {e.split(":")[0] for e in errors}
    assert {"empty", "too_short", "missing"} <= kinds
    assert kinds <= {"empty", "too_short", "truncated", "unreadable", "missing"}
    lines = format_predictions(table)
    assert len(lines) == len(paths)
    assert "cannot predict" not in lines[0] and "cannot predict" not in lines[-1]
    assert lines[-2] == f"{missing}: cannot predict ({table['error'].iloc[-2]})"
    assert all(": cannot predict (" in line for line in lines[1:-1])


def test_a_fifo_and_a_symlink_loop_get_a_clear_line_each_even_in_a_folder(run, files,
                                                                           tmp_path):
    """Named or found in a folder, neither is called "no such file" nor skipped silently, and
    the FIFO is never opened (reading it would wait forever for a writer)."""
    folder = tmp_path / "music"
    folder.mkdir()
    shutil.copy(files["good"][0], folder / "a.mp3")
    os.mkfifo(folder / "pipe.mp3")
    (folder / "loop.mp3").symlink_to(folder / "loop.mp3")
    model = run / "classical" / "models" / "logistic_regression"
    for paths in ([folder], [folder / "pipe.mp3", folder / "loop.mp3", folder / "a.mp3"]):
        table = predict(model, paths)
        errors = dict(zip(table["path"], table["error"]))
        assert set(errors) == {str(folder / n) for n in ("pipe.mp3", "loop.mp3", "a.mp3")}
        assert pd.isna(errors[str(folder / "a.mp3")])
        assert "FIFO" in errors[str(folder / "pipe.mp3")]
        assert "symbolic links" in errors[str(folder / "loop.mp3")]
        for path in ("pipe.mp3", "loop.mp3"):
            assert "no such file" not in errors[str(folder / path)]


def test_a_too_long_file_is_told_what_predict_takes(run, tmp_path):
    """The limit is the one the model's features were made with; predict has no
    --max-seconds, so the line says what to pass instead."""
    limit = json.loads((run / "classical" / "models" / "logistic_regression" / "model.json")
                       .read_text())["features"]["max_seconds"]
    path = tmp_path / "hours.wav"
    sf.write(path, np.zeros(int((limit + 10) * 1000), dtype=np.int16), 1000, subtype="PCM_16")
    table = predict(run / "classical" / "models" / "logistic_regression", [path])
    error = table["error"].iloc[0]
    assert error.startswith("too_long: ") and "--max-seconds" not in error, error
    assert "excerpt.mp3" in error and f"-t {limit:g}" in error, error


def test_svm_scores_are_marked_as_softmax(run, files):
    table = predict(run / "classical" / "models" / "svc", files["good"][:1])
    assert table.attrs["outputs"] == "softmax"
    assert "(softmax scores)" in format_predictions(table, top=2)[0]


def test_a_folder_stands_for_its_audio_files_and_classical_for_its_best_model(run, files,
                                                                              tmp_path):
    folder = tmp_path / "music" / "deeper"
    folder.mkdir(parents=True)
    for i, path in enumerate(files["good"][:2]):
        shutil.copy(path, folder / f"song{i}.mp3")
    (folder / "cover.jpg").write_bytes(b"\xff\xd8")
    assert expand_paths([tmp_path / "music"]) == [folder / "song0.mp3", folder / "song1.mp3"]
    best = json.loads((run / "classical" / "best.json").read_text())
    by_stage = predict(run / "classical", [tmp_path / "music"])
    by_model = predict(run / "classical" / best["path"], [tmp_path / "music"])
    pd.testing.assert_frame_equal(by_stage, by_model)


def test_a_long_file_is_scored_as_the_mean_of_its_30_s_segments(run, tmp_path):
    # 70 s of a new note every quarter second over noise (a pure tone has NaN kurtoses).
    rng = np.random.default_rng(0)
    sr = 22050
    t = np.arange(70 * sr) / sr
    notes = 220 * 2 ** (rng.integers(0, 24, size=70 * 4) / 12)
    y = (0.3 * np.sin(2 * np.pi * np.repeat(notes, sr // 4 + 1)[:t.size] * t)
         + 0.05 * rng.normal(size=t.size)).astype(np.float32)
    path = tmp_path / "long.wav"
    sf.write(path, y, sr)
    table = predict(run / "classical" / "models" / "logistic_regression", [path])
    # 70 s: two 30 s segments; the last 10 s (under half a segment) are left out.
    assert table["error"].isna().all() and table["n_segments"].iloc[0] == 2
    assert [len(s) for s in segments(y, sr)] == [30 * sr, 30 * sr]
    assert [len(s) for s in segments(y[:40 * sr], sr)] == [40 * sr]


def test_a_steady_tone_gets_the_constant_series_moments_as_in_training(run, tmp_path):
    """A steady tone has constant chroma bins, whose skewness and kurtosis SciPy gives as NaN:
    they get FMA's values (0 and -3), as the training table's, and the file is scored."""
    from threadpoolctl import threadpool_limits

    from fmadask.audio import load_audio
    from fmadask.features import FEATURE_COLUMNS, fma_features

    sr = 22050
    path = tmp_path / "tone.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * sr) / sr)).astype(np.float32), sr)
    with threadpool_limits(1):      # as predict (and the featurize workers) compute features
        raw = fma_features(*load_audio(path))
    table = predict(run / "classical" / "models" / "logistic_regression", [path])
    assert table["error"].isna().all() and table["genre"].notna().all()
    pipeline, card = load_classical(run / "classical" / "models" / "logistic_regression")
    filled = np.where(np.isnan(raw), [-3.0 if "_kurtosis_" in c else 0.0 for c in FEATURE_COLUMNS],
                      raw)
    np.testing.assert_allclose(table[card["classes"]].to_numpy()[0],
                               class_scores(pipeline, filled[None].astype(np.float32))[0][0],
                               rtol=1e-6)


def test_model_kind_decides_the_predictor(tmp_path, files):
    (tmp_path / "model.json").write_text(json.dumps({"kind": "cnn", "classes": ["Rock"]}))
    with pytest.raises(DataError, match="CNN"):
        predict(tmp_path, files["good"][:1])          # the CNN predictor: no model.pt here
    (tmp_path / "model.json").write_text(json.dumps({"kind": "svm-light", "classes": []}))
    with pytest.raises(DataError, match="unknown model kind 'svm-light'"):
        predict(tmp_path, files["good"][:1])
    with pytest.raises(DataError, match="model.json not found"):
        predict(tmp_path / "nothing", files["good"][:1])


# ------------------------------------------------------------------------------- commands


def test_predict_command_prints_a_line_per_file_and_fails_softly(run, files, capsys):
    model = str(run / "classical" / "models" / "xgboost")
    assert main(["predict", model, str(files["good"][0]), "--top", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"{files['good'][0]}: ") and out[0].count(",") == 1
    assert main(["predict", model, str(files["bad"][0]), str(files["good"][1])]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert "cannot predict" in out[0] and "cannot predict" not in out[1]


def test_predict_command_without_a_model_is_one_line(tmp_path, files, capsys):
    assert main(["predict", str(tmp_path), str(files["good"][0])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fmadask: ") and "model.json" in err and "\n" not in err


def test_train_command_writes_the_table_on_an_existing_scheduler(run, local_client, tmp_path,
                                                                 capsys):
    out = tmp_path / "classical"
    status = main(["train", str(run), "--models", "logistic_regression,decision_tree",
                   "--no-unsupervised", "--out", str(out),
                   "--scheduler", local_client.scheduler.address])
    assert status == 0
    printed = capsys.readouterr().out
    assert "| Logistic Regression |" in printed and "| Decision Tree |" in printed
    assert pd.read_csv(out / "results.csv")["name"].tolist() == ["logistic_regression",
                                                                 "decision_tree"]
    assert main(["train", str(run), "--models", "knn", "--out", str(out)]) == 2


def test_train_command_reports_the_scale_threshold_it_used(run, local_client, tmp_path,
                                                            capsys):
    """``--scale-threshold 0`` (swap always) used to be reported as the default, 10,000."""
    out = tmp_path / "classical"
    assert main(["train", str(run), "--models", "decision_tree",
                 "--no-unsupervised", "--scale-threshold", "0", "--out", str(out),
                 "--scheduler", local_client.scheduler.address]) == 0
    printed = capsys.readouterr().out
    assert "past 0:" in printed and "10,000" not in printed, printed
    assert "past 0:" in (out / "table.md").read_text()
