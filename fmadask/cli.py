"""The ``fmadask`` command line.

Each subcommand is a small handler that parses its options and calls the library; heavy
imports (dask, librosa, torch) happen inside the handlers so ``fmadask --help`` is instant.
The commands that are not stages are here (``sample``, ``fetch``, ``info``, ``run``,
``predict``); each stage adds its own (``featurize``, ``train``, ``cnn``, ``fuse``) through
its registry value's :attr:`~fmadask.stages.Stage.command`.
Errors the user can fix end in one line, ``fmadask: <what and how to fix it>``, exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from fmadask import __version__
from fmadask.errors import FmadaskError, os_error_line
from fmadask.logs import show_progress
from fmadask.flags import (add_options, add_storage_options, cli_name, require_drivers,
                           resolve_options)
from fmadask.options import (CLUSTER_KINDS, ClusterOptions, DataOptions, OptionError,
                             PredictOptions, SampleOptions)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``fmadask: ...``, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix("fmadask").strip()
        self.exit(2, f"fmadask: {command + ': ' if command else ''}{message} "
                     f"(see '{self.prog} --help')\n")


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

    require_drivers(args.to)
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
    add_storage_options(p)
    p.set_defaults(handler=_cmd_fetch)


# ------------------------------------------------------------------------------------ info


def _cmd_info(args: argparse.Namespace) -> int:
    from fmadask.fma.info import dataset_info, format_info

    require_drivers(args.data_dir)
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
    add_storage_options(p)
    p.set_defaults(handler=_cmd_info)


# ------------------------------------------------------------------------------------- run


def _cmd_run(args: argparse.Namespace) -> int:
    from fmadask.jobspec import load_job
    from fmadask.run import check_report, run_job

    overrides = list(args.set or [])
    if args.scheduler:
        started = args.scheduler in CLUSTER_KINDS and args.scheduler != "address"
        overrides += ([f"cluster.kind={args.scheduler}"] if started
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
    from fmadask.stages import stages

    names = ", ".join(s.name for s in stages())      # the registry: light, no pandas
    p = sub.add_parser("run", help=f"run a job spec (TOML): {names}",
                       description=f"Validate a job spec and run its stages in order ({names}) "
                                   "on the cluster it names, skipping stages whose outputs are "
                                   "complete. See jobs/*.toml.")
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


# --------------------------------------------------------------------------------- predict


def _cmd_predict(args: argparse.Namespace) -> int:
    from fmadask.errors import DataError
    from fmadask.predict import expand_paths, format_predictions, predict

    require_drivers(args.model)
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
    add_storage_options(p)
    p.set_defaults(handler=_cmd_predict)


# ------------------------------------------------------------------------------------ main

#: The commands that are not a stage's, in the order ``fmadask --help`` lists them: the data
#: ones, then the stages' (the registry's order), then these.
_DATA_COMMANDS = (_add_sample, _add_fetch, _add_info)
_RUN_COMMANDS = (_add_run, _add_predict)


def build_parser() -> argparse.ArgumentParser:
    """The ``fmadask`` argument parser with every subcommand."""
    parser = _Parser(
        prog="fmadask",
        description="Music genre recognition on the Free Music Archive (FMA) at scale: "
                    "featurize mp3s with Dask, train scikit-learn/XGBoost models and CNNs.")
    parser.add_argument("--version", action="version", version=f"fmadask {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)
    from fmadask.stages import stages

    for add in (*_DATA_COMMANDS, *(s.command for s in stages() if s.command), *_RUN_COMMANDS):
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
