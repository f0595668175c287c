"""The command line's flags of the options (:mod:`fmadask.options`): each command adds a
section's options with :func:`add_options` (flag, default, metavar and help from the option),
then :func:`resolve_options` converts and validates what was given, naming the flag in an
error, and :func:`options_from_args` makes the section's dataclass of it.

The flags several commands share (where to run: :func:`add_cluster_options`; how to reach a
bucket: :func:`add_storage_options`) are added here too, so a stage's own command (its
:attr:`fmadask.stages.Stage.command`) offers them exactly as every other command does."""
from __future__ import annotations

import argparse
from typing import Any

from fmadask import options
from fmadask.options import OptionError, default, option_fields


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def add_option(parser: argparse.ArgumentParser, key: str, help: str | None = None,
               **kwargs: Any) -> argparse.Action:
    """Add option ``key`` to ``parser`` with its flag, default, metavar and help;
    :func:`resolve_options` validates it after parsing.

    ``help`` replaces the option's help; other keyword arguments go to ``add_argument``
    (``dest``, ``action`` ...). A boolean option becomes a ``store_true`` flag (``store_false``
    for a ``--no-`` flag, into the option's name).
    """
    opt = options.OPTIONS[key]
    text = help or opt.cli_help or opt.help
    if opt.type is bool:
        inverted = opt.flag_name.startswith("--no-")
        kwargs.setdefault("action", "store_false" if inverted else "store_true")
        if inverted:
            kwargs.setdefault("dest", opt.name)
    else:
        kwargs.setdefault("default", default(key))
        kwargs.setdefault("metavar", opt.metavar or opt.name.split("_")[-1].upper())
        shown = kwargs["default"]
        if "{default}" in text:
            text = text.replace("{default}", _shown(shown))
        elif shown not in (None, "", {}) and "(default" not in text:
            text = f"{text} (default {_shown(shown)})"
    action = parser.add_argument(opt.flag_name, help=text, **kwargs)
    known = dict(parser.get_default("_options") or {})
    known[action.dest] = (key, opt.flag_name)
    parser.set_defaults(_options=known)
    return action


def add_options(parser: argparse.ArgumentParser, cls: type, *names: str,
                skip: tuple[str, ...] = ()) -> None:
    """Add the command-line options of section class ``cls`` to ``parser``: every one, or those
    ``names`` (a command that takes a few of a shared section's), less ``skip``."""
    for f in option_fields(cls, cli=True):
        if (not names or f.name in names) and f.name not in skip:
            add_option(parser, f.metadata["option"].key)


def resolve_options(args: argparse.Namespace) -> argparse.Namespace:
    """Convert and validate the options :func:`add_option` added (raises :class:`OptionError`
    naming the flag)."""
    for dest, (key, flag) in (getattr(args, "_options", None) or {}).items():
        value = getattr(args, dest, None)
        try:
            if isinstance(value, str):
                setattr(args, dest, options.OPTIONS[key].parse(value))
            elif value is not None:
                setattr(args, dest, options.OPTIONS[key].check(value))
        except OptionError as exc:
            raise exc.named(flag) from None
    return args


def options_from_args(cls: type, args: argparse.Namespace, **changes: Any) -> Any:
    """An instance of section class ``cls`` from a parsed command line: its options that the
    command offers, the defaults for the others, then ``changes``."""
    given = {key: dest for dest, (key, _) in (getattr(args, "_options", None) or {}).items()}
    values = {}
    for f in option_fields(cls):
        dest = given.get(f.metadata["option"].key)
        if dest is not None and getattr(args, dest, None) is not None:
            values[f.name] = getattr(args, dest)
    return cls(**{**values, **changes})


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """``--scheduler ADDR`` or ``--workers N`` (one of them), and ``--worker-timeout``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--scheduler", metavar="ADDR",
                       help="address of an existing Dask scheduler (tcp://host:8786 or tls://...)")
    # No default here: a command left without --workers lets the cluster code choose.
    add_option(group, "cluster.workers", default=None)
    add_option(parser, "cluster.worker_timeout")


class StorageOption(argparse.Action):
    """``--storage-option KEY=VALUE``, repeatable: items added to one dict of fsspec options."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from fmadask.errors import FmadaskError
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


def add_storage_options(parser: argparse.ArgumentParser) -> None:
    """``--storage-option KEY=VALUE`` (repeatable) into ``args.storage_options``."""
    add_option(parser, "data.storage_options", action=StorageOption, dest="storage_options")


def require_drivers(*locations: str | None) -> None:
    """Refuse now, in one line, a URL whose protocol's fsspec driver is not installed."""
    from fmadask.storage import require_driver

    for location in locations:
        if location is not None:
            require_driver(location)


def cli_name(args: argparse.Namespace, key: str) -> str:
    """The flag that sets option ``key`` in a parsed command line, else the key's name."""
    for option_key, flag in (getattr(args, "_options", None) or {}).values():
        if option_key == key:
            return flag
    return key.rsplit(".", 1)[-1]
