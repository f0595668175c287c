"""The classical stage: the study's ten models on the 518 features, their table and search.

``train()`` reads a features table (:mod:`fmadask.ml.data`), fits the scaler on the training split
with dask-ml on the cluster, fits every model as one Dask task, optionally searches
hyper-parameters (:mod:`fmadask.ml.search`) and refits the best, then writes::

    OUT_DIR/results.csv              one row per model (and per searched model)
    OUT_DIR/table.md                 the study's Table 1 layout
    OUT_DIR/confusion/<model>.png    test-split confusion matrices, normalised per true genre
    OUT_DIR/models/<model>/          saved pipelines (see fmadask.ml.persist)
    OUT_DIR/search/<model>-<method>.csv   every candidate of a search
    OUT_DIR/search/<model>-<method>-<key>/trial-NNNN.json   each finished trial (resume)
    OUT_DIR/unsupervised/            pca.png, tsne.png, kmeans.png, summary.json
    OUT_DIR/best.json                the model with the best validation accuracy
    OUT_DIR/train.json               parameters, data source, versions, timings

``OUT_DIR`` is ``RUN_DIR/classical`` for a run directory (the contract's layout).

``train()`` is a plan and its execution: :func:`~fmadask.ml.plan.plan_classical` (pure: which
estimator runs under each name after the scale rule, what is searched and which trials are
already finished, the record to write; from a :class:`~fmadask.ml.plan.ClassicalConfig`, the data
and :func:`~fmadask.ml.plan.read_classical_state`), then
:func:`~fmadask.ml.execute.execute_classical` (the lock, the cluster's work, the files).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fmadask.cluster import WORKER_TIMEOUT_S
from fmadask import storage
from fmadask.lock import hold
from fmadask.ml.data import Dataset, DatasetOptions, load_dataset
from fmadask.ml.execute import execute_classical
from fmadask.ml.plan import ClassicalConfig, output_folder, plan_classical, read_classical_state
from fmadask.logs import show_progress
from fmadask.runfolder import CLASSICAL_DIR, JOB_FILE

logger = logging.getLogger(__name__)


def default_out_dir(source: str | Path) -> str | Path:
    """``RUN_DIR/classical`` for a run directory (a path, or a URL for a URL), else
    ``./classical``."""
    if storage.is_remote(source):
        return storage.join(source, CLASSICAL_DIR)
    path = Path(source)
    if (path / JOB_FILE).is_file():
        return path / CLASSICAL_DIR
    if path.name == "features" and (path.parent / JOB_FILE).is_file():
        return path.parent / CLASSICAL_DIR
    return Path(CLASSICAL_DIR)


def train(source: str | Path | Dataset, out_dir: str | Path | None = None,
          config: ClassicalConfig | None = None, client: Any = None, *,
          data: DatasetOptions | None = None, scheduler: str | None = None,
          workers: int | None = None, worker_timeout: float = WORKER_TIMEOUT_S,
          progress: bool = True,
          storage_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Train, score and save the study's classical models; write their table and figures.

    Parameters
    ----------
    source : str, Path or Dataset
        A featurize run directory, or FMA's ``features.csv`` (its folder, or the data folder);
        see :func:`fmadask.ml.data.load_dataset`. A :class:`~fmadask.ml.data.Dataset` is used as
        it is (``data`` is then ignored).
    out_dir : str or Path, optional
        Where to write (default :func:`default_out_dir`: ``RUN_DIR/classical``).
    config : ClassicalConfig, optional
        The stage's settings (default ``ClassicalConfig()``): the models, the scaler, the
        search (random or Bayesian, of the ``search_models``, scored by balanced accuracy when
        the genres are unbalanced), the class weights, the scale rule's threshold, per-model
        ``model_params`` and ``search_spaces`` ...; see :class:`ClassicalConfig` and
        :class:`~fmadask.options.ClassicalOptions` for each.
    client : distributed.Client, optional
        Cluster to run on. Without one, :func:`fmadask.cluster.get_client` connects to
        ``scheduler`` or starts a local cluster of ``workers`` processes, after the options and
        the data have been checked.
    data : DatasetOptions, optional
        The split (FMA's, or the study's stratified 80/10/10 and its seed) and, for FMA's
        ``features.csv``, the subset (:class:`~fmadask.ml.data.DatasetOptions`).
    scheduler, workers : optional
        Where to run when no ``client`` is given (see above).
    worker_timeout : float
        Seconds to wait for a first worker of a cluster that has none, when no ``client`` is
        given (:func:`fmadask.cluster.await_workers`).
    progress : bool
        Print a line per finished model.
    storage_options : mapping, optional
        fsspec options when ``source`` or ``out_dir`` is a URL. Outputs for a URL are written
        into a local temporary folder and uploaded when the stage is done, each file whole and
        the model cards and ``train.json`` last.

    Returns
    -------
    pandas.DataFrame
        results.csv's rows: ``model`` (folder name under ``models/``), ``name``, ``label``,
        ``search``, ``validation_*``/``test_*`` accuracy, balanced accuracy, F1 macro and
        weighted, ``cv_score`` (the search's best, scored by ``search_score``), ``runs_as``
        (the estimator that ran under ``name``), ``class_weight``, ``n_train``,
        ``fit_seconds``, ``worker``, ``params`` (JSON), ``error``.

    Raises
    ------
    DataError
        The source cannot be read (see :func:`~fmadask.ml.data.load_dataset`).
    """
    config = config or ClassicalConfig()
    data = data or DatasetOptions()
    if isinstance(source, Dataset):
        dataset = source
    else:
        dataset = load_dataset(source, split=data.split, split_seed=data.seed,
                               subset=data.subset, storage_options=storage_options,
                               target=data.target)
    out = output_folder(out_dir if out_dir is not None
                        else default_out_dir(dataset.info.get("path", ".")))
    owner = lock_owner(source, out, storage_options)
    with hold([owner, out], "fmadask train", storage_options):
        # Read and planned under the lock that execute_classical takes again: no other writer
        # changes the trials between the plan and its execution.
        state = read_classical_state(out)
        plan = plan_classical(config, dataset, state, out=out, owner=owner)
        return execute_classical(plan, dataset, client, scheduler=scheduler, workers=workers,
                                 worker_timeout=worker_timeout, log=ProgressLog(progress),
                                 storage_options=storage_options)


def lock_owner(source: str | Path | Dataset, out: str | Path,
           storage_options: Mapping[str, Any] | None) -> str | Path:
    """The folder whose lock the stage holds besides the output folder's: the featurize run it
    reads (a re-featurize would change the features under it), or the output folder when the
    features are FMA's own."""
    run_dir = storage.resolve(source) if not isinstance(source, Dataset) else None
    if run_dir is not None and storage.isfile(storage.join(run_dir, JOB_FILE),
                                               storage_options):
        return run_dir
    return out


class ProgressLog:
    """The stage's progress lines: INFO records of this module's logger (``fmadask`` shows them
    on stderr), or nothing when progress is off."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        if enabled:
            show_progress(defer_to_root=True)

    def __call__(self, message: str) -> None:
        if self.enabled:
            logger.info(message)
