"""The CNN recipe's augmentation and the fusion of the classical model with the CNN.

The fusion tests run the real stages on the session's generated sample (real mp3s): featurize
(features and spectrograms) on the session's LocalCluster, logistic regression, and a tiny CNN
trained by 2 DDP ranks with the augmentation on.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fmadask.cli import main
from fmadask.dl.augment import Augmentation, augment_batch, batch_generator
from fmadask.dl.config import TrainConfig
from fmadask.dl.dataset import open_spectrograms, standardise_clip
from fmadask.dl.launch import run_cnn
from fmadask.dl.predict import load_model
from fmadask.errors import ConfigError
from fmadask.fma.tracks import track_table
from fmadask.fusion.pool import fit_weight, pool
from fmadask.fusion.stage import fuse
from fmadask.lock import LockedError
from fmadask.ml.train import ClassicalConfig, train
from fmadask.pipeline import run_featurize
from fmadask.predict import predict
from lock_holder import held_lock

# ------------------------------------------------------------------------- augmentation


def test_augmentation_is_reproducible_and_leaves_the_input_alone():
    x = torch.randn(6, 1, 32, 40)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    before = x.clone()
    aug = Augmentation(gain_db=6.0, masks=2, mixup=0.4, label_smoothing=0.1, db_per_unit=12.0)
    xa, ta = augment_batch(x, y, 8, aug, batch_generator(0, 3, 1, 0))
    xb, tb = augment_batch(x, y, 8, aug, batch_generator(0, 3, 1, 0))
    assert torch.equal(xa, xb) and torch.equal(ta, tb)           # same (seed, epoch, step, rank)
    assert torch.equal(x, before) and not torch.equal(xa, x)
    xc, _ = augment_batch(x, y, 8, aug, batch_generator(0, 3, 1, 1))
    assert not torch.equal(xa, xc)                               # another rank, other draws
    torch.testing.assert_close(ta.sum(dim=1), torch.ones(6))
    assert (ta.argmax(dim=1) == y).all()                         # own label keeps the most mass
    assert ta.min() >= 0.1 / 8 - 1e-7                            # smoothing reaches every class


def test_masks_zero_bands_and_spans_and_gain_shifts_by_db():
    x = torch.ones(4, 1, 64, 80)
    masked, _ = augment_batch(x, torch.zeros(4, dtype=torch.long), 8,
                              Augmentation(masks=1), batch_generator(1, 0, 0, 0))
    assert 0 < (masked == 0).float().mean() < 0.5
    shifted, _ = augment_batch(torch.zeros(3, 1, 4, 4), torch.zeros(3, dtype=torch.long), 8,
                               Augmentation(gain_db=6.0, db_per_unit=3.0),
                               batch_generator(1, 0, 0, 0))
    per_item = shifted.flatten(1)
    assert torch.equal(per_item.min(dim=1).values, per_item.max(dim=1).values)  # one shift each
    assert per_item.abs().max() <= 2.0 and per_item.abs().max() > 0           # 6 dB / 3 dB


def test_recipe_options_are_validated():
    assert TrainConfig().gain_db > 0 and TrainConfig().label_smoothing > 0  # the new recipe
    assert not Augmentation().active
    for bad in (dict(mixup=-1.0), dict(label_smoothing=1.0), dict(gain_db=float("nan"))):
        with pytest.raises(ConfigError):
            TrainConfig(**bad).validate()


# ------------------------------------------------------------------------------ pooling


def test_pool_weights_a_confident_part_and_the_weight_follows_validation():
    a = np.array([[0.9, 0.1], [0.6, 0.4]])
    b = np.array([[0.2, 0.8], [0.1, 0.9]])
    np.testing.assert_allclose(pool([a, b], [1.0, 0.0]), a)
    np.testing.assert_allclose(pool([a, b], [0.5, 0.5]).sum(axis=1), 1.0)
    # validation says part a is right: all weight goes to it
    weight, trials = fit_weight(a, b, np.array([0, 0]))
    assert weight > 0.5 and len(trials) == 21


# ------------------------------------------------------------------ stages on the sample


@pytest.fixture(scope="module")
def fused_run(sample_dir: Path, local_client, tmp_path_factory) -> Path:
    """Featurize, logistic regression, a tiny augmented CNN and the fusion of a run folder."""
    run = tmp_path_factory.mktemp("fusion") / "run"
    run_featurize(sample_dir, out=run, client=local_client, progress=False)
    train(run, config=ClassicalConfig(models=["logistic_regression"], unsupervised=False),
          client=local_client, progress=False)
    run_cnn(run, TrainConfig(arch="naive_bn", epochs=2, out_dir=str(run / "cnn" / "naive_bn"),
                             segment_seconds=1.0, crops=1, batch_size=4, width=4, masks=4,
                             gain_db=6.0, mixup=0.4, label_smoothing=0.1),
            local_client, ranks=2, progress=False)
    fuse(run)
    return run


@pytest.mark.slow
def test_fusion_writes_one_row_per_source_and_a_report(fused_run: Path):
    out = fused_run / "fusion"
    results = pd.read_csv(out / "results.csv")
    assert list(results["source"]) == ["classical", "cnn", "fusion"]
    assert list(results["model"][:2]) == ["logistic_regression", "naive_bn"]
    for column in ("validation_accuracy", "test_accuracy", "test_f1_macro"):
        assert results[column].between(0, 1).all()
    report = (out / "report.md").read_text()
    assert "confusion_test.png" in report and (out / "confusion_test.png").is_file()
    card = json.loads((out / "model.json").read_text())
    assert card["kind"] == "fusion"
    assert card["weights"]["classical"] + card["weights"]["cnn"] == pytest.approx(1.0)
    # the parts are copied into the model folder, which is self-contained
    assert (out / "parts" / "cnn" / "model.pt").is_file()
    assert (out / "parts" / "classical" / "model.json").is_file()


@pytest.mark.slow
def test_a_planted_test_set_leak_changes_nothing_in_the_weight(fused_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(fused_run, run, ignore=shutil.ignore_patterns("fusion"))
    preds_path = run / "cnn" / "naive_bn" / "predictions.parquet"
    preds = pd.read_parquet(preds_path)
    classes = json.loads((run / "cnn" / "naive_bn" / "model.json").read_text())["classes"]
    test = preds["split"] == "test"
    # the leak: the CNN's test-split probabilities become the true answers
    for c in classes:
        preds.loc[test, f"p_{c}"] = (preds.loc[test, "genre_top"] == c).astype(float)
    preds.to_parquet(preds_path, index=False)
    leaked = fuse(run)
    clean = pd.read_csv(fused_run / "fusion" / "results.csv")
    assert leaked.loc[1, "test_accuracy"] == 1.0              # the planted leak was read ...
    weights = [json.loads((d / "fusion" / "model.json").read_text())["weights"]
               for d in (fused_run, run)]
    assert weights[0] == weights[1]                            # ... and did not move the weight
    assert leaked.loc[0, "test_accuracy"] == clean.loc[0, "test_accuracy"]
    pd.testing.assert_series_equal(
        pd.read_csv(run / "fusion" / "weights.csv")["accuracy"],
        pd.read_csv(fused_run / "fusion" / "weights.csv")["accuracy"])


@pytest.mark.slow
def test_fuse_refuses_a_run_folder_another_command_is_writing(fused_run: Path, tmp_path: Path):
    """The parts it reads may be rewritten under it (a colleague's ``fmadask cnn`` on the same
    folder): it waits its turn, in one line, and leaves the fusion already there as it was."""
    run = tmp_path / "run"
    shutil.copytree(fused_run, run)
    before = {p: p.read_bytes() for p in (run / "fusion").rglob("*") if p.is_file()}
    with held_lock(run, "fmadask cnn"):
        with pytest.raises(LockedError, match="fmadask cnn"):
            fuse(run)
    assert {p: p.read_bytes() for p in (run / "fusion").rglob("*") if p.is_file()} == before


def test_fuse_refuses_an_out_folder_another_command_is_writing(tmp_path: Path):
    """Another run's fuse writing the same --out: refused before anything is read."""
    out = tmp_path / "shared-out"
    with held_lock(out, "fmadask fuse") as holder:
        with pytest.raises(LockedError, match=f"fmadask fuse \\(pid {holder.pid} "):
            fuse(tmp_path / "run", out_dir=out)
        assert [p.name for p in out.iterdir()] == [".fmadask.lock"]


@pytest.mark.slow
def test_the_fused_model_round_trips_through_predict(fused_run: Path, sample_dir: Path,
                                                     capsys):
    stored = pd.read_parquet(fused_run / "fusion" / "predictions.parquet")
    paths = track_table(sample_dir)["path"]
    chosen = stored.groupby("split").head(2)
    files = [paths[t] for t in chosen["track_id"]]
    table = predict(fused_run / "fusion", files + [sample_dir / "missing.mp3"])
    classes = table.attrs["classes"]
    np.testing.assert_allclose(table.loc[:len(files) - 1, classes].to_numpy(float),
                               chosen[[f"p_{c}" for c in classes]].to_numpy(float), atol=1e-4)
    assert list(table["genre"][:len(files)]) == list(chosen["pred"])
    assert isinstance(table.loc[len(files), "error"], str)
    assert main(["predict", str(fused_run / "fusion"), str(files[0])]) == 0
    assert str(files[0]) in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.slow
def test_fuse_on_a_bucket_finds_a_cnn_trained_into_the_cnn_folder_itself(fused_run: Path,
                                                                          s3_server, tmp_path):
    """``fmadask cnn RUN_DIR`` (no ``--out``) writes its model into ``RUN_DIR/cnn`` itself, next
    to whatever model folders are there: fuse from a bucket fetches that model's files (a file
    in ``cnn/`` is not taken for a model folder) and fuses as on disk."""
    run = tmp_path / "run"
    shutil.copytree(fused_run, run)
    shutil.rmtree(run / "fusion")
    for path in (run / "cnn" / "naive_bn").iterdir():
        shutil.move(path, run / "cnn" / path.name)
    (run / "cnn" / "naive_bn").rmdir()
    url = s3_server.upload_run(run, "fusion-s3-cnn-dir")
    remote = fuse(url, storage_options=s3_server.options)
    local = fuse(run)
    numbers = ["validation_accuracy", "test_accuracy", "test_f1_macro"]
    pd.testing.assert_frame_equal(remote[numbers], local[numbers])


def test_fuse_on_a_bucket_copy_of_the_run_equals_fuse_on_disk(fused_run: Path, s3_server,
                                                              sample_dir: Path, capsys):
    """``fmadask fuse s3://...`` reads the parts from the bucket (verified by their cards),
    writes RUN_DIR/fusion back, and the model predicts from there as the local one does."""
    options = s3_server.options
    fs = s3_server.filesystem()
    url = s3_server.upload_run(fused_run, "fusion-s3")
    fs.rm("fusion-s3/runs/r1/fusion", recursive=True)
    flags = [a for k in ("key", "secret", "endpoint_url")
             for a in ("--storage-option", f"{k}={options[k]}")]
    assert main(["fuse", url, *flags]) == 0
    assert f"{url}/fusion" in capsys.readouterr().out
    local = fused_run / "fusion"
    for name in ("results.csv", "weights.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(fs.open(f"fusion-s3/runs/r1/fusion/{name}")),
                                      pd.read_csv(local / name))
    card = json.loads(fs.cat_file("fusion-s3/runs/r1/fusion/model.json"))
    assert card["weights"] == json.loads((local / "model.json").read_text())["weights"]
    assert card["sources"] == {"classical": f"{url}/classical/models/logistic_regression",
                               "cnn": f"{url}/cnn/naive_bn"}
    assert options["secret"] not in json.dumps(card)
    stored = pd.read_parquet(local / "predictions.parquet")
    paths = track_table(sample_dir)["path"]
    files = [paths[t] for t in stored.groupby("split").head(1)["track_id"]]
    pd.testing.assert_frame_equal(predict(f"{url}/fusion", files, storage_options=options),
                                  predict(local, files))


@pytest.mark.slow
def test_augmentation_is_off_at_evaluation(fused_run: Path):
    """The CNN trained with heavy masks, gain and mixup: its stored validation probabilities are
    those of the plain net on the plain segments."""
    model_dir = fused_run / "cnn" / "naive_bn"
    net, meta = load_model(model_dir)
    spec = open_spectrograms(fused_run)
    preds = pd.read_parquet(model_dir / "predictions.parquet").set_index("track_id")
    for row in spec.tracks("validation").itertuples():
        clip = np.load(spec.root / row.shard, mmap_mode="r")[row.row]
        batch = standardise_clip(clip, row.frames, meta["segment_frames"], meta["norm"]["mean"],
                                 meta["norm"]["std"])
        with torch.no_grad():
            expected = torch.softmax(net(torch.from_numpy(batch)), 1).numpy().mean(axis=0)
        got = preds.loc[row.track_id, [f"p_{c}" for c in meta["classes"]]].to_numpy(float)
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_fusion_card_without_its_parts_is_one_line(tmp_path: Path, capsys):
    (tmp_path / "model.json").write_text(json.dumps({"kind": "fusion", "classes": ["Rock"]}))
    assert main(["predict", str(tmp_path), str(tmp_path / "x.mp3")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "fmadask fuse" in err


def test_fuse_command_without_stages_is_one_line(tmp_path: Path, capsys):
    assert main(["fuse", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "classical" in err
