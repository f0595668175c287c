"""One definition per option (issue 9 item 6, issue 12 item 1): the command line and the job spec
share type, range, finiteness and default; every bad value is one line, exit status 2, naming
the setting as the user wrote it, before any work starts."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from fmadask import flags, options
from fmadask.cli import build_parser, main
from fmadask.dl.config import TrainConfig, add_config_arguments
from fmadask.errors import ConfigError
from fmadask.jobspec import SECTIONS, load_job, spec_fields
from fmadask.options import OPTIONS, option_fields

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
    (["train", "R", "--seed", "-1"], "--seed must be at least 0, not -1"),
    (["train", "R", "--split-seed", "4294967296"], "--split-seed must be at most 4294967295"),
    (["cnn", "R", "--seed", "-3"], "--seed must be at least 0"),
    (["sample", "S", "--seed", "99999999999"], "--seed must be at most 4294967295"),
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
    ("cluster.memory=lots", "cluster.memory must be 'auto', a memory size such as '8GiB'"),
    ("cluster.memory=-4GiB", "cluster.memory must be"),
    ("cluster.memory=0", "cluster.memory must be"),
    ("classical.seed=-1", "classical.seed must be at least 0"),
    ("cnn.seed=4294967296", "cnn.seed must be at most 4294967295"),
    ("data.seed=-7", "data.seed must be at least 0"),
    ("data.sample_seed=4294967296", "data.sample_seed must be at most 4294967295"),
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


def _unset_on_the_command_line(command: str, key: str) -> bool:
    """The flags with no default (see below why)."""
    return key == "cluster.workers" or (command == "train" and key in ("data.split", "data.seed"))


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
    # --workers leaves the choice to the cluster code (a local cluster of cluster.workers),
    # train's --split/--split-seed leave a run's own split (decided at featurize) in place, and
    # the inverted --no-unsupervised flag stores False when given: documented exceptions.
    for key in shared:
        for command, dest, value in cli[key]:
            if _unset_on_the_command_line(command, key):
                assert value is None
                continue
            assert value == spec_defaults[key], (key, command, value, spec_defaults[key])
    assert spec_defaults["classical.search"] == "none"   # the drift that was: none on both now


def _field_default(f: dataclasses.Field) -> object:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _trainer_parser() -> argparse.ArgumentParser:
    """The options of ``python -m fmadask.dl.trainer`` (its parser: these, RUN_DIR and
    --num-workers)."""
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return parser


def _flags_by_key() -> dict[str, set[str]]:
    """Every option key the command lines offer (each subcommand, the trainer's), with flags."""
    found: dict[str, set[str]] = {}
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for p in [*sub.choices.values(), _trainer_parser()]:
        for key, flag in (p.get_default("_options") or {}).values():
            found.setdefault(key, set()).add(flag)
    return found


def test_every_option_has_one_default_on_the_cli_in_the_spec_and_in_the_stage_configs() -> None:
    from fmadask.ml.train import ClassicalConfig
    from fmadask.pipeline.featurize import FeaturizeConfig

    cli = _cli_defaults()
    cli.setdefault("cnn.device", [])
    cli["cnn.device"].append(("python -m fmadask.dl.trainer", "device",
                              _trainer_parser().get_default("device")))
    spec = {f"{section}.{f.name}": _field_default(f)
            for section, cls in SECTIONS.items() for f in spec_fields(cls)}
    configs = {cls.__name__: {f.metadata["option"].key: _field_default(f)
                              for f in option_fields(cls)}
               for cls in (TrainConfig, FeaturizeConfig, ClassicalConfig)}
    for key, opt in OPTIONS.items():
        if opt.spec:
            assert key in spec and spec[key] == opt.default, key
        for command, dest, value in cli.get(key, []):
            expected = None if _unset_on_the_command_line(command, key) else opt.default
            assert value == expected, (key, command, value, expected)
        for name, defaults in configs.items():
            if key in defaults:
                assert defaults[key] == opt.default, (key, name)
    # Each stage config holds every option of its stage, and the values a stage takes are those
    # of the job spec's section (the spec's words made the stage's None where it has one).
    assert set(configs["TrainConfig"]) >= {o.key for o in OPTIONS.values()
                                           if o.key.startswith("cnn.") and o.key not in
                                           ("cnn.enabled", "cnn.archs", "cnn.ranks",
                                            "cnn.resume")}
    assert FeaturizeConfig.of(SECTIONS["featurize"]()) == FeaturizeConfig()
    assert FeaturizeConfig().sr is None and FeaturizeConfig().max_seconds == 1200.0
    assert ClassicalConfig.of(SECTIONS["classical"]()) == ClassicalConfig()


def test_every_option_is_on_the_cli_and_in_the_spec_unless_marked_one_sided() -> None:
    flags = _flags_by_key()
    spec = {f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in spec_fields(cls)}
    for key, opt in OPTIONS.items():
        assert (key in flags) == opt.cli, (key, "on the command line" if opt.cli else "cli=False")
        if opt.cli:
            assert flags[key] == {opt.flag_name}, key        # one flag wherever it is offered
        assert (key in spec) == opt.spec, (key, "in the job spec" if opt.spec else "spec=False")
    # The keys the hand-listed [cnn] section had missed are spec keys now.
    assert {"cnn.weight_decay", "cnn.lr_schedule", "cnn.patience"} <= spec


def test_a_new_option_is_one_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """Declared once, a field is a spec key with its default, a flag, and validated in both."""
    @options.section("fusion", spec=False)
    class Fusion(SECTIONS["fusion"]):
        temperature: float = options.option(1.0, "softmax temperature", minimum=0.1,
                                            maximum=10.0, metavar="T")

    # Declared into the one table of options; taken out of it again when the test ends.
    monkeypatch.setitem(OPTIONS, "fusion.temperature", OPTIONS.pop("fusion.temperature"))

    monkeypatch.setitem(SECTIONS, "fusion", Fusion)
    demo = ROOT / "jobs" / "demo.toml"
    sets = ["data.dir=/d", "output.dir=/r"]
    assert load_job(demo, sets, check_paths=False).fusion.temperature == 1.0
    assert load_job(demo, [*sets, "fusion.temperature=2"], check_paths=False).fusion \
        .temperature == 2.0
    with pytest.raises(ConfigError, match="fusion.temperature must be at most 10"):
        load_job(demo, [*sets, "fusion.temperature=50"], check_paths=False)
    parser = argparse.ArgumentParser()
    flags.add_options(parser, Fusion)
    assert "softmax temperature (default 1)" in parser.format_help()
    args = flags.resolve_options(parser.parse_args(["--temperature", "3"]))
    assert flags.options_from_args(Fusion, args).temperature == 3.0
    with pytest.raises(ConfigError, match="--temperature must be at most 10"):
        flags.resolve_options(parser.parse_args(["--temperature", "50"]))
    with pytest.raises(ConfigError, match="temperature must be at least 0.1"):
        Fusion(temperature=0.0)


def test_settings_named_in_other_errors_read_right_from_the_cli_and_a_spec() -> None:
    assert options.setting("featurize.max_seconds") == "--max-seconds (featurize.max_seconds)"
    assert options.setting("data.seed") == "--split-seed (data.seed)"
    assert options.setting("cnn.resume") == "--resume"                 # command line only
    assert options.setting("fusion.cnn") == "fusion.cnn"               # job spec only


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


def test_every_seed_takes_the_range_numpy_and_xgboost_take() -> None:
    seeds = [key for key in OPTIONS if key.rsplit(".", 1)[-1].endswith("seed")]
    assert len(seeds) >= 4
    for key in seeds:
        assert options.check(key, 0) == 0 and options.check(key, 2**32 - 1) == 2**32 - 1
        for bad in (-1, 2**32):
            with pytest.raises(options.OptionError):
                options.check(key, bad)


@pytest.mark.parametrize("memory", ["auto", "8GiB", "4 GB", "512MiB", "1.5gb", "2000000000",
                                    2_000_000_000])
def test_a_memory_size_passes_the_check(memory: object, sample_dir: Path,
                                        tmp_path: Path) -> None:
    spec = load_job(ROOT / "jobs" / "demo.toml", check_paths=False,
                    overrides=[f"data.dir={sample_dir}", f"output.dir={tmp_path / 'run'}",
                               f"cluster.memory={memory!r}" if isinstance(memory, str)
                               else f"cluster.memory={memory}"])
    assert spec.cluster.memory == memory


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_a_spec_nested_too_deeply_is_one_line(depth: int, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    """tomllib recurses per level: RecursionError, not a TOML error, used to end in a traceback."""
    nested = "[" * depth + "]" * depth
    spec = tmp_path / "deep.toml"
    spec.write_text(f"[data]\ndir = {nested}\n")
    assert "nested too deeply" in _one_line(capsys, ["run", "--check", str(spec)])
    assert "nested too deeply" in _one_line(capsys, ["run", "--check", str(ROOT / "jobs" /
                                                     "demo.toml"), "--set", f"data.dir={nested}"])
