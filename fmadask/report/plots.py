"""Figures as PNG files: confusion matrices, heat-maps and 2-D scatter plots by class.

Drawn with matplotlib's object API (``matplotlib.figure.Figure``) rather than ``pyplot``: no global
figure state, no GUI backend, so plots can be made in any thread or worker. Files are written
atomically.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from fmadask.atomic import atomic_path

#: Resolution of saved figures (dots per inch).
DPI = 120


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        # The temporary name ends in '.tmp', so the format is named explicitly.
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return path


def heatmap(matrix: np.ndarray, rows: Sequence[str], columns: Sequence[str], path: str | Path,
            title: str = "", xlabel: str = "", ylabel: str = "", fmt: str = "{:.2f}",
            vmax: float | None = None) -> Path:
    """Draw ``matrix`` as an annotated heat-map and save it as a PNG.

    Parameters
    ----------
    matrix : numpy.ndarray, shape (len(rows), len(columns))
        Values to draw; each cell is annotated with ``fmt``.
    rows, columns : sequence of str
        Tick labels of the y axis (top to bottom) and x axis (left to right).
    path : str or Path
        PNG file to write; folders are created.
    title, xlabel, ylabel : str
        Figure texts.
    fmt : str
        Format of the cell annotations.
    vmax : float, optional
        Upper end of the colour scale (default: the matrix maximum).

    Returns
    -------
    Path
        ``path``.
    """
    matrix = np.asarray(matrix, dtype=float)
    n_rows, n_cols = matrix.shape
    fig = Figure(figsize=(1.2 + 0.75 * n_cols, 1.0 + 0.6 * n_rows))
    ax = fig.subplots()
    top = vmax if vmax is not None else (float(matrix.max()) if matrix.size else 1.0)
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=top or 1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n_cols), labels=list(columns), rotation=45, ha="right")
    ax.set_yticks(range(n_rows), labels=list(rows))
    for i in range(n_rows):
        for j in range(n_cols):
            # Dark text on light cells, light text on dark ones.
            colour = "white" if top and matrix[i, j] > 0.6 * top else "black"
            ax.text(j, i, fmt.format(matrix[i, j]), ha="center", va="center", color=colour,
                    fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _save(fig, path)


def confusion_figure(matrix: np.ndarray, classes: Sequence[str], path: str | Path,
                     title: str = "") -> Path:
    """Save a confusion matrix normalised per true class (rows: true genre, columns: predicted).

    Parameters
    ----------
    matrix : numpy.ndarray, shape (k, k)
        From :func:`fmadask.report.metrics.normalized_confusion`.
    classes : sequence of str, length k
        Genre names in the matrix's order.
    path : str or Path
        PNG file to write.
    title : str
        Figure title (e.g. the model and split).
    """
    return heatmap(matrix, classes, classes, path, title=title, xlabel="predicted genre",
                   ylabel="true genre", vmax=1.0)


def scatter_by_label(points: np.ndarray, labels: Sequence[str], path: str | Path,
                     title: str = "", xlabel: str = "", ylabel: str = "") -> Path:
    """Save a 2-D scatter plot of ``points`` coloured by label, with a legend.

    Parameters
    ----------
    points : numpy.ndarray, shape (n, 2)
        Coordinates (e.g. the first two principal components, or a t-SNE embedding).
    labels : sequence of str, length n
        Class of each point; one colour per distinct label, legend in sorted order.
    path : str or Path
        PNG file to write.
    """
    points = np.asarray(points)
    labels = np.asarray(labels)
    fig = Figure(figsize=(7.5, 6.0))
    ax = fig.subplots()
    palette = [f"C{i}" for i in range(10)] + ["black", "grey", "olive", "navy"]
    for i, label in enumerate(sorted(set(labels.tolist()))):
        mask = labels == label
        ax.scatter(points[mask, 0], points[mask, 1], s=8, alpha=0.7, label=str(label),
                   color=palette[i % len(palette)], linewidths=0)
    ax.legend(markerscale=2.5, fontsize=8, loc="best")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _save(fig, path)
