"""Options: one definition of each setting, shared by the command line and the job spec.

Each :class:`Option` has its type, default, range (floats must also be finite), allowed choices
and help text, under the job spec's ``section.key`` name. ``fmadask.cli`` builds its flags from
them (:func:`add_option`), ``fmadask.jobspec`` its sections (:func:`spec_field`), and both run
the same validator (:meth:`Option.check`). An invalid value raises :class:`OptionError`, which
names the setting in the user's terms when printed: ``--partition-size`` on the command line,
``featurize.partition_size`` in a job spec, the parameter name elsewhere.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any

from fmadask.errors import ConfigError
from fmadask.fma.layout import AUDIO_SUBSETS

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
    """One setting: type, default, rules and help.

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
    expected_text : str
        What a valid value looks like, when the type's name does not say it well.
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
    expected_text: str = ""

    def check(self, value: Any) -> Any:
        """``value`` validated (ints become floats for a float option), or :class:`OptionError`."""
        if isinstance(value, str) and value in self.words:
            return value
        if value is None:
            if self.nullable or self.default is None:
                return None
            raise OptionError(self.key, f"must be {self.expected()}, not nothing")
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
            raise OptionError(self.key, f"must be at least {self.minimum:g}, not {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise OptionError(self.key, f"must be at most {self.maximum:g}, not {value!r}")
        self._check_choice(value)
        return value

    def parse(self, text: str) -> Any:
        """A command-line string converted to the option's type, then :meth:`check`-ed."""
        if text in self.words:
            return text
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


#: What the featurize stage can write; splits, scalers, searches, optimisers, cluster kinds.
FEATURIZE_OUTPUTS = ("features", "spectrograms")
#: Where the featurize job computes log-mels: librosa on the CPU (the reference) or torch on the
#: workers' CUDA device (:mod:`fmadask.torchmel`).
MEL_DEVICES = ("cpu", "cuda")
SPLITS = ("official", "stratified")
SCALERS = ("minmax", "standard")
#: 'balanced': every genre weighs the same in the loss (unbalanced subsets such as FMA medium).
CLASS_WEIGHTS = ("none", "balanced")
SEARCHES = ("none", "random", "bayes")
OPTIMIZERS = ("adamw", "adam")
LR_SCHEDULES = ("onecycle", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
CLUSTER_KINDS = ("local", "address", "slurm", "kubernetes")


def _options(*options: Option) -> dict[str, Option]:
    return {o.key: o for o in options}


#: Every option, by ``section.key``. The job spec's sections hold the keys of their section
#: (``predict.*`` and a few ``cnn.*`` keys exist on the command line only).
OPTIONS: dict[str, Option] = _options(
    Option("job.name", str, "", "name shown in logs (default: the spec file's stem)"),
    Option("job.description", str, ""),
    Option("data.dir", str, MISSING, "FMA data folder holding fma_metadata/ and fma_<subset>/",
           path=True),
    Option("data.subset", str, "small", "FMA subset (medium includes small)",
           choices=AUDIO_SUBSETS),
    Option("data.split", str, "official",
           "FMA's ('set', 'split') or the study's stratified 80/10/10", choices=SPLITS),
    Option("data.seed", int, 42, "seed of the stratified split"),
    Option("data.storage_options", dict, {}, "fsspec options of a URL data folder "
           "(credentials, endpoint_url ...); besides them the environment's AWS_* apply"),
    Option("data.generate_sample", bool, False,
           "write an FMA-shaped sample into dir if it has none"),
    Option("data.sample_tracks_per_genre", int, 10, "good clips per genre of the sample",
           minimum=3, maximum=10_000),
    Option("data.sample_seconds", float, 30.0, "clip duration of the sample in seconds",
           minimum=1.0, maximum=600.0),
    Option("data.sample_seed", int, 0, "random seed of the sample"),
    Option("cluster.kind", str, "local", "where the work runs", choices=CLUSTER_KINDS),
    Option("cluster.address", str, "", "scheduler address for kind='address' (tcp://, tls://); "
           "empty: Dask's 'scheduler-address' config / DASK_SCHEDULER_ADDRESS"),
    Option("cluster.workers", int, 2, "worker processes (local), jobs (slurm) or pods",
           minimum=1, maximum=100_000),
    Option("cluster.threads_per_worker", int, 1, "task threads per worker",
           minimum=1, maximum=1024),
    Option("cluster.memory", str, "auto", "memory per worker in Dask's syntax, e.g. '8GiB'"),
    Option("cluster.connect_timeout", float, 10.0, "seconds to wait for a scheduler",
           minimum=0.1, maximum=3600.0),
    Option("cluster.tls_ca_file", str, "", "CA certificate (PEM) for tls:// addresses",
           path=True),
    Option("cluster.tls_cert", str, "", "client certificate (PEM)", path=True),
    Option("cluster.tls_key", str, "", "client private key (PEM)", path=True),
    Option("cluster.queue", str, "", "slurm: partition (default: jobqueue.slurm config)"),
    Option("cluster.account", str, "", "slurm: account (default: jobqueue.slurm config)"),
    Option("cluster.walltime", str, "", "slurm: job walltime, e.g. '04:00:00'"),
    Option("cluster.image", str, "", "kubernetes: container image of scheduler and workers"),
    Option("cluster.namespace", str, "", "kubernetes: namespace (default: the current "
           "context's)"),
    Option("cluster.cluster_spec", str, "", "kubernetes: a DaskCluster manifest to start",
           path=True),
    Option("featurize.enabled", bool, True),
    Option("featurize.sr", int, "native", "'native' (FMA-compatible) or a rate in Hz, e.g. 22050",
           minimum=1000, maximum=192_000, words=("native",),
           expected_text="'native' or a rate in Hz such as 22050"),
    Option("featurize.what", list, ["features", "spectrograms"],
           "features, spectrograms or both (each track is decoded once)",
           choices=FEATURIZE_OUTPUTS),
    Option("featurize.partition_size", int, 64, "tracks per Dask partition (one task each)",
           minimum=1, maximum=1_000_000),
    Option("featurize.max_seconds", float, 1200.0,
           "refuse longer tracks, recorded in errors/ (default {default}; 'none': no limit)",
           minimum=1.0, maximum=7 * 24 * 3600.0, words=("none",)),
    Option("featurize.mel_device", str, "cpu",
           "compute log-mels with librosa on the CPU or with torch on the workers' GPU (only GPU "
           "workers then take partitions)", choices=MEL_DEVICES),
    Option("classical.enabled", bool, True),
    Option("classical.models", list, ["all"], "model names, or ['all'] for the study's ten"),
    Option("classical.scaler", str, "minmax", "feature scaling (min-max is the study's)",
           choices=SCALERS),
    Option("classical.search", str, "none", "hyper-parameter search: random or Bayesian (Optuna "
           "TPE), both with successive halving and resumable (the study's: random)",
           choices=SEARCHES),
    Option("classical.search_models", list, ["xgboost"],
           "models the search tunes (the study: XGBoost)"),
    Option("classical.n_iter", int, 20, "parameter settings the search tries per model",
           minimum=1, maximum=100_000),
    Option("classical.cv", int, 5, "stratified folds of the search", minimum=2, maximum=100),
    Option("classical.class_weight", str, "none", "'balanced' weights every genre the same in "
           "training (unbalanced subsets such as FMA medium)", choices=CLASS_WEIGHTS),
    Option("classical.distributed_xgb", bool, False, "train XGBoost through xgboost.dask"),
    Option("classical.unsupervised", bool, True, "also draw the PCA, t-SNE and K-means views"),
    Option("classical.seed", int, 0, "random seed of the models, the search and the views"),
    Option("cnn.enabled", bool, True),
    Option("cnn.archs", list, ["naive", "naive_bn"], "nets to train, one after the other"),
    Option("cnn.arch", str, "naive", "net architecture"),
    Option("cnn.epochs", int, 20, "maximum epochs", minimum=1, maximum=100_000),
    Option("cnn.ranks", int, None, "DDP processes, one per Dask worker (default: every worker)",
           minimum=1, maximum=100_000),
    Option("cnn.batch_size", int, 32, "segments per rank per step", minimum=1, maximum=65_536),
    Option("cnn.lr", float, 1e-3, "peak learning rate", minimum=1e-9, maximum=10.0),
    Option("cnn.weight_decay", float, 1e-4, "weight decay (decoupled for AdamW)",
           minimum=0.0, maximum=1.0),
    Option("cnn.optimizer", str, "adamw", "'adam' is the study's", choices=OPTIMIZERS),
    Option("cnn.lr_schedule", str, "onecycle", "learning-rate schedule", choices=LR_SCHEDULES),
    Option("cnn.patience", int, 5, "early stopping: epochs without a better validation loss",
           minimum=1, maximum=100_000),
    Option("cnn.segment_seconds", float, 3.0, "training segment length in seconds",
           minimum=0.1, maximum=60.0),
    Option("cnn.width", int, None, "channel width (default: the net's)", minimum=1,
           maximum=4096),
    Option("cnn.device", str, "auto", "'cuda' for GPU workers (NCCL)", choices=DEVICES),
    Option("cnn.seed", int, 0, "seed of initial weights, shuffling and segment offsets"),
    # Where each host keeps the shards of a run folder in object storage (fmadask.shardcache);
    # neither changes results, only where and how much is cached.
    Option("cnn.cache_dir", str, "", "local folder of each host's cache of spectrogram shards "
           "read from object storage (default: $FMADASK_CACHE, else $XDG_CACHE_HOME/fmadask/"
           "shards, else ~/.cache/fmadask/shards)", path=True),
    Option("cnn.cache_size", float, 50.0, "GiB of shards each host's cache may hold; the least "
           "recently used go first", minimum=0.001, maximum=1e6),
    # The recipe of new work (fmadask.dl.augment), chosen on validation: random gain and label
    # smoothing; masks and mixup cost validation accuracy within 20 epochs (README, "The CNN
    # recipe and the fusion"), so they are off unless asked for. The paper job sets all to 0.
    Option("cnn.gain_db", float, 6.0, "augmentation: random gain up to +-DB dB (0 off)",
           minimum=0.0, maximum=60.0),
    Option("cnn.masks", int, 0, "augmentation: N SpecAugment frequency and N time masks (0 off)",
           minimum=0, maximum=64),
    Option("cnn.mixup", float, 0.0, "augmentation: mixup Beta(ALPHA, ALPHA) (0 off)",
           minimum=0.0, maximum=100.0),
    Option("cnn.label_smoothing", float, 0.1, "label smoothing (0 off)", minimum=0.0,
           maximum=0.99),
    Option("fusion.enabled", bool, True),
    Option("fusion.classical", str, "", "classical model folder name (default: the best)"),
    Option("fusion.cnn", str, "", "CNN architecture (default: the best on validation)"),
    Option("output.dir", str, MISSING, "run directory (local path or fsspec URL)", path=True),
    Option("output.overwrite", bool, False, "redo stages whose outputs were made with other "
           "parameters, deleting only files fmadask wrote (default: refuse)"),
    Option("sample.force", bool, False, "write into a folder that is not empty (files of the "
           "sample's names are replaced)"),
    Option("predict.top", int, 3, "genres to show per file", minimum=1, maximum=1000),
)


def check(key: str, value: Any) -> Any:
    """``value`` validated as option ``key`` (see :meth:`Option.check`)."""
    return OPTIONS[key].check(value)


def default(key: str) -> Any:
    """The default of option ``key`` (a fresh copy of a list)."""
    value = OPTIONS[key].default
    return type(value)(value) if isinstance(value, (list, dict)) else value


# ------------------------------------------------------------------------- command line


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def add_option(parser: argparse.ArgumentParser, key: str, *flags: str, help: str | None = None,
               **kwargs: Any) -> argparse.Action:
    """Add option ``key`` to ``parser`` with its default and help; :func:`resolve_options`
    validates it after parsing.

    ``flags`` default to ``--<key's name with dashes>``; ``help`` replaces the option's help;
    other keyword arguments go to ``add_argument`` (``dest``, ``metavar``, ``action`` ...). A
    boolean option becomes a ``store_true`` flag.
    """
    opt = OPTIONS[key]
    name = key.split(".", 1)[1]
    flags = flags or (f"--{name.replace('_', '-')}",)
    text = help or opt.help
    if opt.type is bool:
        kwargs.setdefault("action", "store_true")
    else:
        kwargs.setdefault("default", default(key))
        kwargs.setdefault("metavar", name.split("_")[-1].upper()[:1] or "X")
        shown = kwargs["default"]
        if "{default}" in text:
            text = text.replace("{default}", _shown(shown))
        elif shown is not None and "(default" not in text:
            text = f"{text} (default {_shown(shown)})"
    action = parser.add_argument(*flags, help=text, **kwargs)
    options = dict(parser.get_default("_options") or {})
    options[action.dest] = (key, action.option_strings[0] if action.option_strings else
                            action.dest)
    parser.set_defaults(_options=options)
    return action


def resolve_options(args: argparse.Namespace) -> argparse.Namespace:
    """Convert and validate the options :func:`add_option` added (raises :class:`OptionError`
    naming the flag)."""
    for dest, (key, flag) in (getattr(args, "_options", None) or {}).items():
        value = getattr(args, dest, None)
        try:
            if isinstance(value, str):
                setattr(args, dest, OPTIONS[key].parse(value))
            elif value is not None:
                setattr(args, dest, OPTIONS[key].check(value))
        except OptionError as exc:
            raise exc.named(flag) from None
    return args


def cli_name(args: argparse.Namespace, key: str) -> str:
    """The flag that sets option ``key`` in a parsed command line, else the key's name."""
    for option_key, flag in (getattr(args, "_options", None) or {}).values():
        if option_key == key:
            return flag
    return key.rsplit(".", 1)[-1]


# ----------------------------------------------------------------------------- job spec


def spec_field(key: str) -> Any:
    """A dataclass field of a job spec section with option ``key``'s default and rules."""
    opt = OPTIONS[key]
    meta = {"option": opt}
    if isinstance(opt.default, (list, dict)):
        return dataclasses.field(default_factory=lambda k=key: default(k), metadata=meta)
    return dataclasses.field(default=opt.default, metadata=meta)
