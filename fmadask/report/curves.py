"""Training curves of the CNN stage: the study's loss and accuracy per epoch.

Same conventions as :mod:`fmadask.report.plots`: matplotlib's object API (safe in the worker
thread where rank 0 runs), PNG files written atomically.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fmadask.atomic import atomic_path
from fmadask.report.plots import DPI


#: The right panel's lines: metrics.csv column, legend, line style (those present are drawn).
_SCORE_LINES = (("train_acc", "training (segments)", "-"),
                ("val_acc", "validation (segments)", "-"),
                ("val_track_acc_vote", "validation (tracks, vote)", "--"),
                ("val_track_acc_mean", "validation (tracks, mean prob.)", "--"),
                ("train_f1_micro", "training F1 micro (segments, 0.5)", "-"),
                ("val_f1_micro", "validation F1 micro (segments, 0.5)", "-"),
                ("val_track_pr_auc_macro", "validation PR-AUC macro (tracks)", "--"),
                ("val_track_roc_auc_macro", "validation ROC-AUC macro (tracks)", "--"))


def plot_curves(metrics: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Draw loss and accuracy per epoch, training against validation, side by side.

    Parameters
    ----------
    metrics : pandas.DataFrame
        One row per epoch (``metrics.csv``): ``epoch``, ``train_loss``, ``val_loss``,
        ``train_acc``, ``val_acc`` (segment level) and, when present, ``val_track_acc_vote`` and
        ``val_track_acc_mean`` (track level). A multi-label run has ``train_f1_micro`` and
        ``val_f1_micro`` (segments at 0.5) and ``val_track_pr_auc_macro`` and
        ``val_track_roc_auc_macro`` instead of the accuracies, and a binary cross-entropy.
    path : str or Path
        PNG file to write.
    title : str
        Figure title.

    Returns
    -------
    Path
        ``path``.
    """
    fig = Figure(figsize=(10.0, 4.0))
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = metrics["epoch"].to_numpy()
    marker = "o" if len(epochs) < 30 else None
    ax_loss.plot(epochs, metrics["train_loss"], marker=marker, label="training")
    ax_loss.plot(epochs, metrics["val_loss"], marker=marker, label="validation")
    multilabel = "train_f1_micro" in metrics
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel(f"{'binary ' if multilabel else ''}cross-entropy loss (segments)")
    ax_loss.set_title("loss")
    for column, label, style in _SCORE_LINES:
        if column in metrics:
            ax_acc.plot(epochs, metrics[column], marker=marker, linestyle=style, label=label)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("score" if multilabel else "accuracy")
    ax_acc.set_ylim(0.0, 1.0)
    ax_acc.set_title("scores" if multilabel else "accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path

