"""Job specifications: one TOML file that names the data, the cluster, the stages and their parameters.

A job spec has the sections ``[job]``, ``[data]``, ``[cluster]``, ``[featurize]``,
``[classical]``, ``[cnn]``, ``[fusion]`` and ``[output]``; each key, its type, rules and default
are a field of the section's dataclass in :mod:`fmadask.options` (``fmadask run --check JOB``
prints the resolved spec). ``load_job`` reads a file, applies ``--set section.key=value``
overrides and validates everything before a stage runs, so a typo costs one line, not a
half-finished run:

- an unknown section or key, a value of the wrong type or out of range: :class:`ConfigError`;
- a data folder that does not exist (and is not to be generated): :class:`DataError`.

Paths are local paths (relative ones are taken from the current directory, like ``make`` or
``git`` do) or fsspec URLs (``s3://bucket/fma``, ``file:///data/fma``, ``memory://...``).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from fmadask.errors import ConfigError, DataError
from fmadask.fma.layout import METADATA_DIR
from fmadask.options import (SPEC_SECTIONS, ClassicalSection, CnnSection, ClusterOptions,
                             DataOptions, FeaturizeSection, FusionSection, JobOptions,
                             OptionError, OutputOptions, option_fields)
from fmadask.storage import exists, filesystem, is_url, local_path, redact

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


@dataclass(frozen=True)
class JobSpec:
    """A validated job specification: its source and one instance per section of
    :data:`SECTIONS`, read as attributes (``spec.data``, ``spec.cnn`` ... a stage's section by
    the stage's name), so a section declared in :mod:`fmadask.options` is part of every spec."""

    source: str
    sections: Mapping[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["sections"][name]
        except KeyError:
            raise AttributeError(f"a job spec has no section {name!r}") from None

    if typing.TYPE_CHECKING:        # the sections every spec has, for type checkers
        job: JobOptions
        data: DataOptions
        cluster: ClusterOptions
        featurize: FeaturizeSection
        classical: ClassicalSection
        cnn: CnnSection
        fusion: FusionSection
        output: OutputOptions

    @property
    def name(self) -> str:
        """The job's name: ``[job] name`` or the spec file's stem."""
        return self.job.name or Path(self.source).stem

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The spec as ``{section: {key: value}}`` (what ``--check`` prints)."""
        return {s: spec_values(getattr(self, s)) for s in SECTIONS}

    def replace(self, section: str, **changes: Any) -> JobSpec:
        """A copy with some keys of one section changed (validated again)."""
        raw = self.to_dict()
        raw[section].update(changes)
        return build_spec(raw, self.source)


#: Section name -> its dataclass (:mod:`fmadask.options`), in the order a spec is written and
#: printed.
SECTIONS: dict[str, type] = SPEC_SECTIONS


def spec_fields(cls: type) -> list[dataclasses.Field]:
    """The keys of a section: its option fields that belong in a job spec, ``enabled`` first."""
    return sorted(option_fields(cls, spec=True), key=lambda f: f.name != "enabled")


def spec_values(section: Any) -> dict[str, Any]:
    """A section's keys and values, as a spec holds them (copies of lists and tables)."""
    return {f.name: _copy(getattr(section, f.name)) for f in spec_fields(type(section))}


def _copy(value: Any) -> Any:
    return type(value)(value) if isinstance(value, (list, dict)) else value


# ------------------------------------------------------------------------------- loading


def load_job(path: str | os.PathLike[str], overrides: list[str] | tuple[str, ...] = (),
             check_paths: bool = True) -> JobSpec:
    """Read, override and validate a job spec.

    Parameters
    ----------
    path : str or PathLike
        The TOML file.
    overrides : list of str
        ``section.key=value`` items applied after the file (``--set``). ``value`` is read as a
        TOML value (``22050``, ``true``, ``["naive"]``, ``"x"``); anything that is not valid
        TOML is taken as a string, so ``data.dir=/tmp/fma`` needs no quotes.
    check_paths : bool
        Also check that the data folder exists (or will be generated) and that named files
        (TLS certificates, a cluster manifest) exist.

    Returns
    -------
    JobSpec

    Raises
    ------
    ConfigError
        Unreadable TOML, unknown section or key, wrong type, value out of range.
    DataError
        A data path that does not exist.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"job spec {source} not found: pass a TOML file such as "
                          "jobs/demo.toml") from None
    except OSError as exc:
        raise ConfigError(f"cannot read job spec {source}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source} is not UTF-8 text (byte {exc.start}): save the job spec "
                          "as UTF-8") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from None
    except RecursionError:      # tomllib recurses once per level of nesting
        raise ConfigError(f"{source}: {_TOO_DEEP}") from None
    for item in overrides:
        apply_override(raw, item, source)
    spec = build_spec(raw, source)
    if check_paths:
        check_spec_paths(spec)
    return spec


def apply_override(raw: dict[str, Any], item: str, source: str = "--set") -> None:
    """Apply one ``section.key=value`` override to the raw (parsed TOML) spec in place."""
    key, sep, text = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise ConfigError(f"--set {item!r}: write it as section.key=value, "
                          "e.g. --set featurize.sr=22050")
    _known_section(section, source)
    _known_key(section, name, source)
    raw.setdefault(section, {})
    if not isinstance(raw[section], dict):
        raise ConfigError(f"{source}: [{section}] must be a table")
    try:
        raw[section][name] = parse_value(text.strip())
    except RecursionError:
        raise ConfigError(f"--set {key.strip()}: {_TOO_DEEP}") from None


#: Why a spec or ``--set`` value whose arrays or tables nest thousands deep is refused.
_TOO_DEEP = "arrays or tables are nested too deeply to read: no setting nests more than once"


def parse_value(text: str) -> Any:
    """A ``--set`` value as TOML (numbers, booleans, arrays, quoted strings), else the string.

    Raises RecursionError for arrays nested thousands deep (as ``tomllib`` does)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def build_spec(raw: dict[str, Any], source: str) -> JobSpec:
    """Validate a raw ``{section: {key: value}}`` mapping and build the :class:`JobSpec`."""
    for section in raw:
        _known_section(section, source)
    sections = {}
    for section, cls in SECTIONS.items():
        values = raw.get(section, {})
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{section}] must be a table of key = value lines")
        sections[section] = _build_section(section, cls, values, source)
    spec = JobSpec(source=source, sections=sections)
    _check_consistency(spec)
    return spec


def _known_section(section: str, source: str) -> None:
    if section not in SECTIONS:
        raise ConfigError(f"{source}: unknown section [{section}]{_did_you_mean(section, SECTIONS)}"
                          f"; sections are {', '.join(SECTIONS)}")


def _known_key(section: str, key: str, source: str) -> None:
    names = [f.name for f in spec_fields(SECTIONS[section])]
    if key not in names:
        raise ConfigError(f"{source}: unknown key '{key}' in [{section}]"
                          f"{_did_you_mean(key, names)}; known keys: {', '.join(names)}")


def _did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _build_section(section: str, cls: type, values: dict[str, Any], source: str) -> Any:
    kwargs = {}
    for key in values:
        _known_key(section, key, source)
    for f in spec_fields(cls):
        opt = f.metadata["option"]
        if f.name not in values:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{source}: {opt.key} is required ({opt.help})")
            continue
        try:
            kwargs[f.name] = opt.check(values[f.name])
        except OptionError as exc:
            raise ConfigError(f"{source}: {exc.named(opt.key)}") from None
    try:
        return cls(**kwargs)
    except OptionError as exc:      # a rule of the section's that involves more than one key
        raise ConfigError(f"{source}: {exc.named(exc.key)}") from None


def _check_consistency(spec: JobSpec) -> None:
    """Rules that involve more than one key."""
    src = spec.source
    if not spec.featurize.what:
        raise ConfigError(f"{src}: [featurize] what is empty: list 'features' and/or "
                          "'spectrograms'")
    if spec.classical.enabled and "features" not in spec.featurize.what:
        raise ConfigError(f"{src}: [classical] needs the features: add 'features' to "
                          "[featurize] what, or set [classical] enabled = false")
    if spec.cnn.enabled and "spectrograms" not in spec.featurize.what:
        raise ConfigError(f"{src}: [cnn] needs the spectrograms: add 'spectrograms' to "
                          "[featurize] what, or set [cnn] enabled = false")
    if spec.cnn.enabled and not spec.cnn.archs:
        raise ConfigError(f"{src}: [cnn] archs is empty: list e.g. ['naive', 'naive_bn']")
    if spec.classical.enabled and not spec.classical.models:
        raise ConfigError(f"{src}: [classical] models is empty: list model names or ['all']")
    tls = [spec.cluster.tls_ca_file, spec.cluster.tls_cert, spec.cluster.tls_key]
    if any(tls) and not all(tls):
        raise ConfigError(f"{src}: [cluster] TLS needs all three of tls_ca_file, tls_cert and "
                          "tls_key")
    if spec.data.generate_sample and spec.data.subset != "small":
        raise ConfigError(f"{src}: [data] generate_sample writes FMA small only: set subset = "
                          "'small' or generate_sample = false")


# --------------------------------------------------------------------------------- paths


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a local path or a URL (always with ``/``)."""
    return "/".join([base.rstrip("/"), *parts])


def check_spec_paths(spec: JobSpec) -> None:
    """Check the paths a spec names; raise a one-line DataError/ConfigError for the first bad one.

    The data folder must hold ``fma_metadata/tracks.csv`` and ``fma_<subset>/``, unless
    ``generate_sample`` is set and the folder has no metadata yet (the run will write it).
    """
    data = spec.data
    so = data.storage_options
    metadata = join(data.dir, METADATA_DIR, "tracks.csv")
    if not exists(metadata, so):
        if data.generate_sample:
            if local_path(data.dir) is None:
                raise ConfigError(f"{spec.source}: [data] generate_sample writes a local folder; "
                                  f"{data.dir} is a URL")
        elif not exists(data.dir, so):
            raise DataError(f"data folder {data.dir} does not exist: fetch FMA with 'fmadask fetch "
                            f"metadata --to {data.dir}' and 'fmadask fetch {data.subset} --to "
                            f"{data.dir}', or set data.generate_sample = true")
        else:
            raise DataError(f"{metadata} not found: fetch it with 'fmadask fetch metadata --to "
                            f"{data.dir}' or set data.dir to the folder holding {METADATA_DIR}/")
    elif not exists(join(data.dir, f"fma_{data.subset}"), so):
        raise DataError(f"{join(data.dir, f'fma_{data.subset}')} not found: fetch the audio with "
                        f"'fmadask fetch {data.subset} --to {data.dir}'")
    for key in ("tls_ca_file", "tls_cert", "tls_key", "cluster_spec"):
        value = getattr(spec.cluster, key)
        if value and not exists(value):
            raise ConfigError(f"{spec.source}: [cluster] {key} = {value!r}: file not found")
    if is_url(spec.output.dir):
        filesystem(spec.output.dir)  # the protocol's driver must be installed


def format_spec(spec: JobSpec) -> str:
    """The resolved spec as TOML-like text, every key with its value (defaults included), for
    ``run --check`` and the run folder's ``job.toml``: without any URL's password."""
    lines = [f"# {spec.source} (resolved, with defaults)"]
    for section, values in spec.to_dict().items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is None:
                lines.append(f"# {key} is not set")
            elif key == "storage_options":   # may hold credentials: names only
                shown = ", ".join(f"{name} = \"***\"" for name in value)
                lines.append(f"{key} = {{ {shown} }}" if value else f"{key} = {{}}")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return redact("\n".join(lines).rstrip() + "\n")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
