"""One definition per option (issue 9 item 6, issue 12 item 1): the command line and the job spec
share type, range, finiteness and default; every bad value is one line, exit status 2, naming
the setting as the user wrote it, before any work starts."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from fmadask.cli import build_parser, main
from fmadask.dl.config import TrainConfig
from fmadask.errors import ConfigError
from fmadask.jobspec import SECTIONS
from fmadask.options import OPTIONS

ROOT = Path(__file__).resolve().parents[1]


def _one_line(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    try:
        status = main(argv)
    except SystemExit as exc:         # argparse's own errors (an unknown flag) exit directly
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("fmadask: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("argv, words", [
    (["featurize", "D", "--out", "R", "--workers", "-1"], "--workers must be at least 1"),
    (["featurize", "D", "--out", "R", "--workers", "0"], "--workers must be at least 1"),
    (["featurize", "D", "--out", "R", "--max-seconds", "inf"], "--max-seconds must be a finite"),
    (["featurize", "D", "--out", "R", "--max-seconds", "nan"], "--max-seconds must be a finite"),
    (["featurize", "D", "--out", "R", "--what", "features,mfcc"], "unknown --what 'mfcc'"),
    (["cnn", "R", "--width", "0"], "--width must be at least 1"),
    (["cnn", "R", "--lr", "nan"], "--lr must be a finite number"),
    (["predict", "M", "a.mp3", "--top", "0"], "--top must be at least 1"),
    (["predict", "M", "a.mp3", "--top", "-2"], "--top must be at least 1"),
    (["sample", "S", "--seconds", "1e7"], "--seconds must be at most 600"),
    (["sample", "S", "--seconds", "nan"], "--seconds must be a finite number"),
    (["train", "R", "--search", "grid"], "unknown --search 'grid'"),
    (["train", "R", "--n-iter", "x"], "--n-iter must be an integer, not 'x'"),
    (["featurize", "D", "--out", "R", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_options_are_one_line_naming_the_flag(argv: list[str], words: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert words in _one_line(capsys, argv)
    assert list(tmp_path.iterdir()) == []               # refused before any work


@pytest.mark.parametrize("override, words", [
    ("featurize.max_seconds=inf", "featurize.max_seconds must be a finite number"),
    ("featurize.max_seconds=nan", "featurize.max_seconds must be a finite number"),
    ("cluster.workers=0", "cluster.workers must be at least 1"),
    ("cnn.width=0", "cnn.width must be at least 1"),
    ("cnn.lr=0", "cnn.lr must be at least"),
    ("data.sample_seconds=1e7", "data.sample_seconds must be at most 600"),
])
def test_bad_spec_values_pass_no_check(override: str, words: str, sample_dir: Path,
                                       tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    err = _one_line(capsys, ["run", "--check", str(ROOT / "jobs" / "demo.toml"),
                             "--set", f"data.dir={sample_dir}",
                             "--set", f"output.dir={tmp_path / 'run'}", "--set", override])
    assert words in err


def test_a_spec_that_is_not_utf8_is_one_line(tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    spec = tmp_path / "latin1.toml"
    spec.write_bytes('[job]\nname = "caf\xe9"\n'.encode("latin-1"))
    assert "not UTF-8" in _one_line(capsys, ["run", "--check", str(spec)])


def _cli_defaults() -> dict[str, object]:
    """Every option key the command line offers, with the default each subcommand gives it."""
    parser = build_parser()
    found: dict[str, list] = {}
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, p in sub.choices.items():
        for dest, (key, _) in (p.get_default("_options") or {}).items():
            value = p.get_default(dest)
            if isinstance(value, str):
                value = OPTIONS[key].parse(value)
            found.setdefault(key, []).append((command, dest, value))
    return found


def test_cli_and_spec_defaults_agree_for_every_option() -> None:
    spec_defaults = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            value = f.default_factory() if f.default_factory is not dataclasses.MISSING \
                else f.default
            spec_defaults[f"{section}.{f.name}"] = value
    cli = _cli_defaults()
    shared = sorted(set(cli) & set(spec_defaults))
    assert len(shared) >= 15
    # --workers leaves the choice to the cluster code (a local cluster of cluster.workers), and
    # the inverted --no-unsupervised flag stores False when given: both documented exceptions.
    for key in shared:
        for command, dest, value in cli[key]:
            if key == "cluster.workers":
                assert value is None
                continue
            assert value == spec_defaults[key], (key, command, value, spec_defaults[key])
    assert spec_defaults["classical.search"] == "none"   # the drift that was: none on both now


def test_cnn_training_defaults_come_from_the_options() -> None:
    config = TrainConfig()
    for name in ("epochs", "segment_seconds", "batch_size", "lr", "weight_decay", "optimizer",
                 "lr_schedule", "patience", "width", "seed", "device"):
        assert getattr(config, name) == OPTIONS[f"cnn.{name}"].default, name


def test_every_float_option_refuses_infinity_and_nan() -> None:
    for opt in OPTIONS.values():
        if opt.type is float:
            for bad in (float("inf"), float("-inf"), float("nan")):
                with pytest.raises(ConfigError, match="finite"):
                    opt.check(bad)


def test_an_output_that_is_a_file_is_refused_before_training(tmp_path: Path) -> None:
    from test_classical import synthetic_dataset
    from fmadask.errors import DataError
    from fmadask.ml.train import train

    out = tmp_path / "classical"
    out.write_text("not a folder")
    with pytest.raises(DataError, match="is a file, not a folder"):
        train(synthetic_dataset(per_genre=4), out, progress=False)      # no cluster is started
