"""Options: one definition of each setting, shared by the command line, the job spec and the stages.

The settings are the fields of one frozen dataclass per section (:class:`DataOptions`,
:class:`FeaturizeOptions`, :class:`CnnOptions` ...): each field, declared with :func:`option`,
carries its default, type (the annotation), range (floats must also be finite), choices, help
and how the command line names it. From those fields come

- :data:`OPTIONS`, every :class:`Option` by ``section.key``, and :func:`check` / :func:`default`;
- the job spec's sections (:data:`SPEC_SECTIONS`; ``--set`` and ``fmadask run --check`` with
  them), see :mod:`fmadask.jobspec`;
- the command line's flags (:func:`fmadask.flags.add_options` loops over a section's fields;
  ``--batch-size`` from ``batch_size`` unless the field names another flag);
- the stages' configs, which inherit them (:class:`fmadask.dl.config.TrainConfig` is a
  :class:`CnnOptions`), and validate every option field when made.

So adding a setting is one field in one of these classes. An invalid value raises
:class:`OptionError`, which names the setting in the user's terms when printed: ``--partition-size``
on the command line, ``featurize.partition_size`` in a job spec, the parameter name elsewhere;
:func:`setting` names one inside another message so that it reads right from both.
"""
from __future__ import annotations

import dataclasses
import datetime
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from fmadask.errors import ConfigError

MISSING = dataclasses.MISSING


class OptionError(ConfigError):
    """An option has a wrong value.

    Parameters
    ----------
    key : str
        The option's ``section.key`` (see :data:`OPTIONS`).
    problem : str
        What is wrong, either a predicate (``'must be at least 1, not 0'``), shown after the
        option's name, or a sentence with ``{option}`` where the name goes.
    """

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(self.render(key.rsplit(".", 1)[-1]))

    def render(self, label: str) -> str:
        """The message with the option called ``label``."""
        if "{option}" in self.problem:
            return self.problem.replace("{option}", label)
        return f"{label} {self.problem}"

    def named(self, label: str) -> OptionError:
        """The same error, with the option called ``label`` in its message."""
        error = OptionError(self.key, self.problem)
        error.args = (self.render(label),)
        return error


@dataclass(frozen=True)
class Option:
    """One setting: type, default, rules, help and where it appears.

    Made by :func:`section` from a field declared with :func:`option`.

    Attributes
    ----------
    key : str
        ``section.key`` as in a job spec (``predict.top`` for options of one command only).
    type : type
        ``int``, ``float``, ``str``, ``bool``, ``list`` (a list of strings) or ``dict`` (a
        table of settings).
    default : object
        The default (``MISSING``: required); ``None`` means "not set".
    help : str
        One line for ``--help`` and ``fmadask run --check``.
    choices : tuple, optional
        Allowed values (of each item, for a list).
    minimum, maximum : float, optional
        Inclusive bounds of a number.
    words : tuple of str
        Strings accepted besides the type (``'native'`` for a rate, ``'none'`` for no limit).
    nullable : bool
        None is allowed (an unset value).
    path : bool
        A local path or URL.
    form : callable, optional
        Checks a value whose rules the type cannot say (a memory size: :func:`memory_size`):
        returns it, or raises ValueError; it replaces the type check.
    expected_text : str
        What a valid value looks like, when the type's name does not say it well.
    flag : str
        The command-line flag, when not ``--<key's name with dashes>`` (``--no-<name>`` for a
        boolean that is true by default).
    metavar : str
        The value's name in ``--help``.
    cli_help : str
        The help on the command line, when it says more than (or other than) ``help``.
    cli, spec : bool
        Offered on the command line; a key of the job spec.
    result : bool
        Decides a stage's outputs (recorded in its marker; :func:`fmadask.stages.stage_params`).
    """

    key: str
    type: type
    default: Any = MISSING
    help: str = ""
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    words: tuple[str, ...] = ()
    nullable: bool = False
    path: bool = False
    form: typing.Callable[[Any], Any] | None = None
    expected_text: str = ""
    flag: str = ""
    metavar: str = ""
    cli_help: str = ""
    cli: bool = True
    spec: bool = True
    result: bool = True

    @property
    def name(self) -> str:
        """The key's name within its section (``partition_size``)."""
        return self.key.rsplit(".", 1)[-1]

    @property
    def flag_name(self) -> str:
        """The command-line flag (``--partition-size``)."""
        if self.flag:
            return self.flag
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.type is bool and self.default is True else f"--{dashed}"


    def check(self, value: Any) -> Any:
        """``value`` validated (ints become floats for a float option), or :class:`OptionError`."""
        if isinstance(value, str) and value in self.words:
            return value
        if value is None:
            if self.nullable or self.default is None:
                return None
            raise OptionError(self.key, f"must be {self.expected()}, not nothing")
        if self.form is not None:
            try:
                return self.form(value)
            except ValueError:
                raise OptionError(self.key, f"must be {self.expected()}, not {value!r}") from None
        if self.type is dict:
            return self._check_table(value)
        if self.type is list:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise OptionError(self.key, f"must be a list such as [\"a\", \"b\"], not "
                                            f"{value!r}")
            for item in value:
                self._check_choice(item)
            return list(value)
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            raise OptionError(self.key, f"must be {self.expected()}, not {value!r}")
        if self.type is float and not math.isfinite(value):
            raise OptionError(self.key, f"must be a finite number, not {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise OptionError(self.key, f"must be at least {_bound(self.minimum)}, not {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise OptionError(self.key, f"must be at most {_bound(self.maximum)}, not {value!r}")
        self._check_choice(value)
        return value

    def parse(self, text: str) -> Any:
        """A command-line string converted to the option's type, then :meth:`check`-ed."""
        if text in self.words or self.form is not None:
            return self.check(text)
        try:
            if self.type is int:
                value: Any = int(text)
            elif self.type is float:
                value = float(text)
            elif self.type is bool:
                value = {"true": True, "false": False}[text.lower()]
            elif self.type is list:
                value = [w.strip() for w in text.split(",") if w.strip()]
            else:
                value = text
        except (ValueError, KeyError):
            raise OptionError(self.key, f"must be {self.expected()}, not {text!r}") from None
        return self.check(value)

    def expected(self) -> str:
        """What a valid value looks like, in words."""
        if self.expected_text:
            return self.expected_text
        names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
                 list: "a list", dict: "a table of KEY = VALUE settings"}
        kinds = [repr(w) for w in self.words] + [names[self.type]]
        return " or ".join(kinds)

    def _check_table(self, value: Any) -> dict:
        """A table (the command line builds it from ``KEY=VALUE`` items) as a dict."""
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            # The value itself is not shown: it may hold a secret.
            raise OptionError(self.key, f"must be {self.expected()}, not a {type(value).__name__}")
        return dict(value)

    def _check_choice(self, item: Any) -> None:
        if self.choices is not None and item not in self.choices:
            close = difflib.get_close_matches(str(item), [str(c) for c in self.choices], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise OptionError(self.key, f"unknown {{option}} {item!r}: choose one of "
                                        f"{', '.join(map(str, self.choices))}{hint}")

    def field(self) -> Any:
        """A dataclass field holding this option: its default, and the option as metadata."""
        meta = {"option": self}
        if isinstance(self.default, (list, dict)):
            return dataclasses.field(default_factory=lambda d=self.default: type(d)(d),
                                     metadata=meta)
        return dataclasses.field(default=self.default, metadata=meta)


def _bound(number: float) -> str:
    """A range's bound in a message: whole numbers in full (4294967295, not 4.29497e+09)."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


#: What numpy's and XGBoost's seeds take: an unsigned 32-bit integer.
SEED_RANGE = {"minimum": 0, "maximum": 2**32 - 1}

_MEMORY = re.compile(r"\s*(\d+(\.\d*)?|\.\d+)\s*([kmgtp]i?b?|b)?\s*", re.IGNORECASE)


def memory_size(value: Any) -> Any:
    """``value`` when it is a memory size Dask reads: 'auto', a positive number of bytes, or a
    number and a unit (``'8GiB'``, ``'4 GB'``, ``'512MiB'``); ValueError otherwise."""
    if isinstance(value, str) and (value == "auto" or _MEMORY.fullmatch(value)):
        number = value if value == "auto" else _MEMORY.fullmatch(value).group(1)
        if value == "auto" or float(number) > 0:
            return value
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and \
            math.isfinite(value) and value > 0:
        return value
    raise ValueError(f"not a memory size: {value!r}")


_WALLTIME = re.compile(r"(\d+-)?\d{1,3}:[0-5]\d:[0-5]\d")


def walltime(value: Any) -> str:
    """``value`` as a SLURM walltime ``[D-]HH:MM:SS``; ValueError otherwise. TOML reads an
    unquoted ``04:00:00`` as a time of day: that is taken as its text."""
    if isinstance(value, datetime.time) and not value.microsecond and value.tzinfo is None:
        value = value.isoformat()
    if isinstance(value, str) and _WALLTIME.fullmatch(value):
        return value
    raise ValueError(f"not a walltime: {value!r}")


#: Every option, by ``section.key`` (filled by :func:`section`).
OPTIONS: dict[str, Option] = {}
#: The job spec's sections: name -> dataclass, in the order a spec is written and printed.
SPEC_SECTIONS: dict[str, type] = {}


@dataclass(frozen=True)
class _Declared:
    """A field declared with :func:`option`; :func:`section` makes it an :class:`Option`."""

    default: Any
    rules: dict[str, Any]


def option(default: Any = MISSING, help: str = "", **rules: Any) -> Any:
    """Declare an option field of a :func:`section` class: its default, help and rules.

    ``rules`` are the other :class:`Option` attributes (``minimum``, ``maximum``, ``choices``,
    ``words``, ``path``, ``expected_text``, ``flag``, ``metavar``, ``cli_help``, ``cli``,
    ``spec``, ``result``); the type comes from the field's annotation (``int | None``: an int
    or unset; ``int | str`` with ``words``: an int or one of the words; ``list[str]``: a list).
    """
    return _Declared(default, dict(help=help, **rules))


def same_as(key: str) -> Any:
    """A field of a stage config holding option ``key`` of another section (same default and
    rules), e.g. the featurize config's ``subset``, which is ``data.subset``."""
    return OPTIONS[key].field()


def _option_type(hint: Any) -> tuple[type, bool]:
    """``(type, nullable)`` of an option from its field's annotation."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = list(typing.get_args(hint)) if union else [hint]
    nullable = type(None) in kinds
    kinds = [typing.get_origin(k) or k for k in kinds if k is not type(None)]
    if len(kinds) > 1 and str in kinds:       # the words an int or float option also takes
        kinds.remove(str)
    if len(kinds) != 1 or kinds[0] not in (int, float, str, bool, list, dict):
        raise TypeError(f"an option's annotation must be one of int, float, str, bool, list, "
                        f"dict (| None, | str for words), not {hint!r}")
    return kinds[0], nullable


class Options:
    """Base of the section classes: every option field is validated when an instance is made
    (ints become floats for a float option)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every option field (:class:`OptionError` naming the first invalid one)."""
        for f in option_fields(type(self)):
            object.__setattr__(self, f.name, f.metadata["option"].check(getattr(self, f.name)))


def section(name: str, *, spec: bool = True) -> Any:
    """Class decorator: a frozen, keyword-only dataclass whose :func:`option` fields are the
    options ``<name>.<field>``, registered in :data:`OPTIONS` (and the class in
    :data:`SPEC_SECTIONS` with ``spec``: a section of the job spec)."""

    def wrap(cls: type) -> type:
        hints = typing.get_type_hints(cls)
        for field_name in cls.__dict__.get("__annotations__", {}):
            declared = cls.__dict__.get(field_name)
            if not isinstance(declared, _Declared):
                continue
            kind, nullable = _option_type(hints[field_name])
            opt = Option(f"{name}.{field_name}", kind, declared.default,
                         nullable=nullable or declared.default is None, **declared.rules)
            if opt.key in OPTIONS:
                raise TypeError(f"option {opt.key} is declared twice")
            OPTIONS[opt.key] = opt
            setattr(cls, field_name, opt.field())
        cls = dataclass(frozen=True, kw_only=True)(cls)
        if spec:
            SPEC_SECTIONS[name] = cls
        return cls

    return wrap


def option_fields(cls: type, *, cli: bool | None = None,
                  spec: bool | None = None) -> list[dataclasses.Field]:
    """The option fields of a dataclass (those on the command line / in the job spec only)."""
    found = []
    for f in dataclasses.fields(cls):
        opt = f.metadata.get("option")
        if opt is None or (cli is not None and opt.cli != cli) or \
                (spec is not None and opt.spec != spec):
            continue
        found.append(f)
    return found


def option_values(obj: Any, cls: type | None = None, *, result: bool | None = None
                  ) -> dict[str, Any]:
    """``{field: value}`` of the option fields of ``obj`` (those of ``cls`` only, e.g. the
    training options of a :class:`CnnSection`; those that decide results only)."""
    return {f.name: getattr(obj, f.name) for f in option_fields(cls or type(obj))
            if result is None or f.metadata["option"].result == result}


def check(key: str, value: Any) -> Any:
    """``value`` validated as option ``key`` (see :meth:`Option.check`)."""
    return OPTIONS[key].check(value)


def default(key: str) -> Any:
    """The default of option ``key`` (a fresh copy of a list)."""
    value = OPTIONS[key].default
    return type(value)(value) if isinstance(value, (list, dict)) else value


def setting(key: str) -> str:
    """Option ``key`` named inside another message (a hint in an error stored in ``errors/``, a
    warning) so that it reads right wherever the user set it: ``--max-seconds
    (featurize.max_seconds)``; the flag alone for an option of the command line only, the key
    alone for one of the job spec only. (For an error about the option's own value, raise
    :class:`OptionError`, which the command line and the job spec each name their way.)"""
    opt = OPTIONS[key]
    if opt.cli and opt.spec:
        return f"{opt.flag_name} ({opt.key})"
    return opt.flag_name if opt.cli else opt.key


# ------------------------------------------------------------------------------- choices

#: What the featurize stage can write; splits, scalers, searches, optimisers, cluster kinds.
FEATURIZE_OUTPUTS = ("features", "spectrograms")
#: Where the featurize job computes log-mels: librosa on the CPU (the reference) or torch on the
#: workers' CUDA device (:mod:`fmadask.torchmel`).
MEL_DEVICES = ("cpu", "cuda")
#: FMA's audio archives: its nested subsets, smallest first (choosing one includes every
#: smaller one), then ``full`` (untrimmed audio of every track); :mod:`fmadask.fma.layout`.
AUDIO_SUBSETS = ("small", "medium", "large", "full")
#: How tracks are split into training, validation and test (:mod:`fmadask.fma.splits`): FMA's
#: own split, or the study's stratified 80/10/10, seeded by ``data.seed`` (the study's seed).
SPLIT_METHODS = ("official", "stratified")
SPLIT_SEED = 42
SCALERS = ("minmax", "standard")
#: 'balanced': every genre weighs the same in the loss (unbalanced subsets such as FMA medium).
CLASS_WEIGHTS = ("none", "balanced")
SEARCHES = ("none", "random", "bayes")
OPTIMIZERS = ("adamw", "adam")
LR_SCHEDULES = ("onecycle", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
#: ``[cluster] kind``: a cluster fmadask starts (:data:`fmadask.cluster.STARTED_KINDS`), or
#: the scheduler at ``address``.
CLUSTER_KINDS = ("local", "address", "slurm", "kubernetes")
#: CNN architectures by name (built by :func:`fmadask.dl.nets.build_net`).
ARCHS = ("naive", "naive_bn", "shortchunk_res", "vgg_gap")


# ------------------------------------------------------------------------------ sections


@section("job")
class JobOptions(Options):
    """``[job]``: what the run is called."""

    name: str = option("", "name shown in logs (default: the spec file's stem)", cli=False)
    description: str = option("", cli=False)


@section("data")
class DataOptions(Options):
    """``[data]``: which FMA tracks, their labels and split."""

    dir: str = option(MISSING, "FMA data folder holding fma_metadata/ and fma_<subset>/",
                      path=True, cli=False)
    subset: str = option("small", "FMA subset (medium includes small)", choices=AUDIO_SUBSETS,
                         metavar="NAME")
    split: str = option("official", "FMA's ('set', 'split') or the study's stratified 80/10/10",
                        choices=SPLIT_METHODS, metavar="NAME")
    seed: int = option(SPLIT_SEED, "seed of the stratified split", flag="--split-seed",
                       metavar="K", **SEED_RANGE)
    storage_options: dict = option(
        {}, "fsspec options of a URL data folder (credentials, endpoint_url ...); besides them "
        "the environment's AWS_* apply", flag="--storage-option", metavar="KEY=VALUE",
        cli_help="fsspec option of s3://, gs://, https:// ... locations, e.g. "
                 "endpoint_url=http://minio:9000 or anon=true (repeatable; dotted keys nest: "
                 "client_kwargs.region_name=eu-west-1). Credentials also come from the "
                 "environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL ...); never printed")
    generate_sample: bool = option(False, "write an FMA-shaped sample into dir if it has none",
                                   cli=False)
    sample_tracks_per_genre: int = option(10, "good clips per genre of the sample", minimum=3,
                                          maximum=10_000, flag="--tracks-per-genre",
                                          metavar="N")
    sample_seconds: float = option(30.0, "clip duration of the sample in seconds", minimum=1.0,
                                   maximum=600.0, flag="--seconds", metavar="S")
    sample_seed: int = option(0, "random seed of the sample", flag="--seed", metavar="K",
                              **SEED_RANGE)
    sample_overlap: float = option(
        0.0, "chance that each of a sample clip's harmony, timbre and mix comes from a random "
        "genre (its rhythm does at least 1 time in 4): higher makes genres harder to tell apart",
        minimum=0.0, maximum=1.0, flag="--overlap", metavar="P")


@section("cluster")
class ClusterOptions(Options):
    """``[cluster]``: where the work runs (where, never what: no option here is a result)."""

    kind: str = option("local", "where the work runs", choices=CLUSTER_KINDS, cli=False,
                       result=False)
    address: str = option("", "scheduler address for kind='address' (tcp://, tls://); empty: "
                          "Dask's 'scheduler-address' config / DASK_SCHEDULER_ADDRESS",
                          cli=False, result=False)
    workers: int = option(2, "Dask worker processes, on any kind of cluster (slurm: in jobs of "
                             "`processes` each; kubernetes: one per pod)", minimum=1,
                          maximum=100_000, metavar="N", result=False,
                          cli_help="start a Dask cluster of N worker processes (default 2)")
    threads_per_worker: int = option(1, "task threads per worker", minimum=1, maximum=1024,
                                     cli=False, result=False)
    memory: str = option("auto", "memory per worker process in Dask's syntax, e.g. '4GiB' "
                         "('auto': local, a share of the machine; slurm, 4GiB)", cli=False,
                         result=False, form=memory_size,
                         expected_text="'auto', a memory size such as '8GiB' or '4 GB', or a "
                                       "number of bytes")
    connect_timeout: float = option(10.0, "seconds to wait for a scheduler", minimum=0.1,
                                    maximum=3600.0, cli=False, result=False)
    worker_timeout: float = option(
        60.0, "seconds to wait for a first Dask worker when the cluster has none (a scheduler "
        "nobody started workers for, SLURM jobs still queued) before stopping in one line",
        minimum=0.1, maximum=7 * 24 * 3600.0, metavar="S", result=False)
    tls_ca_file: str = option("", "CA certificate (PEM) for tls:// addresses", path=True,
                              flag="--tls-ca", metavar="PEM", result=False,
                              cli_help="CA certificate for a tls:// scheduler")
    tls_cert: str = option("", "client certificate (PEM)", path=True, metavar="PEM",
                           result=False, cli_help="client certificate for a tls:// scheduler")
    tls_key: str = option("", "client private key (PEM)", path=True, metavar="PEM",
                          result=False, cli_help="client private key for a tls:// scheduler")
    queue: str = option("", "slurm: partition (default: jobqueue.slurm config)", cli=False,
                        result=False)
    account: str = option("", "slurm: account (default: jobqueue.slurm config)", cli=False,
                          result=False)
    walltime: str = option("04:00:00", "slurm: walltime of each worker job, [D-]HH:MM:SS",
                           form=walltime, cli=False, result=False,
                           expected_text="a walltime [D-]HH:MM:SS such as 04:00:00")
    cores: int = option(1, "slurm: CPU cores of each worker job", minimum=1, maximum=4096,
                        cli=False, result=False)
    processes: int = option(1, "slurm: worker processes in each job (they share its cores)",
                            minimum=1, maximum=4096, cli=False, result=False)
    lifetime: float | str = option(
        "auto", "slurm: seconds a worker lives before it retires and a new job replaces it "
        "('auto': the walltime less a margin; 'none': until SLURM ends the job)",
        minimum=10.0, maximum=366 * 24 * 3600.0, words=("auto", "none"), cli=False, result=False)
    job_directives: list[str] = option([], "slurm: extra #SBATCH directives of each worker job, "
                                       "e.g. [\"--gres=gpu:1\", \"--exclusive\"]", cli=False,
                                       result=False)
    image: str = option("", "kubernetes: container image of scheduler and workers", cli=False,
                        result=False)
    namespace: str = option("", "kubernetes: namespace (default: the current context's)",
                            cli=False, result=False)
    cluster_spec: str = option("", "kubernetes: a DaskCluster manifest to start", path=True,
                               cli=False, result=False)


@section("featurize", spec=False)
class FeaturizeOptions(Options):
    """The featurize stage's options (``[featurize]``, ``fmadask featurize``)."""

    sr: int | str = option("native", "'native' (FMA-compatible) or a rate in Hz, e.g. 22050",
                           minimum=1000, maximum=192_000, words=("native",),
                           expected_text="'native' or a rate in Hz such as 22050",
                           metavar="native|HZ",
                           cli_help="decode at the file's native rate ('native', as FMA) or "
                                    "resample to this rate in Hz, e.g. 22050")
    what: list[str] = option(["features", "spectrograms"],
                             "features, spectrograms or both (each track is decoded once)",
                             choices=FEATURIZE_OUTPUTS, metavar="LIST")
    partition_size: int = option(64, "tracks per Dask partition (one task each)", minimum=1,
                                 maximum=1_000_000, metavar="K")
    max_seconds: float | str = option(
        1200.0, "refuse longer tracks, recorded in errors/ (default {default}; 'none': no limit)",
        minimum=1.0, maximum=7 * 24 * 3600.0, words=("none",), metavar="S")
    mel_device: str = option("cpu", "compute log-mels with librosa on the CPU or with torch on "
                             "the workers' GPU (only GPU workers then take partitions)",
                             choices=MEL_DEVICES, metavar="D")


@section("featurize")
class FeaturizeSection(FeaturizeOptions):
    """``[featurize]``: decode every mp3 to the 518 FMA features and log-mel spectrograms."""

    enabled: bool = option(True, "run this stage", cli=False, result=False)


@section("classical", spec=False)
class ClassicalOptions(Options):
    """The classical stage's options (``[classical]``, ``fmadask train``)."""

    models: list[str] = option(
        ["all"], "model names, or ['all'] for the study's ten", metavar="NAMES",
        cli_help="comma-separated model names or 'all': logistic_regression, decision_tree, "
                 "random_forest, svc, nusvc, linear_svc, gradient_boosting, extra_trees, "
                 "xgboost, adaboost")
    scaler: str = option("minmax", "feature scaling (min-max is the study's)", choices=SCALERS,
                         metavar="NAME")
    search: str = option("none", "hyper-parameter search: random or Bayesian (Optuna TPE), both "
                         "with successive halving and resumable (the study's: random)",
                         choices=SEARCHES, metavar="NAME")
    search_models: list[str] = option(["xgboost"], "models the search tunes (the study: XGBoost)",
                                      metavar="NAMES",
                                      cli_help="models to tune, comma-separated or 'all'")
    n_iter: int = option(20, "parameter settings the search tries per model", minimum=1,
                         maximum=100_000, metavar="N")
    cv: int = option(5, "stratified folds of the search", minimum=2, maximum=100, metavar="K")
    scale_threshold: int = option(
        10_000, "training rows past which the scale rule swaps the models whose cost grows "
        "fastest for ones that grow about as n log n (0: always; FMA small's 6,400 rows stay "
        "below the default, so the study's exact models run there)", minimum=0,
        maximum=10**9, metavar="ROWS")
    class_weight: str = option("none", "'balanced' weights every genre the same in training "
                               "(unbalanced subsets such as FMA medium)", choices=CLASS_WEIGHTS,
                               metavar="NAME")
    distributed_xgb: bool = option(False, "train XGBoost through xgboost.dask",
                                   cli_help="train XGBoost with xgboost.dask across all workers "
                                            "(FMA large)")
    unsupervised: bool = option(True, "also draw the PCA, t-SNE and K-means views",
                                cli_help="skip the PCA, t-SNE and K-means pictures")
    seed: int = option(0, "random seed of the models, the search and the views", metavar="K",
                       **SEED_RANGE)


@section("classical")
class ClassicalSection(ClassicalOptions):
    """``[classical]``: scaling, the ten scikit-learn/XGBoost models, the XGBoost search."""

    enabled: bool = option(True, "run this stage", cli=False, result=False)


@section("cnn", spec=False)
class CnnOptions(Options):
    """The options of one CNN training run (``[cnn]``, ``fmadask cnn``, ``python -m
    fmadask.dl.trainer``); :class:`fmadask.dl.config.TrainConfig` inherits them."""

    arch: str = option("vgg_gap", "net architecture (the study's: naive, naive_bn)", choices=ARCHS,
                       spec=False, metavar="A")
    epochs: int = option(20, "maximum epochs", minimum=1, maximum=100_000, metavar="N")
    segment_seconds: float = option(3.0, "training segment length in seconds", minimum=0.1,
                                    maximum=60.0, metavar="S")
    crops: int = option(3, "random training segments per clip and epoch (the study's: 1)",
                        minimum=1, maximum=1000, metavar="N")
    restarts: int = option(3, "times in a row a training whose worker left (a walltime, a lost "
                           "node) goes on from its last checkpoint on other workers",
                           minimum=0, maximum=1000, metavar="N", result=False)
    batch_size: int = option(32, "segments per rank per step", minimum=1, maximum=65_536,
                             metavar="B")
    lr: float = option(1e-3, "peak learning rate", minimum=1e-9, maximum=10.0, metavar="LR")
    weight_decay: float = option(1e-4, "weight decay (decoupled for AdamW)", minimum=0.0,
                                 maximum=1.0, metavar="WD")
    optimizer: str = option("adamw", "'adam' is the study's", choices=OPTIMIZERS,
                            metavar="NAME")
    lr_schedule: str = option("onecycle", "learning-rate schedule", choices=LR_SCHEDULES,
                              metavar="NAME")
    patience: int = option(5, "early stopping: epochs without a better validation loss",
                           minimum=1, maximum=100_000, metavar="N")
    # The recipe of new work (fmadask.dl.augment), chosen on validation: random gain and label
    # smoothing; masks and mixup cost validation accuracy within 20 epochs (README, "The CNN
    # recipe and the fusion"), so they are off unless asked for. The paper job sets all to 0.
    gain_db: float = option(6.0, "augmentation: random gain up to +-DB dB (0 off)", minimum=0.0,
                            maximum=60.0, metavar="DB")
    masks: int = option(0, "augmentation: N SpecAugment frequency and N time masks (0 off)",
                        minimum=0, maximum=64, metavar="N")
    mixup: float = option(0.0, "augmentation: mixup Beta(ALPHA, ALPHA) (0 off)", minimum=0.0,
                          maximum=100.0, metavar="ALPHA")
    label_smoothing: float = option(0.1, "label smoothing (0 off)", minimum=0.0, maximum=0.99,
                                    metavar="EPS")
    ema: float = option(0.0, "evaluate and keep an exponential moving average of the weights, "
                        "updated each step with this decay, e.g. 0.99 (0 off)", minimum=0.0,
                        maximum=0.99999, metavar="DECAY")
    width: int | None = option(None, "channel width (default: the net's)", minimum=1,
                               maximum=4096, metavar="C")
    seed: int = option(0, "seed of initial weights, shuffling and segment offsets", metavar="K",
                       **SEED_RANGE)
    # Where the ranks run; fmadask cnn chooses it with --gpu instead.
    device: str = option("auto", "'cuda' for GPU workers (NCCL)", choices=DEVICES,
                         result=False, metavar="DEVICE")
    # Where each host keeps the shards of a run folder in object storage (fmadask.shardcache);
    # neither changes results, only where and how much is cached.
    cache_dir: str = option("", "local folder of each host's cache of spectrogram shards read "
                            "from object storage (default: $FMADASK_CACHE, else $XDG_CACHE_HOME/"
                            "fmadask/shards, else ~/.cache/fmadask/shards)", path=True,
                            result=False, metavar="DIR")
    cache_size: float = option(50.0, "GiB of shards each host's cache may hold; the least "
                               "recently used go first", minimum=0.001, maximum=1e6,
                               result=False, metavar="GIB")


@section("cnn", spec=False)
class CnnRunOptions(Options):
    """``fmadask cnn``'s own options (``fmadask run`` resumes an interrupted net by itself)."""

    resume: bool = option(False, "continue from the last checkpoint in the output folder",
                          spec=False)


@section("cnn")
class CnnSection(CnnOptions):
    """``[cnn]``: CNNs on log-mel spectrograms, PyTorch DDP on Dask workers."""

    enabled: bool = option(True, "run this stage", cli=False, result=False)
    archs: list[str] = option(["vgg_gap"], "nets to train, one after the other",
                              cli=False)
    ranks: int | None = option(None, "DDP processes, one per Dask worker (default: every worker)",
                               minimum=1, maximum=100_000, metavar="R",
                               cli_help="DDP ranks, one per worker (default: every worker, or "
                                        "--workers)")


@section("fusion", spec=False)
class FusionOptions(Options):
    """The fusion stage's options (``[fusion]``)."""

    classical: str = option("", "classical model folder name (default: the best)", cli=False)
    cnn: str = option("", "CNN architecture (default: the best on validation)", cli=False)


@section("fusion")
class FusionSection(FusionOptions):
    """``[fusion]``: pool the best classical model and the best CNN (weight fitted on
    validation); runs when both stages are on."""

    enabled: bool = option(True, "run this stage", cli=False, result=False)


@section("output")
class OutputOptions(Options):
    """``[output]``: the run directory."""

    dir: str = option(MISSING, "run directory (local path or fsspec URL)", path=True, cli=False)
    overwrite: bool = option(False, "redo stages whose outputs were made with other parameters, "
                             "deleting only files fmadask wrote (default: refuse)",
                             cli_help="delete the files RUN_DIR's previous featurize run wrote "
                                      "(and only those) and start afresh")


@section("sample", spec=False)
class SampleOptions(Options):
    """``fmadask sample``'s own options (its sizes are ``data.sample_*``)."""

    force: bool = option(False, "write into a folder that is not empty (files of the sample's "
                         "names are replaced)", spec=False)
    processes: int = option(0, "processes writing clips at once (0: one per CPU core); the "
                            "files are the same whatever it is", minimum=0, maximum=4096,
                            spec=False, metavar="N")


@section("predict", spec=False)
class PredictOptions(Options):
    """``fmadask predict``'s own options."""

    top: int = option(3, "genres to show per file", minimum=1, maximum=1000, spec=False,
                      metavar="N")
