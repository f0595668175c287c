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

import datetime
import math
import re
from typing import Any

# The machinery the sections below are declared with; the rest of fmadask imports it from here
# (importing this module fills OPTIONS).
from fmadask.optionkit import (MISSING, OPTIONS, SPEC_SECTIONS, Option, OptionError,  # noqa: F401
                               Options, check, default, option, option_fields, option_values,
                               same_as, section, setting)


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
#: What the models learn (:mod:`fmadask.fma.labels`): one top-level genre per track (the study's
#: task; tracks with several have none and are left out), or FMA's multi-label task over every
#: genre id of ``genres_all`` (every track with a genre, with or without a ``genre_top``).
TARGETS = ("genre_top", "genres_all")
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
    target: str = option("genre_top", "what the models learn: one top-level genre per track, or "
                         "every genre of genres_all (multi-label; tracks without a genre_top "
                         "too)", choices=TARGETS, metavar="NAME")
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
    # A bounded look at a large data set (and the scale benchmark's CNN): the schedule spans
    # these steps, so the learning rate still warms up and decays.
    max_steps: int | None = option(None, "stop after N optimisation steps in all, the last "
                                   "epoch cut short there (default: every step of every epoch)",
                                   minimum=1, maximum=10**9, metavar="N", omit_default=True)
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
