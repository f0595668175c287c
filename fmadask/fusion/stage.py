"""``fmadask fuse RUN_DIR``: pool the best classical model and the best CNN of a run.

Sits above :mod:`fmadask.ml` and :mod:`fmadask.dl` (it imports both; neither imports it) and
reads what the two stages wrote:

- the classical model (``RUN_DIR/classical/best.json``'s, or one named) and the run's features,
  split as the classical stage split them (``classical/train.json``): its per-track class
  probabilities of the validation and test tracks;
- the CNN (the one of ``RUN_DIR/cnn/<arch>/`` with the best validation track accuracy, or one
  named): its per-track mean segment probabilities, ``predictions.parquet``.

On the tracks both parts scored, the pooling weight is fitted on validation only
(:func:`fmadask.fusion.pool.fit_weight`), then every part and the fusion are scored on validation
and test. Writes ``RUN_DIR/fusion/``::

    model.json            kind 'fusion', classes, weights, the parts' folders (below)
    parts/classical/      copies of the two models' files, so the fused model stays what it
    parts/cnn/            was when later runs replace the stages' outputs
    results.csv           one row per source (classical model, cnn, fusion): validation_accuracy,
                          test_accuracy, test_f1_macro, tracks
    weights.csv           the validation accuracy and log-loss of every candidate weight
    predictions.parquet   per track: split, genre_top, pred, p_<genre> of the fusion
    confusion_test.png    the fusion's test confusion matrix
    report.md             the table, the weight and the confusion matrix

Under the multi-label target (``genres_all``) both parts must have been trained for it; the
fitting, scoring and files are :mod:`fmadask.fusion.multilabel`'s. A part made for another
target is refused in one line.

A run folder in object storage (``s3://bucket/runs/r1``) is read by downloading what the fusion
needs into a local temporary folder laid out the same way -- the classical model's folder (its
``model.json`` checksums are verified when it is loaded), the CNNs' cards, and the chosen CNN's
weights (verified the same way) and ``predictions.parquet`` -- while the features are read from
the bucket itself. An output folder in object storage is written locally, then uploaded file by
file, ``report.md`` and ``model.json`` last.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmadask import storage
from fmadask.atomic import atomic_path, write_json
from fmadask.errors import DataError
from fmadask.fma.splits import EVAL_SPLITS
from fmadask.fusion.pool import fit_weight, pool, pool_labels
from fmadask.lock import hold
from fmadask.options import FusionOptions, setting
from fmadask.runfolder import (BEST_FILE, CLASSICAL_DIR, CNN_DIR, FUSION_DIR, MODEL_CARD,
                               MODELS_DIR, PARTS_DIR, PREDICTIONS_FILE, REPORT_FILE, RESULTS_FILE,
                               TRAIN_RECORD, WEIGHTS_TABLE, confusion_file, read_card)

MODEL_KIND = "fusion"
#: The targets (``[data] target``): one top-level genre per track, or every genre.
GENRE_TOP, GENRES_ALL = "genre_top", "genres_all"
PARTS = ("classical", "cnn")
#: Files uploaded after all others (a folder in object storage looks complete only then).
LAST = (REPORT_FILE, MODEL_CARD)
RESULT_COLUMNS = ("source", "model", "validation_accuracy", "test_accuracy", "test_f1_macro",
                  "validation_tracks", "test_tracks")


# ----------------------------------------------------------------------- reading the parts


def made_for(model_dir: Path) -> str:
    """The target a saved model learnt (``model.json``'s ``target``; before multi-label
    models, ``genre_top``)."""
    return read_card(model_dir).get("target", GENRE_TOP)


def _refuse_target(model_dir: Path, part: str, target: str) -> None:
    made = made_for(model_dir)
    if made != target:
        raise DataError(f"{model_dir}: the {part} was trained for target {made}, not {target}: "
                        f"train it with {setting('data.target')} {target}, or fuse with "
                        f"{made}")


def classical_model_dir(run_dir: Path, name: str | None = None,
                        target: str = GENRE_TOP) -> Path:
    """``RUN_DIR/classical/models/<name>``, or the stage's best model when ``name`` is None;
    refused when it was trained for another target."""
    stage = run_dir / CLASSICAL_DIR
    if name is None:
        best = stage / BEST_FILE
        if not best.is_file():
            raise DataError(f"{best} not found: run the classical stage first "
                            f"('fmadask train {run_dir}')")
        name = Path(json.loads(best.read_text())["path"]).name
    folder = stage / MODELS_DIR / name
    if not (folder / MODEL_CARD).is_file():
        raise DataError(f"no classical model {name!r} in {stage / MODELS_DIR}: name one of "
                        f"{', '.join(sorted(p.name for p in (stage / MODELS_DIR).glob('*'))) or 'none'}")
    _refuse_target(folder, "classical model", target)
    return folder


def cnn_model_dir(run_dir: Path, arch: str | None = None, target: str = GENRE_TOP) -> Path:
    """``RUN_DIR/cnn/<arch>`` (or ``RUN_DIR/cnn`` itself when the CNN was trained there), the one
    of ``target`` with the best validation track accuracy (multi-label: macro PR-AUC) when
    ``arch`` is None; refused when it was trained for another target."""
    stage = run_dir / CNN_DIR
    candidates = [p.parent for p in sorted(stage.glob(f"*/{MODEL_CARD}"))]
    if (stage / MODEL_CARD).is_file():
        candidates.append(stage)
    if arch is not None:
        candidates = [p for p in candidates if p.name == arch]
        for folder in candidates:
            _refuse_target(folder, "CNN", target)
    candidates = [p for p in candidates if made_for(p) == target]
    if not candidates:
        what = f"CNN {arch!r}" if arch else "CNN"
        raise DataError(f"no {what} trained for target {target} in {stage}: run the CNN stage "
                        f"first ('fmadask cnn {run_dir}'{'' if target == GENRE_TOP else ' --target ' + target})")

    def validation_accuracy(folder: Path) -> float:
        scores = read_card(folder).get("training", {})
        key = "track_acc_mean" if target == GENRE_TOP else "pr_auc_macro"
        return scores.get("scores", {}).get("validation", {}).get(key, -1.0)

    return max(candidates, key=validation_accuracy)


def classical_probabilities(run_dir: str | Path, model_dir: Path,
                            storage_options: Mapping[str, Any] | None = None
                            ) -> tuple[pd.DataFrame, list[str]]:
    """Per-track class scores of a classical model on the run's validation and test tracks
    (``run_dir`` may be a URL, read with ``storage_options``; ``model_dir`` is local).

    Returns
    -------
    frame : pandas.DataFrame
        Indexed by ``track_id``: ``split``, ``genre_top``, then one column per class.
    classes : list of str
    """
    from fmadask.ml.models import class_scores
    from fmadask.ml.persist import load_classical

    pipeline, card = load_classical(model_dir)
    dataset = classical_dataset(run_dir, storage_options)
    classes = list(card["classes"])
    mask = dataset.split.isin(EVAL_SPLITS).to_numpy()
    X = dataset.features.to_numpy(np.float32)[mask]
    scores, _ = class_scores(pipeline, X)
    frame = pd.DataFrame(scores, columns=classes, index=dataset.features.index[mask])
    frame.insert(0, "split", dataset.split[mask].to_numpy())
    frame.insert(1, "genre_top", dataset.genre[mask].to_numpy())
    return frame, classes


def classical_dataset(run_dir: str | Path, storage_options: Mapping[str, Any] | None = None,
                      target: str = GENRE_TOP) -> Any:
    """The run's features and labels for ``target``, split as featurize decided (the split the
    classical stage records in ``classical/train.json`` is checked against it)."""
    from fmadask.ml.data import load_dataset

    try:
        record = storage.read_bytes(storage.join(run_dir, CLASSICAL_DIR, TRAIN_RECORD),
                                    storage_options)
        data = json.loads(record).get("data", {})
    except FileNotFoundError:
        data = {}
    options = {"target": target} if target != GENRE_TOP else {}
    return load_dataset(run_dir, split=data.get("split"), split_seed=data.get("split_seed"),
                        storage_options=storage_options, **options)


def cnn_probabilities(model_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """Per-track mean segment probabilities the CNN stage stored (``predictions.parquet``)."""
    meta = read_card(model_dir)
    classes = list(meta["classes"])
    path = model_dir / PREDICTIONS_FILE
    if not path.is_file():
        raise DataError(f"{path} not found: the CNN stage did not finish; re-run it")
    preds = pd.read_parquet(path).set_index("track_id")
    frame = preds[["split", "genre_top"]].copy()
    for c in classes:
        frame[c] = preds[f"p_{c}"].astype(np.float64)
    return frame, classes


def align(first: pd.DataFrame, second: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tracks both parts scored, in the same split and with the same genre, same order."""
    common = first.index.intersection(second.index).sort_values()
    a, b = first.loc[common], second.loc[common]
    same = (a["split"].to_numpy() == b["split"].to_numpy()) & \
           (a["genre_top"].to_numpy() == b["genre_top"].to_numpy())
    if not same.any():
        raise DataError("the classical and the CNN stages share no validation or test track "
                        "(other splits or data?): run both on the same run folder and split")
    return a[same], b[same]


# ----------------------------------------------------------------------------- the stage


def fuse(run_dir: str | Path, config: FusionOptions | None = None,
         out_dir: str | Path | None = None,
         storage_options: Mapping[str, Any] | None = None,
         target: str = GENRE_TOP) -> pd.DataFrame:
    """Fit the fusion of a run's classical model and CNN on validation and write its folder.

    Parameters
    ----------
    run_dir : str or Path
        A run folder where the classical and the CNN stages have finished (a path, or a URL:
        see the module docstring).
    config : FusionOptions, optional
        Which parts to pool: ``classical``, the model folder name under ``classical/models``
        (default: ``best.json``'s), and ``cnn``, the architecture folder under ``cnn/``
        (default: the best validation track accuracy).
    out_dir : str or Path, optional
        Output folder (default ``RUN_DIR/fusion``; a URL is written locally and uploaded).
    storage_options : mapping, optional
        fsspec options of URL folders (never written anywhere).
    target : {'genre_top', 'genres_all'}
        The task both parts learnt (``genres_all``: :mod:`fmadask.fusion.multilabel`).

    Returns
    -------
    pandas.DataFrame
        The rows of ``results.csv`` (see the module docstring).

    Raises
    ------
    DataError
        A part is missing or was trained for another target, or the parts disagree on the
        classes or share no track.
    LockedError
        Another command is writing the run folder (its models could change under the fusion)
        or the output folder.
    """
    config = config or FusionOptions()
    run_dir = _local_or_url(run_dir)
    out = _local_or_url(out_dir if out_dir is not None else storage.join(run_dir, FUSION_DIR))
    parts = {"classical": config.classical or None, "cnn": config.cnn or None, "target": target}
    with hold([run_dir, out], "fmadask fuse", storage_options):
        return _fuse_to(run_dir, out, parts, storage_options)


def _fuse_to(run_dir: str | Path, out: str | Path, parts: dict[str, str | None],
             storage_options: Mapping[str, Any] | None) -> pd.DataFrame:
    """:func:`fuse` between resolved locations, under the run folder's lock; ``parts`` names
    the classical model, the CNN and the target."""
    with storage.staged(out, storage_options, last=LAST) as local_out:
        if isinstance(run_dir, Path):
            return _fuse(run_dir, run_dir, parts, local_out, None)
        with tempfile.TemporaryDirectory(prefix="fmadask-fuse-") as tmp:
            local_run = Path(tmp) / "run"
            try:
                _fetch_parts(run_dir, local_run, parts, storage_options)
                return _fuse(local_run, run_dir, parts, local_out, storage_options)
            except DataError as exc:     # name the bucket's folders, not the temporary copy
                raise DataError(str(exc).replace(str(local_run), storage.redact(run_dir))
                                ) from None


def _local_or_url(location: str | Path) -> str | Path:
    """A URL in object storage as a string; a path (or ``file://``) as a Path."""
    return storage.location(location)


def _fetch_parts(run_dir: str, local: Path, parts: dict[str, str | None],
                 storage_options: Mapping[str, Any] | None) -> None:
    """Download what :func:`fuse` reads of a run folder in object storage into ``local``, laid
    out as the run folder: ``classical/best.json`` and the classical model's folder, every
    CNN's ``model.json``, and the chosen CNN's weights and ``predictions.parquet``. Whatever is
    missing stays missing: the local readers then say what to run."""
    classical = parts["classical"]

    def copy(*parts: str) -> bool:
        try:
            storage.get_file(storage.join(run_dir, *parts), local.joinpath(*parts),
                             storage_options)
            return True
        except FileNotFoundError:
            return False

    if classical is None and copy(CLASSICAL_DIR, BEST_FILE):
        try:
            classical = Path(json.loads((local / CLASSICAL_DIR / BEST_FILE).read_text())
                             ["path"]).name
        except (ValueError, KeyError, TypeError):
            classical = None        # damaged: classical_model_dir says so
    if classical:
        try:
            storage.download_folder(storage.join(run_dir, CLASSICAL_DIR, MODELS_DIR, classical),
                                    local / CLASSICAL_DIR / MODELS_DIR / classical,
                                    storage_options)
        except FileNotFoundError:
            pass
    copy(CNN_DIR, MODEL_CARD)
    # Model folders only: a file there (a CNN trained into cnn/ itself) is no folder, and
    # fetching "<file>/model.json" would make a local folder of the file's name.
    files = storage.list_files(storage.join(run_dir, CNN_DIR), storage_options)
    for arch in storage.listdir(storage.join(run_dir, CNN_DIR), storage_options):
        if arch not in files:
            copy(CNN_DIR, arch, MODEL_CARD)
    try:
        chosen = cnn_model_dir(local, parts["cnn"], parts["target"])
    except DataError:
        return
    rel = chosen.relative_to(local).parts
    for name in _model_files(chosen)[1:] + [PREDICTIONS_FILE]:
        copy(*rel, *name.split("/"))


def _fuse(run_dir: Path, data_dir: str | Path, parts: dict[str, str | None], out: Path,
          storage_options: Mapping[str, Any] | None) -> pd.DataFrame:
    """:func:`fuse` on a local run folder (or a local copy of one, whose features are read from
    ``data_dir``), writing into the local folder ``out``."""
    target = parts["target"]
    dirs = {"classical": classical_model_dir(run_dir, parts["classical"], target),
            "cnn": cnn_model_dir(run_dir, parts["cnn"], target)}
    if target == GENRES_ALL:
        return _fuse_labels(run_dir, data_dir, dirs, out, storage_options)
    cls_frame, classes = classical_probabilities(data_dir, dirs["classical"], storage_options)
    cnn_frame, cnn_classes = cnn_probabilities(dirs["cnn"])
    if cnn_classes != classes:
        raise DataError(f"the classical model's classes {classes} differ from the CNN's "
                        f"{cnn_classes}: train both on the same run folder")
    cls_frame, cnn_frame = align(cls_frame, cnn_frame)
    labels = pd.Categorical(cls_frame["genre_top"], categories=classes).codes.astype(np.int64)
    split = cls_frame["split"].to_numpy()
    probs = {"classical": cls_frame[classes].to_numpy(np.float64),
             "cnn": cnn_frame[classes].to_numpy(np.float64)}
    val = split == "validation"
    # the weight sees the validation rows only; test rows are scored with it afterwards
    weight, trials = fit_weight(probs["classical"][val], probs["cnn"][val], labels[val])
    probs["fusion"] = pool([probs["classical"], probs["cnn"]], [weight, 1.0 - weight])

    names = {"classical": dirs["classical"].name, "cnn": dirs["cnn"].name,
             "fusion": f"{dirs['classical'].name} x {dirs['cnn'].name}"}
    results = pd.DataFrame([_result_row(source, names[source], probs[source], labels, split)
                            for source in ("classical", "cnn", "fusion")],
                           columns=list(RESULT_COLUMNS))
    preds = _predictions(cls_frame.index.to_numpy(), split, labels, probs["fusion"], classes)
    _write(out, dirs, _sources(run_dir, data_dir, dirs), classes, weight, trials, results, preds)
    return results


def _sources(run_dir: Path, data_dir: str | Path, dirs: dict[str, Path]) -> dict[str, str]:
    """Where each part came from, as a user names it (the bucket's URL for a local copy)."""
    return {p: (str(d) if data_dir == run_dir else
                storage.redact(storage.join(data_dir, *d.relative_to(run_dir).parts)))
            for p, d in dirs.items()}


def _copy_parts(out: Path, dirs: dict[str, Path]) -> None:
    """Copy the parts' model files into ``out/parts/<part>``: the fused model stays what it
    was when later runs replace the stages' outputs."""
    for part, src in dirs.items():
        for name in _model_files(src):
            with atomic_path(out / PARTS_DIR / part / name) as tmp:
                shutil.copyfile(src / name, tmp)


def _fuse_labels(run_dir: Path, data_dir: str | Path, dirs: dict[str, Path], out: Path,
                 storage_options: Mapping[str, Any] | None) -> pd.DataFrame:
    """:func:`_fuse` for the multi-label target (:mod:`fmadask.fusion.multilabel`)."""
    from fmadask.fusion import multilabel
    from fmadask.ml.multilabel import label_probabilities
    from fmadask.ml.persist import load_classical

    pipeline, card = load_classical(dirs["classical"], GENRES_ALL)
    multilabel.check_labels(card["label_ids"], read_card(dirs["cnn"]).get("label_ids", []))
    dataset = classical_dataset(data_dir, storage_options, GENRES_ALL)
    multilabel.check_labels(card["label_ids"], dataset.label_ids)
    classes = list(card["classes"])
    cnn = pd.read_parquet(dirs["cnn"] / PREDICTIONS_FILE).set_index("track_id")
    evaluated = dataset.split.isin(EVAL_SPLITS).to_numpy()
    ids = dataset.features.index[evaluated].intersection(cnn.index).sort_values()
    ids = ids[cnn.loc[ids, "split"].to_numpy() == dataset.split.loc[ids].to_numpy()]
    if ids.empty:
        raise DataError("the classical and the CNN stages share no validation or test track "
                        "(other splits or data?): run both on the same run folder and split")
    X = dataset.features.loc[ids].to_numpy(np.float32)
    names = {int(g): str(t) for g, t in dataset.genres["title"].items()}
    parts = multilabel.Parts(
        track_ids=ids.to_numpy(np.int64), split=dataset.split.loc[ids].to_numpy(),
        y=dataset.labels.loc[ids].to_numpy(np.int8),
        top_true=multilabel.top_ids(dataset.genre.loc[ids], names),
        probs={"classical": label_probabilities(pipeline, X),
               "cnn": cnn.loc[ids, [f"p_{c}" for c in classes]].to_numpy(np.float64)},
        prior=dataset.labels[dataset.rows("training")].to_numpy(float).mean(axis=0),
        labels=list(card["label_ids"]),
        parents={int(g): int(p) for g, p in dataset.genres["parent"].items()}, names=names)
    fused = multilabel.fit(parts)
    results = multilabel.results_table(
        fused, {"classical": dirs["classical"].name, "cnn": dirs["cnn"].name,
                "fusion": f"{dirs['classical'].name} x {dirs['cnn'].name}",
                "prior": "label prior (training prevalence)"}, parts)
    _copy_parts(out, dirs)
    multilabel.write(out, {"kind": MODEL_KIND, "format": 1, "classes": classes,
                           "rule": "geometric",
                           "weights": {"classical": fused.weight, "cnn": 1.0 - fused.weight},
                           "parts": {p: f"{PARTS_DIR}/{p}" for p in PARTS},
                           "sources": _sources(run_dir, data_dir, dirs)},
                     fused, results, parts,
                     genres_all=[list(map(int, g)) for g in cnn.loc[ids, "genres_all"]],
                     genre_top=[t if isinstance(t, str) else None
                                for t in dataset.genre.loc[ids]])
    return results


def _result_row(source: str, model: str, probs: np.ndarray, labels: np.ndarray,
                split: np.ndarray) -> dict:
    from fmadask.report.metrics import scores

    pred = probs.argmax(axis=1)
    val, test = split == "validation", split == "test"
    test_scores = scores(labels[test], pred[test])
    return {"source": source, "model": model,
            "validation_accuracy": scores(labels[val], pred[val])["accuracy"],
            "test_accuracy": test_scores["accuracy"], "test_f1_macro": test_scores["f1_macro"],
            "validation_tracks": int(val.sum()), "test_tracks": int(test.sum())}


def _model_files(model_dir: Path) -> list[str]:
    """The files that make up a saved model: its card and the files the card lists (with their
    checksums, which the part's loader verifies)."""
    card = read_card(model_dir)
    return [MODEL_CARD, *sorted({entry["name"] for entry in (card.get("files") or {}).values()})]


def _predictions(track_ids: np.ndarray, split: np.ndarray, labels: np.ndarray,
                 fused: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """``predictions.parquet``: per track its split, genre, the fusion's genre and probabilities."""
    preds = pd.DataFrame({"track_id": track_ids, "split": split,
                          "genre_top": [classes[i] for i in labels],
                          "pred": [classes[i] for i in fused.argmax(axis=1)]})
    for i, c in enumerate(classes):
        preds[f"p_{c}"] = fused[:, i]
    return preds


def _write(out: Path, dirs: dict[str, Path], sources: dict[str, str], classes: list[str],
           weight: float, trials: list, results: pd.DataFrame, preds: pd.DataFrame) -> None:
    """The fusion's folder: its parts' files, card, results, weights, predictions, confusion
    matrix and report."""
    from fmadask.report.metrics import normalized_confusion
    from fmadask.report.plots import confusion_figure

    _copy_parts(out, dirs)
    write_json({"kind": MODEL_KIND, "format": 1, "classes": classes, "rule": "geometric",
                "weights": {"classical": weight, "cnn": 1.0 - weight},
                "parts": {p: f"{PARTS_DIR}/{p}" for p in PARTS},
                "sources": sources,
                "results": json.loads(results.to_json(orient="records"))}, out / MODEL_CARD)
    with atomic_path(out / RESULTS_FILE) as tmp:
        results.to_csv(tmp, index=False)
    with atomic_path(out / WEIGHTS_TABLE) as tmp:
        pd.DataFrame(trials).to_csv(tmp, index=False)
    with atomic_path(out / PREDICTIONS_FILE) as tmp:
        preds.to_parquet(tmp, index=False)
    test = preds[preds["split"] == "test"]
    codes = {c: i for i, c in enumerate(classes)}
    matrix = normalized_confusion(test["genre_top"].map(codes).to_numpy(),
                                  test["pred"].map(codes).to_numpy(),
                                  labels=list(range(len(classes))))
    confusion_figure(matrix, classes, out / confusion_file("test"),
                     title=f"fusion, test accuracy {results['test_accuracy'].iloc[-1]:.3f}")
    with atomic_path(out / REPORT_FILE) as tmp:
        tmp.write_text(report_markdown(results, weight, dirs))


def report_markdown(results: pd.DataFrame, weight: float, dirs: dict[str, Path]) -> str:
    """``report.md``: the sources' scores, the fitted weight and the confusion matrix."""
    from fmadask.report.tables import markdown_table

    lines = ["# Fusion of the classical model and the CNN", "",
             f"Weighted geometric mean of the class probabilities: classical "
             f"`{dirs['classical'].name}` x {weight:.2f}, CNN `{dirs['cnn'].name}` x "
             f"{1 - weight:.2f}; the weight was chosen on the validation split only "
             f"({WEIGHTS_TABLE}). Scores on the tracks both parts scored.", "",
             markdown_table(results, ["source", "model", "validation_accuracy", "test_accuracy",
                                      "test_f1_macro", "test_tracks"],
                            ["Source", "Model", "Validation accuracy", "Test accuracy",
                             "Test F1 (macro)", "Test tracks"]).rstrip(), "",
             f"![fusion, test]({confusion_file('test')})", ""]
    return "\n".join(lines)


def format_results(results: pd.DataFrame) -> str:
    """A few lines for the terminal: each source's validation and test accuracy."""
    lines = []
    width = max(len(m) for m in results["model"])
    if "test_pr_auc_macro" in results:      # multi-label
        for row in results.itertuples(index=False):
            lines.append(f"  {row.source:<9} {row.model:<{width}}  PR-AUC validation "
                         f"{row.validation_pr_auc_macro:.3f} test {row.test_pr_auc_macro:.3f}"
                         f"  test F1 micro {row.test_f1_micro:.3f}  subset acc "
                         f"{row.test_subset_accuracy:.3f}  top-level acc "
                         f"{row.test_top_accuracy:.3f}")
        return "\n".join(lines)
    for row in results.itertuples(index=False):
        lines.append(f"  {row.source:<9} {row.model:<{width}}  validation "
                     f"{row.validation_accuracy:.3f}"
                     f"  test {row.test_accuracy:.3f}  test F1 {row.test_f1_macro:.3f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- predicting


def predict_fusion(model_dir: str | Path, paths: Sequence[str | Path]) -> pd.DataFrame:
    """Genre probabilities of audio files from a fused model (see
    :func:`fmadask.predict.predict` for the frame).

    Each part scores the files as it does alone (the classical model by 30 s pieces, the CNN by
    its segments, each averaging over a long file), and the file's two probability vectors are
    pooled with the fitted weight. A file either part cannot score gets that part's error. A
    multi-label fusion pools each genre's probability (:func:`fmadask.fusion.pool.pool_labels`)
    and lists the genres at or above its thresholds, with their parents (``genres``).
    """
    # Each part's own predictor, called directly: fmadask.predict (which dispatches on a card's
    # kind) sits above this module, and the parts' kinds are fixed.
    from fmadask.dl.predict import predict_cnn
    from fmadask.ml.predict import predict_classical

    predictors = {"classical": predict_classical, "cnn": predict_cnn}
    model_dir = Path(model_dir)
    card = read_card(model_dir)
    if not all(isinstance(card.get(k), dict) and set(PARTS) <= set(card[k])
               for k in ("parts", "weights")):
        raise DataError(f"{model_dir / MODEL_CARD} does not name the fusion's parts and weights: "
                        "re-run 'fmadask fuse'")
    classes = list(card["classes"])
    tables = {}
    for part in PARTS:
        folder = (model_dir / card["parts"][part]).resolve()
        if model_dir.resolve() not in folder.parents:  # a model's paths stay inside it
            raise DataError(f"{model_dir / MODEL_CARD}: part {part!r} points outside the "
                            "model folder; re-run 'fmadask fuse'")
        tables[part] = predictors[part](folder, paths)
        if list(tables[part].attrs["classes"]) != classes:
            raise DataError(f"{folder}: its classes differ from the fused model's; re-run "
                            "'fmadask fuse'")
    a, b = tables["classical"], tables["cnn"]
    weights = [card["weights"]["classical"], card["weights"]["cnn"]]
    error = a["error"].where(a["error"].notna(), b["error"])
    ok = error.isna().to_numpy()
    multilabel = card.get("target") == GENRES_ALL
    fused = np.full((len(a), len(classes)), np.nan)
    if ok.any():
        fused[ok] = (pool_labels if multilabel else pool)(
            [a.loc[ok, classes].to_numpy(float), b.loc[ok, classes].to_numpy(float)], weights)
    table = pd.DataFrame({"path": a["path"],
                          "genre": [classes[int(np.argmax(p))] if k else None
                                    for p, k in zip(fused, ok)],
                          "error": error.where(~ok, None), "genre_vote": None,
                          "n_segments": a["n_segments"]})
    if multilabel:
        from fmadask.report.multilabel import card_genres

        chosen = card_genres(np.nan_to_num(fused, nan=-1.0), card)
        table = table.drop(columns="genre_vote")
        table.insert(3, "genres", [genres if k else None for genres, k in zip(chosen, ok)])
        table.attrs["thresholds"] = dict(zip(classes, map(float, card["thresholds"])))
    for i, c in enumerate(classes):
        table[c] = fused[:, i]
    table.attrs.update(classes=classes, outputs="probability")
    return table
