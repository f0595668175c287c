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


# ------------------------------------------------------------------------------------ main

_COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_sample, _add_fetch, _add_info,
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
