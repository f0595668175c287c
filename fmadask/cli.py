"""The ``fmadask`` command line.

Each subcommand is a small handler that parses its options and calls the library; heavy
imports (dask, librosa, torch) happen inside the handlers so ``fmadask --help`` is instant.
Errors the user can fix end in one line, ``fmadask: <what and how to fix it>``, exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from fmadask import __version__
from fmadask.errors import FmadaskError, os_error_line
from fmadask.logs import show_progress
from fmadask.flags import add_option, add_options, cli_name, options_from_args, resolve_options
from fmadask.options import (ClassicalOptions, ClusterOptions, DataOptions, FeaturizeOptions,
                             FusionOptions, OptionError, PredictOptions, SampleOptions)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``fmadask: ...``, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix("fmadask").strip()
        self.exit(2, f"fmadask: {command + ': ' if command else ''}{message} "
                     f"(see '{self.prog} --help')\n")


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--scheduler", metavar="ADDR",
                       help="address of an existing Dask scheduler (tcp://host:8786 or tls://...)")
    # No default here: a command left without --workers lets the cluster code choose.
    add_option(group, "cluster.workers", default=None)
    add_option(parser, "cluster.worker_timeout")


class _StorageOption(argparse.Action):
    """``--storage-option KEY=VALUE``, repeatable: items added to one dict of fsspec options."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from fmadask.storage import parse_storage_options

        try:
            new = parse_storage_options([str(values)])
        except FmadaskError as exc:
            parser.error(f"argument {option_string}: {exc}")
        merged = dict(getattr(namespace, self.dest) or {})
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        setattr(namespace, self.dest, merged)


def _require_drivers(*locations: str | None) -> None:
    """Refuse now, in one line, a URL whose protocol's fsspec driver is not installed."""
    from fmadask.storage import require_driver

    for location in locations:
        if location is not None:
            require_driver(location)


def _add_storage_options(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "data.storage_options", action=_StorageOption, dest="storage_options")


# ---------------------------------------------------------------------------------- sample


def _cmd_sample(args: argparse.Namespace) -> int:
    from fmadask.fma.sample import make_sample

    out = make_sample(args.out_dir, tracks_per_genre=args.tracks_per_genre,
                      seconds=args.seconds, seed=args.seed, overlap=args.overlap,
                      force=args.force, processes=args.processes)
    print(f"FMA-shaped sample written to {out} (fma_metadata/, fma_small/)")
    return 0


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="write an FMA-shaped sample (metadata + real mp3 files)",
                       description="Write an FMA-shaped sample: fma_metadata/tracks.csv and "
                                   "genres.csv in FMA's formats and fma_small/AAA/AAABBB.mp3 clips "
                                   "(44.1 kHz stereo) whose audio differs by genre, with FMA's "
                                   "defects (empty, too short and truncated clips).")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write into")
    add_options(p, DataOptions, "sample_tracks_per_genre", "sample_seconds", "sample_seed",
                "sample_overlap")
    add_options(p, SampleOptions)
    p.set_defaults(handler=_cmd_sample)


# ----------------------------------------------------------------------------------- fetch


def _cmd_fetch(args: argparse.Namespace) -> int:
    from fmadask.fma.download import fetch
    from fmadask.storage import redact

    _require_drivers(args.to)
    kwargs = {"mirror": args.mirror} if args.mirror else {}
    path = fetch(args.archive, args.to, storage_options=args.storage_options,
                 staging=args.staging, **kwargs)
    print(f"{args.archive}: ready in {redact(path)}")
    return 0


def _add_fetch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fetch", help="download and extract an FMA archive (resumable, verified)",
                       description="Download one of FMA's zip archives with resume, verify its "
                                   "published SHA-1 and extract it safely into DATA_DIR. A URL "
                                   "DATA_DIR (s3://bucket/fma) gets the extracted files "
                                   "uploaded, each object whole and a completion marker last; "
                                   "a rerun resumes an interrupted download or upload.")
    p.add_argument("archive", choices=["metadata", "small", "medium", "large", "full"])
    p.add_argument("--to", required=True, metavar="DATA_DIR",
                   help="folder to download into, or a URL (s3://bucket/fma) to upload to")
    p.add_argument("--mirror", metavar="URL", help="base URL serving the zips (default: FMA's)")
    p.add_argument("--staging", metavar="DIR",
                   help="with a URL --to: local folder where the archive is downloaded and "
                        "extracted before the upload (default: one in $TMPDIR)")
    _add_storage_options(p)
    p.set_defaults(handler=_cmd_fetch)


# ------------------------------------------------------------------------------------ info


def _cmd_info(args: argparse.Namespace) -> int:
    from fmadask.fma.info import dataset_info, format_info

    _require_drivers(args.data_dir)
    info = dataset_info(args.data_dir, args.subset, storage_options=args.storage_options)
    print(format_info(info, args.subset))
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="tracks per subset, split and genre; missing audio files",
                       description="Summarise an FMA data folder: tracks per subset, per split "
                                   "and top-level genre, and audio files missing on disk.")
    p.add_argument("data_dir", metavar="DATA_DIR",
                   help="folder or URL (s3://, https:// ...) holding fma_metadata/")
    add_options(p, DataOptions, "subset")
    _add_storage_options(p)
    p.set_defaults(handler=_cmd_info)


# ------------------------------------------------------------------------------------- run


def _cmd_run(args: argparse.Namespace) -> int:
    from fmadask.jobspec import load_job
    from fmadask.run import check_report, run_job

    overrides = list(args.set or [])
    if args.scheduler:
        overrides += ([f"cluster.kind={args.scheduler}"]
                      if args.scheduler in ("local", "slurm", "kubernetes")
                      else ["cluster.kind=address", f"cluster.address={args.scheduler}"])
    for dest, (key, _) in args._options.items():    # --tls-ca ... as --set would give them
        if getattr(args, dest):
            overrides.append(f"{key}={getattr(args, dest)}")
    spec = load_job(args.job, overrides)
    if args.check:
        print("\n".join(check_report(spec)))
        print(f"{args.job}: valid")
        return 0
    run_job(spec)
    return 0


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a job spec (TOML): featurize, classical models, CNN",
                       description="Validate a job spec and run its stages in order (featurize, "
                                   "classical, cnn) on the cluster it names, skipping stages "
                                   "whose outputs are complete. See jobs/*.toml.")
    p.add_argument("job", metavar="JOB", help="job spec, e.g. jobs/demo.toml")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="run on this scheduler instead of the spec's cluster: an address "
                        "(tcp://host:8786, tls://...) or local, slurm, kubernetes")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a spec key, e.g. --set featurize.sr=22050 (repeatable)")
    p.add_argument("--check", action="store_true",
                   help="validate the spec, print it resolved and what a run would do; run nothing")
    add_options(p, ClusterOptions, "tls_ca_file", "tls_cert", "tls_key")
    p.set_defaults(handler=_cmd_run)


# ------------------------------------------------------------------------ train, predict


def _cmd_train(args: argparse.Namespace) -> int:
    from fmadask.ml.data import DatasetOptions
    from fmadask.ml.execute import results_markdown
    from fmadask.ml.train import ClassicalConfig, train

    # train() checks the options and reads the data before it starts or joins a cluster.
    _require_drivers(args.source, args.out)
    config = ClassicalConfig.of(options_from_args(ClassicalOptions, args))
    results = train(args.source, out_dir=args.out, config=config,
                    data=options_from_args(DatasetOptions, args), scheduler=args.scheduler,
                    workers=args.workers, worker_timeout=args.worker_timeout,
                    storage_options=args.storage_options)
    # the threshold it ran with: the table alone would state the default's
    print(results_markdown(results, threshold=config.scale_threshold), end="")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the study's ten classical models on the features",
                       description="Scale the 518 features (fitted on the training split), fit "
                                   "Logistic Regression, Decision Tree, Random Forest, SVC, "
                                   "NuSVC, Linear SVC, Gradient Boosting, Extra Trees, XGBoost "
                                   "and AdaBoost on a Dask cluster, optionally tune them by "
                                   "distributed random search or Bayesian optimisation, and write "
                                   "results.csv, table.md, confusion matrices, PCA/t-SNE/K-means "
                                   "pictures and saved models.")
    p.add_argument("source", metavar="RUN_DIR_OR_FEATURES",
                   help="a featurize run directory, or FMA's fma_metadata/features.csv (with "
                        "tracks.csv next to it)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default RUN_DIR/classical, or ./classical)")
    add_options(p, DataOptions, "split", "seed", "target")
    add_option(p, "data.subset", help="FMA subset when reading features.csv")
    add_options(p, ClassicalOptions)
    _add_storage_options(p)
    _add_cluster_options(p)
    p.set_defaults(handler=_cmd_train)


def _cmd_predict(args: argparse.Namespace) -> int:
    from fmadask.errors import DataError
    from fmadask.predict import expand_paths, format_predictions, predict

    _require_drivers(args.model)
    if not expand_paths(args.audio):
        raise DataError(f"no audio files in {', '.join(args.audio)}: pass mp3 (or other audio) "
                        "files or folders holding them")
    table = predict(args.model, args.audio, storage_options=args.storage_options)
    for line in format_predictions(table, top=args.top):
        print(line, flush=True)
    # Exit status 1 when some files could not be scored (their lines say why).
    return 1 if table["error"].notna().any() else 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="top genres of audio files from a trained model",
                       description="Decode and featurize audio files as the featurize job does "
                                   "and print each file's most probable genres. MODEL is a model "
                                   "folder (RUN_DIR/classical/models/xgboost, a CNN's folder, "
                                   "RUN_DIR/fusion) or RUN_DIR/classical for the best classical "
                                   "model. A file that "
                                   "cannot be decoded gets a line saying why; the others are "
                                   "still scored (exit status 1 if any failed).")
    p.add_argument("model", metavar="MODEL", help="model folder (with model.json)")
    p.add_argument("audio", metavar="AUDIO_OR_DIR", nargs="+",
                   help="audio files, or folders of them (searched recursively)")
    add_options(p, PredictOptions)
    _add_storage_options(p)
    p.set_defaults(handler=_cmd_predict)


# ------------------------------------------------------------------------------- featurize

def _cmd_featurize(args: argparse.Namespace) -> int:
    from fmadask.pipeline.featurize import FeaturizeConfig, run_featurize

    _require_drivers(args.data_dir, args.out)
    config = FeaturizeConfig.of(options_from_args(FeaturizeOptions, args), subset=args.subset,
                                split=args.split, seed=args.split_seed, target=args.target,
                                overwrite=args.overwrite)
    run_featurize(args.data_dir, out=args.out, config=config, scheduler=args.scheduler,
                  workers=args.workers, worker_timeout=args.worker_timeout,
                  storage_options=args.storage_options)
    return 0


def _add_featurize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("featurize", help="decode mp3s into FMA features and log-mel spectrograms "
                                         "on a Dask cluster",
                       description="Decode every track of an FMA subset once and write the 518 "
                                   "FMA features (RUN_DIR/features/*.parquet), log-mel "
                                   "spectrogram shards (RUN_DIR/spectrograms/) and one errors row "
                                   "per bad track (RUN_DIR/errors/). One Dask task per partition; "
                                   "a re-run skips complete partitions.")
    p.add_argument("data_dir", metavar="DATA_DIR",
                   help="folder or URL (s3://, gs://, https:// ...) holding fma_metadata/ and "
                        "fma_<subset>/; each worker reads the mp3s itself")
    add_options(p, DataOptions, "subset")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write into")
    add_options(p, FeaturizeOptions)
    add_options(p, DataOptions, "split", "seed", "target")
    add_option(p, "output.overwrite")
    _add_storage_options(p)
    _add_cluster_options(p)
    p.set_defaults(handler=_cmd_featurize)


# ------------------------------------------------------------------------------------- cnn


def _cmd_cnn(args: argparse.Namespace) -> int:
    from fmadask.cluster import get_client
    from fmadask.dl.config import TrainConfig, config_options
    from fmadask.dl.entry import CnnConfig, execute_cnn, plan_cnn, read_cnn_state
    from fmadask.dl.launch import check_run_dir, format_result

    run = TrainConfig(**config_options(args), device="cuda" if args.gpu else "cpu")
    for location in (args.run_dir, run.out_dir):   # before a cluster is started
        if location is not None:
            check_run_dir(location)
    config = CnnConfig(ranks=args.ranks, runs=(run,))
    workers = None if args.scheduler else (args.workers or args.ranks or 2)
    with get_client(args.scheduler, workers=workers, worker_timeout=args.worker_timeout) as client:
        state = read_cnn_state(args.run_dir, config, args.storage_options)
        plan = plan_cnn(args.run_dir, config, state, fresh=not args.resume)
        [result] = execute_cnn(plan, client, args.storage_options)
    print(format_result(result))
    return 0


def _add_cnn(sub: argparse._SubParsersAction) -> None:
    from fmadask.dl.config import add_config_arguments

    p = sub.add_parser("cnn", help="train a CNN on the spectrograms (PyTorch DDP on Dask workers)",
                       description="Train a CNN on RUN_DIR/spectrograms with one DDP rank per "
                                   "Dask worker (gloo on CPU, NCCL and mixed precision with "
                                   "--gpu), checkpointing every epoch; score validation and test "
                                   "by segment, by majority vote and by mean probability per "
                                   "track. Writes RUN_DIR/cnn (or --out): metrics.csv, "
                                   "curves.png, confusion_*.png, report.md, model.pt/model.json "
                                   "for 'fmadask predict'. RUN_DIR may be a bucket "
                                   "(s3://bucket/runs/r1): each worker host then keeps the "
                                   "shards it reads in a local cache (--cache-dir, "
                                   "--cache-size) and the outputs are uploaded, each file "
                                   "whole, the model card last.")
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="run directory holding spectrograms/ (a path or a URL, s3://...)")
    add_config_arguments(p, skip=("device",))     # --gpu chooses it
    add_option(p, "cnn.ranks")
    p.add_argument("--gpu", action="store_true",
                   help="train on the workers' GPUs (mixed precision; NCCL, or gloo where "
                        "ranks share a GPU)")
    _add_storage_options(p)
    _add_cluster_options(p)
    p.set_defaults(handler=_cmd_cnn)


# ------------------------------------------------------------------------------------ fuse


def _cmd_fuse(args: argparse.Namespace) -> int:
    from fmadask.fusion.entry import FusionPlan, execute_fusion

    _require_drivers(args.run_dir, args.out)
    config = FusionOptions(classical=args.classical or "", cnn=args.cnn or "")
    execute_fusion(FusionPlan(args.run_dir, config, args.out), args.storage_options)
    return 0


def _add_fuse(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fuse", help="pool the best classical model and the best CNN of a run",
                       description="Pool the class probabilities of a run's best classical model "
                                   "and best CNN (a weighted geometric mean whose weight is "
                                   "fitted on the validation split only), score each and the "
                                   "fusion on validation and test, and write RUN_DIR/fusion: "
                                   "results.csv, report.md with a confusion matrix, and a model "
                                   "for 'fmadask predict'. RUN_DIR may be a bucket "
                                   "(s3://bucket/runs/r1).")
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="run folder (path or URL) where the classical and CNN stages have "
                        "finished")
    p.add_argument("--classical", metavar="MODEL",
                   help="classical model folder under RUN_DIR/classical/models (default: best)")
    p.add_argument("--cnn", metavar="ARCH",
                   help="CNN folder under RUN_DIR/cnn (default: best validation accuracy)")
    p.add_argument("--out", metavar="DIR", help="output folder (default RUN_DIR/fusion)")
    _add_storage_options(p)
    p.set_defaults(handler=_cmd_fuse)


# ------------------------------------------------------------------------------------ main

_COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_sample, _add_fetch, _add_info, _add_featurize, _add_run, _add_train, _add_predict,
    _add_cnn, _add_fuse,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``fmadask`` argument parser with every subcommand."""
    parser = _Parser(
        prog="fmadask",
        description="Music genre recognition on the Free Music Archive (FMA) at scale: "
                    "featurize mp3s with Dask, train scikit-learn/XGBoost models and CNNs.")
    parser.add_argument("--version", action="version", version=f"fmadask {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)
    for add in _COMMANDS:
        add(sub)
    return parser


def _say(message: object) -> None:
    """The command's one error line, on stderr, without any URL's password."""
    from fmadask.storage import redact

    print(f"fmadask: {redact(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    show_progress()
    # The client logs its failed reconnections as errors with tracebacks; a lost scheduler is
    # reported below in one line instead. (A filter: Dask resets the logger's level on import.)
    logging.getLogger("distributed.client").addFilter(lambda r: r.levelno < logging.ERROR)
    try:
        resolve_options(args)     # each option's one definition: type, range, finiteness
        return args.handler(args)
    except OptionError as exc:    # named as the user wrote it: the flag
        _say(exc.named(cli_name(args, exc.key)))
        return 2
    except FmadaskError as exc:
        _say(exc)
        return 2
    except OSError as exc:
        _say(os_error_line(exc))     # the file and the reason, one line (redacted)
        return 2
    except Exception as exc:
        from fmadask.cluster import lost_scheduler_error, scheduler_lost

        if not scheduler_lost(exc):
            raise
        _say(lost_scheduler_error(getattr(args, "scheduler", None)))
        return 2
    except KeyboardInterrupt:
        print("fmadask: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
