"""The stage contract and the one registry of stages.

A stage (featurize, classical, cnn, fusion) is one :class:`Stage` value, exported by its package
(``fmadask.pipeline.entry.STAGE``, ``fmadask.ml.entry.STAGE`` ...) and listed once, in order, in
:data:`REGISTRY`. The value says everything the rest of fmadask needs to know of the stage:

- its ``name``, which is also its job-spec section (``[classical]``) and the options section
  whose dataclass it runs with (``section``);
- its folder in the run folder (a :mod:`fmadask.runfolder` constant) and the result files worth
  pointing a user to;
- ``params``: the parameters that decide its outputs, derived from its section's options (every
  option not marked ``result=False``) and the parameters of the stages it reads (``reads``). The
  same function gives the stage marker ``fmadask run`` writes (``_stages/<name>.json``), the
  resume check of a re-run and ``fmadask run --check``;
- ``read_state`` / ``plan`` / ``execute``: what the run folder holds, the pure plan made from it,
  and running that plan on a Dask client;
- where it saves models: its ``model_kind`` (``model.json``'s ``kind``) and ``predictor``;
- its own command (``fmadask featurize``, ``train``, ``cnn``, ``fuse``): ``command`` adds it to
  the command line, with the section's options as flags (:mod:`fmadask.flags`).

A package's ``entry`` module is light: its functions import what needs Dask or torch when
called, so reading the registry (``fmadask --help``, ``fmadask run --check``) stays light.
``fmadask run`` (:mod:`fmadask.run`), the CLI, :mod:`fmadask.predict` and the architecture test
read the registry; no other table lists the stages.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fmadask import storage
from fmadask.options import option_fields, option_values

#: The stages, in the order they run: ``'module:attribute'`` of each package's :class:`Stage`.
REGISTRY: tuple[str, ...] = ("fmadask.pipeline.entry:STAGE", "fmadask.ml.entry:STAGE",
                             "fmadask.dl.entry:STAGE", "fmadask.fusion.entry:STAGE")


@dataclass(frozen=True)
class StageContext:
    """What a stage of a job reads besides its plan: the job's sections, where it reads and
    writes, and how it runs.

    Attributes
    ----------
    spec : object
        The job's sections as attributes (a :class:`fmadask.jobspec.JobSpec`): ``data``,
        ``output`` and one per stage, by the stage's name.
    run_dir : str or Path
        The run folder (a local path, or a URL).
    data_dir : str or Path
        The data folder (a local path, or the URL the workers read).
    storage_options : mapping
        fsspec options of URL folders (never printed or written).
    redo : bool
        The stage's outputs were made with other parameters and are redone.
    file : file object, optional
        Where the stage prints its summary (default standard output).
    """

    spec: Any
    run_dir: str | Path
    data_dir: str | Path
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    redo: bool = False
    file: IO[str] | None = None

    def section(self, name: str) -> Any:
        """The job's section ``name`` (``'data'``, ``'classical'`` ...)."""
        return getattr(self.spec, name)


def lazy(reference: str) -> Callable[..., Any]:
    """The function or value ``'module:name'`` names, imported now."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Stage:
    """One stage of a run: see the module docstring.

    Attributes
    ----------
    name : str
        Its name, its job-spec section and its marker's name (``_stages/<name>.json``).
    section : type
        Its options section (:mod:`fmadask.options`), the dataclass its config inherits.
    folder : str
        Its folder in the run folder (:mod:`fmadask.runfolder`); ``''`` for the folder itself.
    params : callable
        ``params(spec, upstream) -> dict``: the JSON-compatible parameters that decide its
        outputs; ``upstream`` holds the parameters of the stages in ``reads``, by name.
    reads : tuple of str
        The stages whose outputs it reads (their parameters are part of its own).
    requires : tuple of str
        Stages that must be on in the same job for it to run (fusion: classical and cnn).
    results : callable
        ``results(run_dir, storage_options) -> {label: location}``: its result files present.
    check : callable, optional
        ``check(spec)``: refuse names its registries do not know (:class:`ConfigError`), before
        anything runs.
    config : callable
        ``config(context) -> config``: the settings the stage executes with, made from its
        section (whose dataclass the config inherits) and the data options it reads; the plan
        holds it.
    read_state, plan, execute : callable
        ``read_state(context) -> state`` (what the run folder holds), the pure ``plan(context,
        state) -> plan`` and ``execute(plan, client, context)``.
    model_kind : str, optional
        ``model.json``'s ``kind`` of the models it saves.
    predictor : callable, optional
        ``predictor(model_dir, paths) -> DataFrame`` for its models (:mod:`fmadask.predict`).
    command : callable, optional
        ``command(subparsers)``: adds the stage's own subcommand to the command line
        (:func:`fmadask.cli.build_parser`); its handler imports what is heavy when it runs.
    """

    name: str
    section: type
    folder: str
    params: Callable[[Any, Mapping[str, dict]], dict]
    config: Callable[[StageContext], Any]
    read_state: Callable[[StageContext], Any]
    plan: Callable[[StageContext, Any], Any]
    execute: Callable[[Any, Any, StageContext], Any]
    results: Callable[[str | Path, Mapping[str, Any] | None], dict[str, str | Path]]
    reads: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    check: Callable[[Any], None] | None = None
    model_kind: str | None = None
    predictor: Callable[..., Any] | None = None
    command: Callable[[Any], None] | None = None

    def run(self, context: StageContext, client: Any) -> Any:
        """Read the run folder's state, plan and execute the plan on ``client``."""
        return self.execute(self.plan(context, self.read_state(context)), client, context)


def stages() -> tuple[Stage, ...]:
    """Every stage, in the order they run (:data:`REGISTRY`)."""
    return tuple(lazy(reference) for reference in REGISTRY)


def stage(name: str) -> Stage:
    """The stage called ``name`` (:class:`KeyError` for an unknown one)."""
    for s in stages():
        if s.name == name:
            return s
    raise KeyError(name)


def stage_params(spec: Any, name: str) -> dict[str, Any]:
    """The parameters that decide stage ``name``'s outputs (JSON-compatible), with those of the
    stages it reads, so that a change upstream makes them differ too."""
    s = stage(name)
    return s.params(spec, {r: stage_params(spec, r) for r in s.reads})


def result_options(section: Any) -> dict[str, Any]:
    """The keys of a job-spec section that decide its stage's outputs (JSON-compatible
    copies): every option of the section not marked ``result=False``."""
    keys = {f.name for f in option_fields(type(section), spec=True)}
    return {name: list(value) if isinstance(value, list) else value
            for name, value in option_values(section, result=True).items() if name in keys}


def present(run_dir: str | Path, storage_options: Mapping[str, Any] | None,
            files: Mapping[str, str]) -> dict[str, str | Path]:
    """The ``files`` (label -> name relative to ``run_dir``) that exist, by label."""
    found = {}
    for label, rel in files.items():
        location = storage.join(run_dir, *rel.split("/"))
        if storage.exists(location, storage_options):
            found[label] = location
    return found


def model_kinds() -> dict[str, Stage]:
    """The stages that save models, by their models' kind."""
    return {s.model_kind: s for s in stages() if s.model_kind}
