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


def plot_curves(metrics: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Draw loss and accuracy per epoch, training against validation, side by side.

    Parameters
    ----------
    metrics : pandas.DataFrame
        One row per epoch (``metrics.csv``): ``epoch``, ``train_loss``, ``val_loss``,
        ``train_acc``, ``val_acc`` (segment level) and, when present, ``val_track_acc_vote`` and
        ``val_track_acc_mean`` (track level).
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
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy loss (segments)")
    ax_loss.set_title("loss")
    ax_acc.plot(epochs, metrics["train_acc"], marker=marker, label="training (segments)")
    ax_acc.plot(epochs, metrics["val_acc"], marker=marker, label="validation (segments)")
    for column, label in (("val_track_acc_vote", "validation (tracks, vote)"),
                          ("val_track_acc_mean", "validation (tracks, mean prob.)")):
        if column in metrics:
            ax_acc.plot(epochs, metrics[column], marker=marker, linestyle="--", label=label)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0.0, 1.0)
    ax_acc.set_title("accuracy")
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

