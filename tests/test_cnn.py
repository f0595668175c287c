"""The CNN stage: dataset, nets, voting, and DDP training on a real local Dask cluster.

The distributed tests train on the featurize job's real spectrogram shards of the session's
generated sample (real mp3s, real decoder), with 2 DDP ranks (gloo) on the 2 worker processes of
the session's LocalCluster. Synchronisation is shown from inside the ranks: each rank's probe (a
training-loop callback of ``cnn_callbacks``) reports digests of its own gradient (before the
all-reduce), of the averaged gradient and of its weights.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import psutil
import pytest
import torch

from fmadask.cli import main
from fmadask.dl.dataset import (SegmentDataset, ShardReader, eval_offsets, normalisation,
                                open_spectrograms, prefetch, random_offsets, segment_frames,
                                standardise_clip)
from fmadask.dl.evaluate import score_segments, track_predictions
from fmadask.dl.launch import TrainingError, rank_specs, run_cnn
from fmadask.dl.nets import ARCHS, build_net
from fmadask.dl.predict import load_model, save_model
from fmadask.dl.synthetic import GENRES, write_synthetic_spectrograms
from fmadask.dl.config import TrainConfig
from fmadask.dl.checkpoint import check_resume
from fmadask.dl.ranks import RankFailure
from fmadask.errors import ConfigError, DataError
from fmadask.fma.tracks import track_table
from fmadask.pipeline import run_featurize
from fmadask.pipeline.featurize import FeaturizeConfig
from fmadask.predict import predict
from fmadask.runfolder import read_errors

import cnn_callbacks
from cnn_callbacks import FailAt, Probe, StopAt

# The callbacks travel to the Dask workers with the ranks' tasks, by value: a worker need not be
# able to import this test folder.
cloudpickle.register_pickle_by_value(cnn_callbacks)

#: Small, fast settings: 1 s segments (43 frames) of 128 mel bands, a narrow net. DataLoader
#: processes are asked for: Dask's workers are daemonic, so the ranks must load in-process.
SMALL = dict(segment_seconds=1.0, crops=1, batch_size=4, width=8, lr=3e-3, patience=100,
             dist_timeout_s=120, num_workers=2)


# ----------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize("valid, seg", [(10, 3), (9, 3), (3, 3), (2, 5), (1292, 129), (130, 129)])
def test_eval_segments_cover_every_valid_frame_once_or_twice(valid, seg):
    offsets = eval_offsets(valid, seg)
    assert offsets[0] == 0 and np.all(np.diff(offsets) > 0)
    covered = np.zeros(max(valid, seg), dtype=int)
    for off in offsets:
        covered[off:off + seg] += 1
    assert (covered[:valid] >= 1).all()          # nothing valid is left out
    assert (covered[:valid] <= 2).all()          # only the end-aligned last segment overlaps
    if valid >= seg:
        assert offsets[-1] + seg == valid         # no segment reaches into the padding


def test_random_segments_are_reproducible_and_inside_the_clip():
    valid = np.full(20, 200)
    draws = [int(o) for e in range(5) for o in random_offsets(valid, 43, seed=1, epoch=e)]
    assert draws == [int(o) for e in range(5) for o in random_offsets(valid, 43, seed=1, epoch=e)]
    assert min(draws) >= 0 and max(draws) <= 200 - 43 and len(set(draws)) > 20
    assert random_offsets(np.array([20, 200]), 43, seed=1, epoch=0)[0] == 0  # shorter than a segment


def test_dataset_serves_standardised_segments_of_the_shards(tmp_path):
    write_synthetic_spectrograms(tmp_path, tracks_per_genre=3, n_mels=16, seconds=2.0,
                                 tracks_per_shard=5)
    spec = open_spectrograms(tmp_path)
    assert len(list(spec.root.glob("part-*.npy"))) == 5 and spec.classes == sorted(GENRES)
    seg = segment_frames(0.5, spec.params)
    assert seg == round(0.5 * 22050 / 512)
    tracks = spec.tracks("validation")
    mean, std = normalisation(spec, spec.tracks("training"))
    ds = SegmentDataset(spec.root, tracks, spec.classes, seg, train=False, mean=mean, std=std)
    per_clip = [len(eval_offsets(v, seg)) for v in tracks["frames"]]
    assert len(ds) == sum(per_clip)
    assert np.array_equal(ds.track_ids, np.repeat(tracks["track_id"].to_numpy(), per_clip))
    x, label, tid = ds[len(ds) - 1]               # the last segment of the last clip
    row = tracks.iloc[-1]
    stored = np.load(spec.root / row["shard"], mmap_mode="r")[row["row"]]
    expected = (stored[:, row["frames"] - seg:row["frames"]].astype(np.float32) - mean) / std
    assert x.shape == (1, 16, seg) and x.dtype == torch.float32
    np.testing.assert_array_equal(x[0].numpy(), expected)
    assert spec.classes[int(label)] == row["genre_top"] and int(tid) == row["track_id"]
    # the clip-at-once path used by predict cuts the same segments
    batch = standardise_clip(stored, int(row["frames"]), seg, mean, std)
    np.testing.assert_array_equal(batch[-1, 0], expected)
    # memory maps are opened lazily per process and never pickled
    assert ds.reader._maps
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.reader._maps == {}
    np.testing.assert_array_equal(clone[len(ds) - 1][0].numpy(), x.numpy())


def test_reading_every_segment_of_the_shards_does_not_grow_the_process(tmp_path, monkeypatch):
    """A DDP rank reads segments of every clip of the index each epoch. Mapped shards kept each
    page read resident in the process (its RSS, what a Dask nanny measures against the worker's
    memory limit: at 25,000 tracks, 3.8 GB of shards got both workers restarted mid-epoch).
    Reading 160 MB of shards must leave the process about as large as it was."""
    from numpy.lib.format import open_memmap

    shape = (100, 128, 1292)                                   # 100 clips of 30 s: 33 MB a shard
    for k in range(5):
        arr = open_memmap(tmp_path / f"part-{k:05d}.npy", "w+", np.float16, shape)
        arr[:] = np.arange(shape[2], dtype=np.float16)
        arr.flush()
        del arr
    monkeypatch.setattr("fmadask.dl.dataset.MAX_OPEN_SHARDS", 2)     # nor its open files
    reader = ShardReader(tmp_path)
    process = psutil.Process()
    before, files = process.memory_info().rss, process.num_fds()
    for k in range(5):
        for row in range(shape[0]):
            for offset in (0, 600, 1200):
                segment = reader.read(f"part-{k:05d}.npy", row, offset, 129)
    assert segment.shape == (128, 129) and segment.dtype == np.float16
    np.testing.assert_array_equal(segment[5], np.r_[np.arange(1200, 1292), np.zeros(37)])
    assert process.memory_info().rss - before < 40 * 2**20
    assert process.num_fds() - files <= 2
    del reader
    assert process.num_fds() == files


def test_training_crops_draw_several_segments_of_each_clip_per_epoch(tmp_path):
    write_synthetic_spectrograms(tmp_path, tracks_per_genre=3, n_mels=16, seconds=4.0,
                                 tracks_per_shard=5)
    spec = open_spectrograms(tmp_path)
    seg = segment_frames(0.5, spec.params)
    tracks = spec.tracks("training")
    one = SegmentDataset(spec.root, tracks, spec.classes, seg, train=True, seed=3)
    three = SegmentDataset(spec.root, tracks, spec.classes, seg, train=True, seed=3, crops=3)
    n = len(tracks)
    assert len(one) == n and len(three) == 3 * n
    assert np.array_equal(three.track_ids, np.tile(tracks["track_id"].to_numpy(), 3))
    # the first crop of each clip is the one-crop dataset's segment; the others differ
    for item in range(n):
        np.testing.assert_array_equal(three[item][0].numpy(), one[item][0].numpy())
    assert len({int(three._offset[i + k * n]) for i in range(n) for k in range(3)}) > n
    for ds in (one, three):
        ds.set_epoch(1)
    for item in range(n):
        np.testing.assert_array_equal(three[item][0].numpy(), one[item][0].numpy())


def test_dataset_refuses_a_run_without_spectrograms(tmp_path):
    with pytest.raises(DataError, match="featurize"):
        open_spectrograms(tmp_path)


def test_vote_and_mean_probability_can_disagree():
    # track 7: two weak votes for class 0, one confident segment for class 1
    probs = np.array([[0.4, 0.35, 0.25], [0.4, 0.35, 0.25], [0.0, 1.0, 0.0],
                      [0.1, 0.1, 0.8]])
    tracks = track_predictions(np.array([7, 7, 7, 9]), probs)
    assert list(tracks.index) == [7, 9]
    assert tracks.loc[7, "vote"] == 0 and tracks.loc[7, "mean"] == 1
    assert tracks.loc[9, "vote"] == 2 and tracks.loc[9, "n_segments"] == 1
    # a tie of votes goes to the class with more probability mass
    tie = track_predictions(np.array([1, 1]), np.array([[0.6, 0.4, 0.0], [0.1, 0.9, 0.0]]))
    assert tie.loc[1, "vote"] == 1
    scores, _ = score_segments(np.array([7, 7, 7, 9]), np.array([1, 1, 1, 2]), probs)
    assert scores["segment_acc"] == 0.5
    assert scores["track_acc_vote"] == 0.5 and scores["track_acc_mean"] == 1.0


@pytest.mark.parametrize("arch", ARCHS)
def test_nets_map_segments_to_class_logits(arch):
    net = build_net(arch, n_classes=8, n_mels=128, frames=129, width=4)
    out = net(torch.randn(3, 1, 128, 129))
    assert out.shape == (3, 8)
    out.sum().backward()                          # every parameter takes part
    assert all(p.grad is not None for p in net.parameters())
    # tiny segments work too (pooling and strides round up)
    assert build_net(arch, 8, 16, 5, width=4)(torch.randn(2, 1, 16, 5)).shape == (2, 8)


def test_unknown_arch_is_a_config_error():
    with pytest.raises(ConfigError, match="naive"):
        build_net("resnet9000", 8, 128, 129)


def test_saved_model_predicts_what_it_predicted(tmp_path):
    params = {"sr": 22050, "n_fft": 2048, "hop_length": 512, "n_mels": 32, "seconds": 30.0,
              "top_db": 80.0, "frames": 1292, "decode_sr": "native"}
    net = build_net("naive_bn", 8, 32, 43, width=4).eval()
    save_model(tmp_path, net, arch="naive_bn", width=4, classes=list(GENRES), params=params,
               segment_seconds=1.0, seg=43, norm=(-40.0, 10.0))
    loaded, meta = load_model(tmp_path)
    x = torch.randn(5, 1, 32, 43)
    assert torch.equal(net(x), loaded(x))
    assert meta["kind"] == "cnn" and meta["classes"] == list(GENRES)
    assert meta["decode_sr"] == "native" and "frames" not in meta["mel_params"]


def test_a_rank_failure_keeps_its_fields_and_message_across_processes():
    cause = DataError("no validation clips in /run/spectrograms")
    failure = RankFailure(1, "node-7", "DataError", str(cause), 1.5e9, False, cause)
    clone = pickle.loads(pickle.dumps(failure))
    assert (clone.rank, clone.host, clone.exc_type, clone.message, clone.when, clone.peer) == \
        (1, "node-7", "DataError", "no validation clips in /run/spectrograms", 1.5e9, False)
    assert isinstance(clone.user_error, DataError) and str(clone.user_error) == str(cause)
    assert str(clone) == str(failure) == ("rank 1 on node-7: DataError: no validation clips in "
                                          "/run/spectrograms")
    assert pickle.loads(pickle.dumps(RankFailure(0, "h", "E", "m", 0.0, True))).user_error is None


def test_a_checkpoint_older_than_an_option_resumes_only_as_it_was_made():
    config = TrainConfig(arch="naive", crops=1)
    older = dataclasses.asdict(config)
    del older["crops"], older["ema"]                   # options added after it was written
    check_resume({"config": older, "world_size": 2}, config, 2, Path("last.pt"))
    # it was trained with one crop per clip, whatever the option's default is now
    with pytest.raises(ConfigError, match="made with crops=1, not 3"):
        check_resume({"config": older, "world_size": 2}, dataclasses.replace(config, crops=3), 2,
                     Path("last.pt"))
    with pytest.raises(ConfigError, match="made with ema=0.0, not 0.99"):
        check_resume({"config": older, "world_size": 2}, dataclasses.replace(config, ema=0.99), 2,
                     Path("last.pt"))


def test_rank_placement_rendezvous_at_rank_0_and_counts_local_ranks_per_host():
    specs = rank_specs(["tcp://10.0.0.2:4000", "tcp://10.0.0.1:4001", "tcp://10.0.0.2:4002"], 5555)
    assert [s.rank for s in specs] == [0, 1, 2] and {s.world_size for s in specs} == {3}
    assert {(s.master_addr, s.master_port) for s in specs} == {("10.0.0.2", 5555)}
    assert [s.local_rank for s in specs] == [0, 0, 1]
    assert [s.local_world_size for s in specs] == [2, 1, 2]


# ------------------------------------------------------------------- on the Dask cluster


@pytest.fixture(scope="module")
def run_dir(sample_dir: Path, local_client, tmp_path_factory) -> Path:
    """The session's sample through the real featurize job (spectrograms only)."""
    out = tmp_path_factory.mktemp("cnn") / "run"
    run_featurize(sample_dir, out=out, client=local_client,
                  config=FeaturizeConfig(what=["spectrograms"]), progress=False)
    return out


@pytest.fixture(scope="module")
def trained(run_dir: Path, local_client) -> dict:
    """naive_bn trained for 12 epochs by 2 DDP ranks on the 2 worker processes."""
    return run_cnn(run_dir, TrainConfig(arch="naive_bn", epochs=12,
                                        out_dir=str(run_dir / "cnn-trained"), **SMALL),
                   local_client, ranks=2, progress=False, callbacks=[Probe()])


@pytest.mark.slow
def test_two_ranks_on_two_workers_learn_the_sample(trained, local_client):
    ranks = trained["ranks"]
    worker_pids = set(local_client.run(os.getpid).values())
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {2}
    assert {r["pid"] for r in ranks} == worker_pids          # one rank in each worker process
    children = local_client.run(lambda: len(psutil.Process().children(recursive=True)))
    assert set(children.values()) == {0}                     # no DataLoader process was left
    metrics = pd.read_csv(Path(trained["out_dir"]) / "metrics.csv")
    assert list(metrics["epoch"]) == list(range(1, 13))
    assert metrics["train_loss"].iloc[-3:].mean() < metrics["train_loss"].iloc[:3].mean()
    assert metrics["val_loss"].min() < metrics["val_loss"].iloc[0]
    chance = 1 / 8
    val = trained["scores"]["validation"]
    assert val["segment_acc"] > chance + 0.1 and val["track_acc_mean"] > chance + 0.1
    assert {"validation", "test"} <= set(trained["scores"])


@pytest.mark.slow
def test_ranks_see_different_data_but_hold_identical_weights(trained, run_dir):
    probe0, probe1 = (r["callbacks"]["probe"] for r in trained["ranks"])
    # different clips, hence different local gradients ...
    seen0, seen1 = set(probe0["tracks_epoch0"]), set(probe1["tracks_epoch0"])
    training = set(open_spectrograms(run_dir).tracks("training")["track_id"])
    assert seen0.isdisjoint(seen1) and seen0 | seen1 == training
    assert probe0["local_grad"] != probe1["local_grad"]
    # ... averaged by the all-reduce into one gradient and one optimiser step
    assert probe0["synced_grad"] == probe1["synced_grad"]
    assert probe0["params_before_step"] == probe1["params_before_step"]
    assert probe0["params_after_step"] == probe1["params_after_step"]
    assert probe0["params_after_step"] != probe0["params_before_step"]
    assert trained["ranks"][0]["params_digest"] == trained["ranks"][1]["params_digest"]
    assert probe0["epochs_ended"] == probe1["epochs_ended"] == trained["epochs"]


@pytest.mark.slow
def test_outputs_and_report(trained):
    out = Path(trained["out_dir"])
    for name in ("metrics.csv", "curves.png", "confusion_validation.png", "confusion_test.png",
                 "report.md", "model.pt", "model.json", "predictions.parquet",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (out / name).is_file(), name
    assert not [p for p in out.rglob(".*") if p.is_file()]       # no temporary files left
    preds = pd.read_parquet(out / "predictions.parquet")
    assert set(preds["split"]) == {"validation", "test"}
    val = preds[preds["split"] == "validation"]
    acc = (val["pred_mean"] == val["genre_top"]).mean()
    assert acc == pytest.approx(trained["scores"]["validation"]["track_acc_mean"])
    probs = preds.filter(like="p_").to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    report = (out / "report.md").read_text()
    assert "track acc (vote)" in report and "curves.png" in report


@pytest.mark.slow
def test_predict_scores_a_file_as_training_scored_its_spectrogram(trained, run_dir, sample_dir):
    out = Path(trained["out_dir"])
    paths = track_table(sample_dir)["path"]
    spec = open_spectrograms(run_dir)
    good = spec.tracks("validation").iloc[:2]
    bad = read_errors(run_dir)["track_id"].iloc[0]
    table = predict(out, [paths[t] for t in good["track_id"]] + [paths[bad]])  # via model.json kind
    net, meta = load_model(out)
    classes = meta["classes"]
    for i, row in enumerate(good.itertuples()):
        stored = np.load(spec.root / row.shard, mmap_mode="r")[row.row]
        batch = standardise_clip(stored, row.frames, meta["segment_frames"],
                                 meta["norm"]["mean"], meta["norm"]["std"])
        with torch.no_grad():
            expected = torch.softmax(net(torch.from_numpy(batch)), 1).numpy().mean(axis=0)
        np.testing.assert_allclose(table.loc[i, classes].to_numpy(float), expected, atol=1e-6)
        assert table.loc[i, "genre"] == classes[int(expected.argmax())]
        assert table.loc[i, "n_segments"] == len(batch)
    assert isinstance(table.loc[2, "error"], str)
    assert np.isnan(table.loc[2, classes].astype(float)).all()
    assert table.attrs["classes"] == classes


def _reference(run_dir: Path, name: str, **changes) -> TrainConfig:
    """The reference training into ``run_dir/name`` (2 ranks, a Probe on each)."""
    return TrainConfig(arch="naive_bn", epochs=3, out_dir=str(run_dir / name),
                       **{**SMALL, **changes})


@pytest.fixture(scope="module")
def uninterrupted(run_dir: Path, local_client) -> dict:
    return run_cnn(run_dir, _reference(run_dir, "ref"), local_client, ranks=2, progress=False,
                   callbacks=[Probe()])


@pytest.fixture(scope="module")
def failed(run_dir: Path, local_client, uninterrupted) -> dict:
    """The same run, with rank 1 raising in the first step of epoch 1 (epoch 0 is saved)."""
    steps_per_epoch = uninterrupted["ranks"][0]["callbacks"]["probe"]["steps_per_epoch"]
    pids_before = set(local_client.run(os.getpid).values())
    config = _reference(run_dir, "crash")
    with pytest.raises(TrainingError) as info:
        run_cnn(run_dir, config, local_client, ranks=2, progress=False,
                callbacks=[FailAt(1, steps_per_epoch), Probe()])
    return {"error": info.value, "pids_before": pids_before, "out_dir": Path(config.out_dir)}


@pytest.mark.slow
def test_a_failing_rank_ends_the_job_with_one_clear_error_and_no_hung_process(failed, local_client):
    message = str(failed["error"])
    assert "\n" not in message
    assert "rank 1 of 2" in message and "injected failure" in message and "--resume" in message
    # the ranks' processes are gone (rank 0 was blocked in an all-reduce), fresh workers serve
    assert not any(psutil.pid_exists(p) for p in failed["pids_before"])
    local_client.wait_for_workers(2, timeout=120)
    state = local_client.run(lambda: (len(psutil.Process().children(recursive=True)),
                                      __import__("torch.distributed").distributed.is_initialized()))
    assert len(state) == 2 and all(s == (0, False) for s in state.values())
    assert local_client.submit(sum, [1, 2], pure=False).result() == 3


@pytest.mark.slow
def test_resume_continues_at_the_next_epoch_as_if_never_interrupted(failed, uninterrupted,
                                                                   run_dir, local_client):
    out = failed["out_dir"]
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=False)["epochs_done"] == 1
    resumed = run_cnn(run_dir, _reference(run_dir, "crash"), local_client, ranks=2,
                      progress=False, resume=True, callbacks=[Probe()])
    assert resumed["ranks"][0]["epochs"] == [2, 3]                # only the missing epochs ran
    # same data order, same optimiser/scheduler state and RNG: bit-identical to no interruption
    assert resumed["ranks"][0]["params_digest"] == uninterrupted["ranks"][0]["params_digest"]
    mine = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    ref = torch.load(Path(uninterrupted["out_dir"]) / "checkpoints" / "last.pt",
                     weights_only=False)
    assert mine["scheduler"] == ref["scheduler"]
    for a, b in zip(mine["optimizer"]["state"].values(), ref["optimizer"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "metrics.csv").drop(columns=["train_seconds", "segments_per_s"]),
        pd.read_csv(Path(uninterrupted["out_dir"]) / "metrics.csv")
        .drop(columns=["train_seconds", "segments_per_s"]))


@pytest.mark.slow
def test_resume_with_other_settings_is_refused(failed, run_dir, local_client):
    with pytest.raises(ConfigError, match="lr=0.003"):
        run_cnn(run_dir, _reference(run_dir, "crash", lr=1e-2), local_client, ranks=2,
                progress=False, resume=True, callbacks=[Probe()])


@pytest.mark.slow
def test_the_moving_average_is_what_is_scored_saved_and_resumed(run_dir, local_client):
    local_client.wait_for_workers(2, timeout=120)      # after the tests that end ranks
    config = TrainConfig(arch="naive_bn", epochs=2, ema=0.9, **SMALL)
    # (no Probe: its extra forward pass would move the batch-norm statistics)
    ref = run_cnn(run_dir, dataclasses.replace(config, out_dir=str(run_dir / "ema")),
                  local_client, ranks=2, progress=False)
    out = Path(ref["out_dir"])
    clips = len(open_spectrograms(run_dir).tracks("training"))
    steps = -(-(-(-clips // 2)) // SMALL["batch_size"])         # per rank, padded
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert int(last["ema"]["n_averaged"]) == 2 * steps             # updated after every step
    trained = last["model"]
    average = {k.removeprefix("module."): v for k, v in last["ema"].items()
               if k.startswith("module.")}
    assert average.keys() == trained.keys()
    assert not all(torch.equal(average[k], trained[k]) for k in trained)
    # the net kept as best, saved and scored is the average, not the trained weights
    best = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    saved = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], best["model"][k]) for k in saved)
    if best["epoch"] == 2:
        assert all(torch.equal(saved[k], average[k]) for k in saved)
    # stopped in epoch 2 and resumed: the average carries on as if never interrupted (stopped
    # on every rank at once, so no worker is restarted on the way)
    crash = str(run_dir / "ema-crash")
    crashed = dataclasses.replace(config, out_dir=crash)
    with pytest.raises(DataError, match=f"stopped at step {steps}"):
        run_cnn(run_dir, crashed, local_client, ranks=2, progress=False,
                callbacks=[StopAt(steps)])
    resumed = run_cnn(run_dir, crashed, local_client, ranks=2, progress=False, resume=True)
    assert resumed["ranks"][0]["epochs"] == [2]
    again = torch.load(Path(crash) / "model.pt", weights_only=True)
    assert all(torch.equal(again[k], saved[k]) for k in saved)
    resumed_last = torch.load(Path(crash) / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(resumed_last["ema"][k], last["ema"][k]) for k in last["ema"])
    assert resumed["scores"] == ref["scores"]


@pytest.mark.slow
def test_cnn_command(run_dir, local_client, capsys):
    address = local_client.scheduler.address
    out = run_dir / "cli"
    status = main(["cnn", str(run_dir), "--arch", "naive", "--epochs", "1", "--ranks", "2",
                   "--segment-seconds", "1", "--batch-size", "4", "--width", "4",
                   "--out", str(out), "--scheduler", address])
    assert status == 0
    assert "CNN trained" in capsys.readouterr().out and (out / "model.json").is_file()
    assert main(["cnn", str(run_dir / "nothing-here"), "--scheduler", address]) == 2
    assert "fmadask: " in capsys.readouterr().err


@pytest.mark.slow
def test_a_data_error_on_the_ranks_is_raised_as_itself_and_spares_the_workers(tmp_path,
                                                                             local_client):
    write_synthetic_spectrograms(tmp_path, tracks_per_genre=2, n_mels=16, seconds=2.0,
                                 splits=(1.0, 0.0, 0.0))           # no validation clips
    local_client.wait_for_workers(2, timeout=120)
    pids = set(local_client.run(os.getpid).values())
    with pytest.raises(DataError, match="no validation clips"):
        run_cnn(tmp_path, TrainConfig(arch="naive", epochs=1, segment_seconds=0.5),
                local_client, ranks=2, progress=False)
    assert set(local_client.run(os.getpid).values()) == pids


def test_max_steps_bounds_the_optimisation_steps_of_a_run(tmp_path, local_client):
    """``max_steps`` stops training after that many steps in all, the last epoch cut short
    (then validated and checkpointed as any); the learning-rate schedule spans those steps, and
    the option is recorded with the model."""
    write_synthetic_spectrograms(tmp_path, tracks_per_genre=6, n_mels=16, seconds=2.0)
    local_client.wait_for_workers(2, timeout=120)
    result = run_cnn(tmp_path, TrainConfig(arch="naive", epochs=50, max_steps=6, **SMALL),
                     local_client, ranks=2, progress=False, callbacks=[Probe()])
    probes = [r["callbacks"]["probe"] for r in result["ranks"]]
    assert probes[0]["steps_per_epoch"] == 4                    # so the second epoch is cut
    assert [p["steps"] for p in probes] == [6, 6]
    assert [p["epochs_ended"] for p in probes] == [[1, 2], [1, 2]]
    out = Path(result["out_dir"])
    assert list(pd.read_csv(out / "metrics.csv")["epoch"]) == [1, 2]
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert last["scheduler"]["total_steps"] == 6 and last["config"]["max_steps"] == 6
    from fmadask.options import CnnSection
    from fmadask.stages import result_options

    assert result_options(CnnSection(max_steps=6))["max_steps"] == 6   # decides results


def test_a_second_cnn_into_the_same_out_folder_is_refused(tmp_path, local_client):
    """Two runs' cnn with one --out: the second would remove the first's results and write
    over them. The output folder has its own lock, whatever run folder it serves."""
    from fmadask.lock import LOCK_NAME, LockedError
    from lock_holder import held_lock

    run = tmp_path / "run"
    write_synthetic_spectrograms(run, tracks_per_genre=2, n_mels=16, seconds=2.0)
    out = tmp_path / "shared-out"
    with held_lock(out, "fmadask cnn") as holder:
        with pytest.raises(LockedError, match=f"fmadask cnn \\(pid {holder.pid} "):
            run_cnn(run, TrainConfig(arch="naive", epochs=1, out_dir=str(out),
                                     segment_seconds=0.5), local_client, ranks=1, progress=False)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]     # nothing written


def test_prefetch_yields_every_batch_in_order_and_raises_the_loaders_error():
    assert list(prefetch(range(100), depth=3)) == list(range(100))

    def failing():
        yield 1
        raise DataError("shard gone")

    got = []
    with pytest.raises(DataError, match="shard gone"):
        for item in prefetch(failing()):
            got.append(item)
    assert got == [1]


def test_prefetch_stops_its_thread_when_the_consumer_stops_early():
    import threading

    batches = prefetch(iter(range(10**6)), depth=2)
    assert next(batches) == 0
    batches.close()                     # the consumer stopped (an error in a training step)
    assert not [t for t in threading.enumerate() if t.name == "fmadask-prefetch"]


def test_identical_trainings_write_identical_model_files(run_dir: Path, local_client) -> None:
    """Reproducible bytes: the same data, seed and ranks give the same model.pt and model.json
    (torch.save named the zip's inner folder after the temporary file)."""
    outs = [run_dir / f"same-{name}" for name in ("a", "b")]
    for out in outs:
        run_cnn(run_dir, TrainConfig(arch="naive", epochs=1, out_dir=str(out), **SMALL),
                local_client, ranks=2, progress=False)
    for name in ("model.pt", "model.json"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    load_model(outs[1])    # the checksum its card records still holds


def test_an_output_folder_on_a_read_only_file_system_is_refused_before_any_work(tmp_path):
    """``cnn --out`` on a read-only mount: one line, exit 2, before a cluster starts (not a
    rank's failure after the workers, the data and the net were set up)."""
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare to mount a read-only tmpfs")
    run = tmp_path / "run"
    write_synthetic_spectrograms(run, tracks_per_genre=3, n_mels=16, seconds=2.0,
                                 tracks_per_shard=8)
    ro = tmp_path / "ro"
    ro.mkdir()
    command = (f"mount -t tmpfs -o ro,size=1m tmpfs {ro} || exit 3; exec {sys.executable} -m "
               f"fmadask.cli cnn {run} --out {ro / 'cnn'} --epochs 1 --arch naive_bn --width 4 "
               "--segment-seconds 1 --crops 1 --batch-size 4 --workers 1")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(["unshare", "-m", "sh", "-c", command], env=env, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode == 3:
        pytest.skip("mounting a tmpfs is not permitted here")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("fmadask: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert str(ro / "cnn") in proc.stderr and "read-only" in proc.stderr, proc.stderr
    assert "rank" not in proc.stderr and "dashboard" not in proc.stderr.lower(), proc.stderr
