"""The ``fmadask`` command line.

Each subcommand is a small handler that parses its options and calls the library; heavy
imports (dask, librosa, torch) happen inside the handlers so ``fmadask --help`` is instant.
Errors the user can fix end in one line, ``fmadask: <what and how to fix it>``, exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from fmadask import __version__
from fmadask.errors import FmadaskError

Handler = Callable[[argparse.Namespace], int]


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--scheduler", metavar="ADDR",
                       help="address of an existing Dask scheduler (tcp://host:8786 or tls://...)")
    group.add_argument("--workers", type=int, metavar="N",
                       help="start a local Dask cluster of N worker processes (default 2)")


# ---------------------------------------------------------------------------------- sample


def _cmd_sample(args: argparse.Namespace) -> int:
    from fmadask.fma.sample import make_sample

    out = make_sample(args.out_dir, tracks_per_genre=args.tracks_per_genre,
                      seconds=args.seconds, seed=args.seed)
    print(f"FMA-shaped sample written to {out} (fma_metadata/, fma_small/)")
    return 0


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="write an FMA-shaped sample (metadata + real mp3 files)",
                       description="Write an FMA-shaped sample: fma_metadata/tracks.csv and "
                                   "genres.csv in FMA's formats and fma_small/AAA/AAABBB.mp3 clips "
                                   "(44.1 kHz stereo) whose audio differs by genre, with FMA's "
                                   "defects (empty, too short and truncated clips).")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write into")
    p.add_argument("--tracks-per-genre", type=int, default=10, metavar="N",
                   help="good clips per genre (default 10, at least 3)")
    p.add_argument("--seconds", type=float, default=30.0, metavar="S",
                   help="clip duration in seconds (default 30, as FMA's clips)")
    p.add_argument("--seed", type=int, default=0, metavar="K", help="random seed (default 0)")
    p.set_defaults(handler=_cmd_sample)


# ----------------------------------------------------------------------------------- fetch


def _cmd_fetch(args: argparse.Namespace) -> int:
    from fmadask.fma.download import fetch

    kwargs = {"mirror": args.mirror} if args.mirror else {}
    path = fetch(args.archive, args.to, **kwargs)
    print(f"{args.archive}: ready in {path}")
    return 0


def _add_fetch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fetch", help="download and extract an FMA archive (resumable, verified)",
                       description="Download one of FMA's zip archives with resume, verify its "
                                   "published SHA-1 and extract it safely into DATA_DIR.")
    p.add_argument("archive", choices=["metadata", "small", "medium", "large", "full"])
    p.add_argument("--to", required=True, metavar="DATA_DIR", help="folder to download into")
    p.add_argument("--mirror", metavar="URL", help="base URL serving the zips (default: FMA's)")
    p.set_defaults(handler=_cmd_fetch)


# ------------------------------------------------------------------------------------ info


def _cmd_info(args: argparse.Namespace) -> int:
    from fmadask.fma.info import dataset_info, format_info

    print(format_info(dataset_info(args.data_dir, args.subset), args.subset))
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="tracks per subset, split and genre; missing audio files",
                       description="Summarise an FMA data folder: tracks per subset, per split "
                                   "and top-level genre, and audio files missing on disk.")
    p.add_argument("data_dir", metavar="DATA_DIR", help="folder holding fma_metadata/")
    p.add_argument("--subset", default="small", help="small, medium, large or full (default small)")
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
    for option, key in (("tls_ca", "tls_ca_file"), ("tls_cert", "tls_cert"),
                        ("tls_key", "tls_key")):
        if getattr(args, option):
            overrides.append(f"cluster.{key}={getattr(args, option)}")
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
    p.add_argument("--tls-ca", metavar="PEM", help="CA certificate for a tls:// scheduler")
    p.add_argument("--tls-cert", metavar="PEM", help="client certificate for a tls:// scheduler")
    p.add_argument("--tls-key", metavar="PEM", help="client private key for a tls:// scheduler")
    p.set_defaults(handler=_cmd_run)


# ------------------------------------------------------------------------ train, predict


def _cmd_train(args: argparse.Namespace) -> int:
    from fmadask.ml.train import results_markdown, train

    # train() checks the options and reads the data before it starts or joins a cluster.
    results = train(args.source, out_dir=args.out, split=args.split, models=args.models,
                    search=args.search, n_iter=args.n_iter, scaler=args.scaler, seed=args.seed,
                    search_models=args.search_models, scheduler=args.scheduler,
                    workers=args.workers, split_seed=args.split_seed, subset=args.subset,
                    cv=args.cv, distributed_xgb=args.distributed_xgb,
                    class_weight=args.class_weight, unsupervised=not args.no_unsupervised)
    print(results_markdown(results), end="")
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
    p.add_argument("--split", choices=["official", "stratified"], default="official",
                   help="FMA's split or the study's stratified 80/10/10 (default official)")
    p.add_argument("--split-seed", type=int, default=42, metavar="K",
                   help="seed of the stratified split (default 42)")
    p.add_argument("--subset", default="small",
                   help="FMA subset when reading features.csv (default small)")
    p.add_argument("--models", default="all", metavar="NAMES",
                   help="comma-separated model names or 'all' (default): logistic_regression, "
                        "decision_tree, random_forest, svc, nusvc, linear_svc, gradient_boosting, "
                        "extra_trees, xgboost, adaboost")
    p.add_argument("--search", choices=["none", "random", "bayes"], default="none",
                   help="hyper-parameter search: random or Bayesian (Optuna TPE), both with "
                        "successive halving, resumable (default none)")
    p.add_argument("--search-models", default="xgboost", metavar="NAMES",
                   help="models to tune, comma-separated or 'all' (default xgboost)")
    p.add_argument("--n-iter", type=int, default=20, metavar="N",
                   help="candidates per searched model (default 20)")
    p.add_argument("--cv", type=int, default=5, metavar="K",
                   help="stratified cross-validation folds of the search (default 5)")
    p.add_argument("--class-weight", choices=["none", "balanced"], default="none",
                   help="'balanced' weights every genre the same in training (unbalanced subsets "
                        "such as FMA medium; default none)")
    p.add_argument("--scaler", choices=["minmax", "standard"], default="minmax",
                   help="feature scaling (default minmax, the study's)")
    p.add_argument("--seed", type=int, default=0, metavar="K", help="random seed (default 0)")
    p.add_argument("--distributed-xgb", action="store_true",
                   help="train XGBoost with xgboost.dask across all workers (FMA large)")
    p.add_argument("--no-unsupervised", action="store_true",
                   help="skip the PCA, t-SNE and K-means pictures")
    _add_cluster_options(p)
    p.set_defaults(handler=_cmd_train)


def _cmd_predict(args: argparse.Namespace) -> int:
    from fmadask.errors import DataError
    from fmadask.ml.predict import expand_paths, format_predictions, predict

    if not expand_paths(args.audio):
        raise DataError(f"no audio files in {', '.join(args.audio)}: pass mp3 (or other audio) "
                        "files or folders holding them")
    table = predict(args.model, args.audio)
    for line in format_predictions(table, top=args.top):
        print(line, flush=True)
    # Exit status 1 when some files could not be scored (their lines say why).
    return 1 if table["error"].notna().any() else 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="top genres of audio files from a trained model",
                       description="Decode and featurize audio files as the featurize job does "
                                   "and print each file's most probable genres. MODEL is a model "
                                   "folder (RUN_DIR/classical/models/xgboost, a CNN's folder) or "
                                   "RUN_DIR/classical for the best classical model. A file that "
                                   "cannot be decoded gets a line saying why; the others are "
                                   "still scored (exit status 1 if any failed).")
    p.add_argument("model", metavar="MODEL", help="model folder (with model.json)")
    p.add_argument("audio", metavar="AUDIO_OR_DIR", nargs="+",
                   help="audio files, or folders of them (searched recursively)")
    p.add_argument("--top", type=int, default=3, metavar="N",
                   help="genres to show per file (default 3)")
    p.set_defaults(handler=_cmd_predict)


# ------------------------------------------------------------------------------- featurize

# Marks an option the user did not give, so the library's default applies (None is a meaningful
# --max-seconds value).
_LIBRARY_DEFAULT = object()


def _sample_rate(text: str) -> int | None:
    if text == "native":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use 'native' or a rate in Hz such as 22050")


def _seconds_or_none(text: str) -> float | None:
    if text == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use a number of seconds or 'none'")


def _cmd_featurize(args: argparse.Namespace) -> int:
    from fmadask.pipeline import run_featurize

    # Options left out keep the library's defaults (one place for them).
    given = {k: v for k, v in (("partition_size", args.partition_size),
                               ("max_seconds", args.max_seconds)) if v is not _LIBRARY_DEFAULT}
    run_featurize(args.data_dir, subset=args.subset, out=args.out, sr=args.sr,
                  what=[w.strip() for w in args.what.split(",") if w.strip()],
                  overwrite=args.overwrite, split=args.split, seed=args.split_seed,
                  scheduler=args.scheduler, workers=args.workers, **given)
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
                   help="folder holding fma_metadata/ and fma_<subset>/")
    p.add_argument("--subset", default="small", help="small, medium, large or full (default small)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write into")
    p.add_argument("--sr", type=_sample_rate, default=None, metavar="native|HZ",
                   help="decode at the file's native rate (default, as FMA) or resample to "
                        "this rate in Hz, e.g. 22050")
    p.add_argument("--what", default="features,spectrograms", metavar="LIST",
                   help="features, spectrograms or both (default both; each track decoded once)")
    p.add_argument("--partition-size", type=int, default=_LIBRARY_DEFAULT, metavar="K",
                   help="tracks per partition, one task each (default 64)")
    p.add_argument("--max-seconds", type=_seconds_or_none, default=_LIBRARY_DEFAULT,
                   metavar="S", help="refuse longer tracks, recorded in errors/ "
                                     "(default 1200; 'none': no limit)")
    p.add_argument("--split", choices=["official", "stratified"], default="official",
                   help="FMA's split or the study's stratified 80/10/10 (default official)")
    p.add_argument("--split-seed", type=int, default=42, metavar="K",
                   help="seed of the stratified split (default 42)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete RUN_DIR's previous featurize outputs and start afresh")
    _add_cluster_options(p)
    p.set_defaults(handler=_cmd_featurize)


# ------------------------------------------------------------------------------------- cnn


def _cmd_cnn(args: argparse.Namespace) -> int:
    from fmadask.cluster import get_client
    from fmadask.dl.launch import format_result, run_cnn
    from fmadask.dl.config import config_options

    workers = None if args.scheduler else (args.workers or args.ranks or 2)
    with get_client(args.scheduler, workers=workers) as client:
        result = run_cnn(args.run_dir, ranks=args.ranks, client=client, gpu=args.gpu,
                         resume=args.resume, **config_options(args))
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
                                   "for 'fmadask predict'.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory holding spectrograms/")
    add_config_arguments(p)
    p.add_argument("--ranks", type=int, metavar="R",
                   help="DDP ranks, one per worker (default: every worker, or --workers)")
    p.add_argument("--gpu", action="store_true",
                   help="train on the workers' GPUs (NCCL, mixed precision)")
    _add_cluster_options(p)
    p.set_defaults(handler=_cmd_cnn)


# ------------------------------------------------------------------------------------ main

_COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_sample, _add_fetch, _add_info, _add_featurize, _add_run, _add_train, _add_predict,
    _add_cnn,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``fmadask`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="fmadask",
        description="Music genre recognition on the Free Music Archive (FMA) at scale: "
                    "featurize mp3s with Dask, train scikit-learn/XGBoost models and CNNs.")
    parser.add_argument("--version", action="version", version=f"fmadask {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except FmadaskError as exc:
        print(f"fmadask: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fmadask: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
