"""Job specs (fmadask.jobspec), the stage runner (fmadask.run) and ``fmadask run``.

The end-to-end tests run the README's main job, ``jobs/demo.toml`` (shrunk with ``--set``), three
times through the real CLI: on the default local cluster, and against a ``dask scheduler`` and two
``dask worker`` processes started by the test, over TCP and over TLS with certificates made here.
The three run directories must hold the same features, spectrograms, errors, classical results
and CNN metrics.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from external_cluster import TLSFiles, external_cluster, make_tls_files
from fmadask.cli import main
from fmadask.errors import ConfigError, DataError
from fmadask.jobspec import exists, load_job, parse_value
from fmadask.run import marker_path, plan, stage_params

ROOT = Path(__file__).resolve().parents[1]
JOBS = sorted((ROOT / "jobs").glob("*.toml"))
FMADASK = str(Path(sys.executable).with_name("fmadask"))

# The demo, shrunk: 5 clips of 4 s per genre (plus FMA's defects), two models, one epoch of a
# narrow CNN on 1 s segments. No random search here: dask-ml's RandomizedSearchCV against
# separately started `dask worker` processes hung once (a fit task left 'processing' on the
# scheduler while both workers sat idle) and once failed with FutureCancelledError in three full
# runs; the search's distribution over workers is tested on the local cluster (test_classical).
SHRINK = [
    "data.sample_tracks_per_genre=5", "data.sample_seconds=4", "featurize.partition_size=8",
    'classical.models=["logistic_regression", "xgboost"]', "classical.search=none",
    "classical.unsupervised=false", 'cnn.archs=["naive"]', "cnn.epochs=1", "cnn.width=4",
    "cnn.batch_size=8", "cnn.segment_seconds=1.0", "cnn.crops=1",
]


def _run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``fmadask ARGS`` as a user runs it, in the repository root (jobs/ paths are relative)."""
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    return subprocess.run([FMADASK, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def _sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def _error_line(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run the CLI in-process, expect exit status 2 and return its one error line."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fmadask: ") and "\n" not in err, err
    return err


@pytest.fixture(scope="module")
def fma_dir(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    """An FMA data folder with the sample's metadata and (empty) audio folders of every subset."""
    folder = tmp_path_factory.mktemp("fma-all-subsets")
    (folder / "fma_metadata").symlink_to(sample_dir / "fma_metadata")
    for subset in ("small", "medium", "large", "full"):
        (folder / f"fma_{subset}").mkdir()
    return folder


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.name)
def test_every_job_spec_validates(job: Path, fma_dir: Path,
                                  capsys: pytest.CaptureFixture) -> None:
    argv = ["run", "--check", str(job), "--set", f"data.dir={fma_dir}",
            "--set", f"output.dir={fma_dir / 'runs' / job.stem}"]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.rstrip().endswith(f"{job}: valid")
    assert "# featurize: to run" in out


def test_job_specs_cover_the_study_and_the_subsets() -> None:
    names = {p.stem for p in JOBS}
    assert {"demo", "paper-fma-small", "fma-medium", "fma-large"} <= names
    paper = load_job(ROOT / "jobs" / "paper-fma-small.toml", check_paths=False)
    assert (paper.data.subset, paper.data.split, paper.featurize.sr) == ("small", "stratified", 22050)
    assert paper.classical.models == ["all"] and paper.classical.search == "random"
    assert paper.classical.cv == 5 and paper.classical.scaler == "minmax"
    assert paper.cnn.archs == ["naive", "naive_bn"] and paper.cnn.optimizer == "adam"
    # the study trained without augmentation; new work (the demo) gets the recipe
    c = paper.cnn
    assert (c.gain_db, c.masks, c.mixup, c.label_smoothing, c.crops) == (0, 0, 0, 0, 1)
    demo = load_job(ROOT / "jobs" / "demo.toml", check_paths=False).cnn
    assert demo.gain_db > 0 and demo.label_smoothing > 0 and demo.enabled
    assert demo.archs == ["vgg_gap"] and demo.crops > 1
    for name, subset in (("fma-medium", "medium"), ("fma-large", "large")):
        spec = load_job(ROOT / "jobs" / f"{name}.toml", check_paths=False)
        assert spec.data.subset == subset and spec.classical.distributed_xgb


@pytest.mark.parametrize("override, words", [
    ("cnn.epoch=3", ["unknown key 'epoch' in [cnn]", "did you mean 'epochs'"]),
    ("model.x=1", ["unknown section [model]"]),
    ("cnn.epochs=three", ["cnn.epochs must be an integer", "'three'"]),
    ("cnn.epochs=true", ["cnn.epochs must be an integer"]),
    ("cnn.epochs=0", ["cnn.epochs must be at least 1"]),
    ("featurize.sr=44.1", ["featurize.sr must be 'native' or a rate in Hz"]),
    ("featurize.sr=fast", ["featurize.sr must be 'native' or a rate"]),
    ("data.split=random", ["unknown data.split 'random': choose one of official, stratified"]),
    ("cluster.kind=yarn", ["unknown cluster.kind 'yarn': choose one of"]),
    ("classical.models=xgboost", ["classical.models must be a list"]),
    ('classical.models=["xgb"]', ["[classical] models", "unknown model(s) xgb"]),
    ('cnn.archs=["resnet"]', ["[cnn] archs: unknown resnet"]),
    ('featurize.what=["spectrograms"]', ["[classical] needs the features"]),
    ("cluster.tls_ca_file=ca.pem", ["TLS needs all three"]),
    ("epochs=3", ["section.key=value"]),
    ("output.dir=https://host/run", ["[output] dir", "read-only"]),
])
def test_invalid_spec_is_one_line(override: str, words: list[str], sample_dir: Path,
                                  tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    err = _error_line(capsys, ["run", "--check", str(ROOT / "jobs" / "demo.toml"),
                               "--set", f"data.dir={sample_dir}",
                               "--set", f"output.dir={tmp_path / 'run'}", "--set", override])
    for word in words:
        assert word in err, err


def test_missing_data_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nowhere"
    err = _error_line(capsys, ["run", "--check", str(ROOT / "jobs" / "paper-fma-small.toml"),
                               "--set", f"data.dir={missing}"])
    assert f"data folder {missing} does not exist" in err and "fmadask fetch" in err
    (missing / "fma_metadata").mkdir(parents=True)
    err = _error_line(capsys, ["run", "--check", str(ROOT / "jobs" / "paper-fma-small.toml"),
                               "--set", f"data.dir={missing}"])
    assert "tracks.csv not found" in err


def test_spec_file_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert "not found" in _error_line(capsys, ["run", "--check", str(tmp_path / "no.toml")])
    bad = tmp_path / "bad.toml"
    bad.write_text("[data]\ndir = \n")
    assert "is not valid TOML" in _error_line(capsys, ["run", "--check", str(bad)])
    bad.write_text('[data]\ndir = "x"\n')
    assert "output.dir is required" in _error_line(capsys, ["run", "--check", str(bad)])


def test_set_values_are_toml_or_plain_strings() -> None:
    assert parse_value("22050") == 22050
    assert parse_value("true") is True
    assert parse_value('["naive", "naive_bn"]') == ["naive", "naive_bn"]
    assert parse_value("/data/fma") == "/data/fma"
    assert parse_value("s3://bucket/fma") == "s3://bucket/fma"
    assert parse_value('"quoted"') == "quoted"


def test_fsspec_urls(sample_dir: Path) -> None:
    import fsspec

    # file:// URLs are local paths: the whole job accepts them
    spec = load_job(ROOT / "jobs" / "demo.toml", [f"data.dir=file://{sample_dir}",
                                                  "output.dir=file:///tmp/fmadask-url-run"])
    assert stage_params(spec, "featurize")["data_dir"] == str(sample_dir.resolve())
    # other protocols are validated through fsspec ...
    fs = fsspec.filesystem("memory")
    fs.pipe("/fma-url-test/fma_metadata/tracks.csv", b"x")
    fs.mkdir("/fma-url-test/fma_small")
    assert exists("memory://fma-url-test/fma_metadata/tracks.csv")
    spec = load_job(ROOT / "jobs" / "paper-fma-small.toml", ["data.dir=memory://fma-url-test",
                                                             "output.dir=/tmp/fmadask-url-run"])
    with pytest.raises(DataError, match="fma_medium"):
        load_job(ROOT / "jobs" / "fma-medium.toml", ["data.dir=memory://fma-url-test"])
    # ... and the featurize stage's workers read the URL themselves (issue 10)
    running = [p.stage for p in plan(spec) if p.action == "run"]
    assert running[:3] == ["featurize", "classical", "cnn"]
    assert stage_params(spec, "featurize")["data_dir"] == "memory://fma-url-test"


# -------------------------------------------------------------------- stage completeness


def _mark_done(spec, stage: str) -> None:  # noqa: ANN001
    path = marker_path(Path(spec.output.dir), stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"stage": stage, "params": stage_params(spec, stage)}))


def test_plan_skips_done_stages_and_refuses_changed_ones(tmp_path: Path,
                                                         sample_dir: Path) -> None:
    base = [f"data.dir={sample_dir}", f"output.dir={tmp_path / 'run'}"]
    spec = load_job(ROOT / "jobs" / "demo.toml", base)
    assert [p.action for p in plan(spec)] == ["run", "run", "run", "run"]
    for stage in ("featurize", "classical"):
        _mark_done(spec, stage)
    assert [p.action for p in plan(spec)] == ["skip", "skip", "run", "run"]
    # a cnn-only change leaves the earlier stages done
    changed = load_job(ROOT / "jobs" / "demo.toml", base + ["cnn.epochs=5"])
    assert [p.action for p in plan(changed)] == ["skip", "skip", "run", "run"]
    # another sample rate: refused, naming the change ...
    resampled = load_job(ROOT / "jobs" / "demo.toml", base + ["featurize.sr=22050"])
    with pytest.raises(ConfigError, match=r"featurize outputs made with other parameters "
                                          r"\(sr: None -> 22050\)"):
        plan(resampled)
    # ... or redone with overwrite, and everything downstream with it
    redo = load_job(ROOT / "jobs" / "demo.toml", base + ["featurize.sr=22050",
                                                        "output.overwrite=true"])
    assert [p.action for p in plan(redo)] == ["redo", "redo", "run", "run"]
    off = load_job(ROOT / "jobs" / "demo.toml", base + ["cnn.enabled=false"])
    assert [p.action for p in plan(off)] == ["skip", "skip", "off", "off"]


def test_cluster_settings_do_not_change_stage_params(sample_dir: Path) -> None:
    base = [f"data.dir={sample_dir}", "output.dir=/tmp/x"]
    local = load_job(ROOT / "jobs" / "demo.toml", base)
    remote = load_job(ROOT / "jobs" / "demo.toml", base + [
        "cluster.kind=address", "cluster.address=tls://10.0.0.1:8786", "cluster.workers=64"])
    for stage in ("featurize", "classical", "cnn", "fusion"):
        assert stage_params(local, stage) == stage_params(remote, stage)


def test_unreachable_scheduler_from_the_cli(sample_dir: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = _error_line(capsys, ["run", str(ROOT / "jobs" / "demo.toml"),
                               "--scheduler", f"tcp://127.0.0.1:{port}",
                               "--set", f"data.dir={sample_dir}", "--set",
                               f"output.dir={tmp_path / 'run'}", "--set",
                               "cluster.connect_timeout=1"])
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in err


# ---------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the demo generates its (shrunk) sample; shared by the three runs."""
    return tmp_path_factory.mktemp("demo") / "sample"


@pytest.fixture(scope="module")
def local_run(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``fmadask run jobs/demo.toml`` on the default local cluster (generates the sample)."""
    out = tmp_path_factory.mktemp("local") / "run"
    done = _run_cli("run", "jobs/demo.toml",
                    *_sets(SHRINK + [f"data.dir={demo_data}", f"output.dir={out}"]))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "generating an FMA-shaped sample" in done.stdout
    return out


def _run_external(address: str, demo_data: Path, out: Path, *extra: str
                  ) -> subprocess.CompletedProcess:
    return _run_cli("run", "jobs/demo.toml", "--scheduler", address, *extra,
                    *_sets(SHRINK + [f"data.dir={demo_data}", f"output.dir={out}"]))


def _parquet(folder: Path) -> pd.DataFrame:
    parts = sorted(folder.glob("part-*.parquet"))
    assert parts, folder
    table = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return table.sort_values(list(table.columns[:2])).reset_index(drop=True)


def assert_same_results(a: Path, b: Path) -> None:
    """Two run directories of the same job hold the same results."""
    features = _parquet(a / "features")
    assert len(features) > 0
    pd.testing.assert_frame_equal(features, _parquet(b / "features"), check_exact=True)
    errors = ["track_id", "stage", "error_type"]
    pd.testing.assert_frame_equal(_parquet(a / "errors")[errors], _parquet(b / "errors")[errors])
    pd.testing.assert_frame_equal(_parquet(a / "spectrograms" / "index"),
                                  _parquet(b / "spectrograms" / "index"))
    for shard in sorted((a / "spectrograms").glob("part-*.npy")):
        assert np.array_equal(np.load(shard), np.load(b / "spectrograms" / shard.name))
    # classical: every score and chosen parameter (not the timings or which worker fitted it)
    where = ["fit_seconds", "worker"]
    results = [pd.read_csv(d / "classical" / "results.csv").drop(columns=where) for d in (a, b)]
    assert len(results[0]) == 2  # the two models (no search, see SHRINK)
    pd.testing.assert_frame_equal(*results)
    # the CNN: same seed, same ranks, same data order -> the same epoch metrics
    scores = ["train_loss", "train_acc", "val_loss", "val_acc", "val_track_acc_vote"]
    metrics = [pd.read_csv(d / "cnn" / "naive" / "metrics.csv")[scores] for d in (a, b)]
    pd.testing.assert_frame_equal(*metrics)
    # the fusion of the two: same weight, same scores
    pd.testing.assert_frame_equal(*[pd.read_csv(d / "fusion" / "results.csv") for d in (a, b)])


@pytest.mark.slow
def test_demo_local_run_and_rerun(local_run: Path, demo_data: Path) -> None:
    for stage in ("featurize", "classical", "cnn", "fusion"):
        assert marker_path(local_run, stage).is_file()
    assert (local_run / "classical" / "table.md").is_file()
    assert (local_run / "cnn" / "naive" / "report.md").is_file()
    fused = pd.read_csv(local_run / "fusion" / "results.csv")
    assert list(fused["source"]) == ["classical", "cnn", "fusion"]
    again = _run_cli("run", "jobs/demo.toml",
                     *_sets(SHRINK + [f"data.dir={demo_data}", f"output.dir={local_run}"]))
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("complete, skipped") == 4
    assert f"fusion results: {local_run / 'fusion' / 'report.md'}" in again.stdout
    assert "Dask dashboard" not in again.stderr  # nothing to do: no cluster started
    assert f"classical table: {local_run / 'classical' / 'table.md'}" in again.stdout


@pytest.fixture(scope="module")
def tcp_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with external_cluster(tmp_path_factory.mktemp("tcp-cluster")) as address:
        yield address


@pytest.mark.slow
def test_demo_on_external_scheduler_matches_local(tcp_cluster: str, local_run: Path,
                                                   demo_data: Path, tmp_path: Path) -> None:
    assert tcp_cluster.startswith("tcp://127.0.0.1:")
    done = _run_external(tcp_cluster, demo_data, tmp_path / "run")
    assert done.returncode == 0, done.stderr[-3000:]
    marker = json.loads(marker_path(tmp_path / "run", "featurize").read_text())
    assert marker["scheduler"] == tcp_cluster  # it did run there
    assert_same_results(local_run, tmp_path / "run")


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TLSFiles]]:
    folder = tmp_path_factory.mktemp("tls-cluster")
    tls = make_tls_files(folder / "certs")
    with external_cluster(folder, tls=tls) as address:
        yield address, tls


@pytest.mark.slow
def test_demo_over_tls_matches_local(tls_cluster: tuple[str, TLSFiles], local_run: Path,
                                     demo_data: Path, tmp_path: Path) -> None:
    address, tls = tls_cluster
    assert address.startswith("tls://127.0.0.1:")
    done = _run_external(address, demo_data, tmp_path / "run", *tls.cli_args())
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_results(local_run, tmp_path / "run")


@pytest.mark.slow
def test_tls_cluster_refuses_clients_without_its_certificate(
        tls_cluster: tuple[str, TLSFiles], demo_data: Path, tmp_path: Path) -> None:
    address, _ = tls_cluster
    other = make_tls_files(tmp_path / "other", name="other")
    for extra, words in (([], "needs TLS certificates"),
                         (other.cli_args(), "refused this client's TLS certificate")):
        done = _run_external(address, demo_data, tmp_path / "run", *extra)
        assert done.returncode == 2
        err = done.stderr.strip()
        assert err.startswith("fmadask: ") and "\n" not in err and words in err, err
        assert not (tmp_path / "run" / "features").exists()


@pytest.mark.slow
def test_external_workers_get_fmadask_worker_environment(tcp_cluster: str) -> None:
    from fmadask.cluster import get_client

    def env() -> tuple[str | None, str | None]:
        return os.environ.get("OMP_NUM_THREADS"), os.environ.get("MALLOC_TRIM_THRESHOLD_")

    with get_client(tcp_cluster, quiet=True) as client:
        remote = set(client.run(env).values())
    with get_client(workers=1, quiet=True) as client:
        local = set(client.run(env).values())
    assert remote == local == {("1", None)}
