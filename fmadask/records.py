"""What a run records about itself: the package versions that made it, and how two parameter
records differ (the message a re-run with other parameters shows). No Dask, no torch here."""
from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any


def package_versions(packages: Sequence[str]) -> dict[str, str]:
    """``{"python": ..., package: version}`` of installed distributions (``"not installed"``
    for a missing one), for the records a stage writes next to its outputs."""
    out = {"python": platform.python_version()}
    for package in packages:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def describe_change(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> str:
    """``'sr: None -> 22050, mel.n_mels: 128 -> 96'``: the keys whose values differ, nested
    records as dotted keys. A ``*_sha256`` key is a digest: it is said to have changed, without
    its 64 hex digits."""
    parts = []
    for key in sorted(set(old) | set(new), key=str):
        if (key in old) != (key in new):     # a key only one side records (even at None)
            parts.append(f"{prefix}{key} {'dropped' if key in old else 'added'}")
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            inner = describe_change(a, b, f"{prefix}{key}.")
            if inner:
                parts.append(inner)
        elif a != b:
            parts.append(f"{prefix}{key} changed" if str(key).endswith("_sha256")
                         else f"{prefix}{key}: {a!r} -> {b!r}")
    return ", ".join(parts)
