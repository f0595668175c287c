"""Unsupervised views of the feature space: PCA, t-SNE and K-means against the genres.

PCA and K-means run with dask-ml on a Dask array spread over the workers, so they scale to FMA
large; t-SNE (no distributed version; quadratic memory in its exact form) runs in one worker task
on a seeded random subsample of at most ``tsne_max`` tracks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmadask.atomic import write_json
from fmadask.report.plots import heatmap, scatter_by_label
from fmadask.runfolder import KMEANS_FILE, PCA_FILE, TSNE_FILE, UNSUPERVISED_SUMMARY

#: Rows per block of the Dask arrays made from in-memory tables.
BLOCK_ROWS = 2048


def to_dask_array(client: Any, X: np.ndarray, block_rows: int = BLOCK_ROWS) -> Any:
    """Scatter the rows of ``X`` to the workers in blocks; return them as one Dask array.

    Parameters
    ----------
    client : distributed.Client
    X : numpy.ndarray, shape (n, d)
    block_rows : int
        Rows per block (the array's row chunk size); all columns stay in one chunk, as dask-ml's
        PCA and scalers expect.

    Returns
    -------
    dask.array.Array, shape (n, d)
        Chunks live in the workers' memory, not in the task graph.
    """
    import dask.array as da

    starts = list(range(0, max(len(X), 1), block_rows))
    blocks = [X[s:s + block_rows] for s in starts]
    futures = client.scatter(blocks, broadcast=False)
    return da.concatenate([da.from_delayed(f, shape=b.shape, dtype=X.dtype)
                           for f, b in zip(futures, blocks)], axis=0)


def unsupervised_views(client: Any, X: np.ndarray, genres: np.ndarray, out_dir: str | Path,
                       seed: int = 0, tsne_max: int = 2000) -> dict[str, Any]:
    """Draw PCA and t-SNE scatter plots by genre and compare K-means clusters with genres.

    Parameters
    ----------
    client : distributed.Client
    X : numpy.ndarray, shape (n, d)
        Scaled features of every track.
    genres : numpy.ndarray of str, shape (n,)
        Top-level genre per track.
    out_dir : str or Path
        Folder for ``pca.png``, ``tsne.png``, ``kmeans.png`` and ``summary.json``.
    seed : int
        Seed of K-means, t-SNE and the t-SNE subsample.
    tsne_max : int
        Most tracks in the t-SNE picture.

    Returns
    -------
    dict
        ``pca_explained_variance`` (2 ratios), ``kmeans_clusters``, ``adjusted_rand_index``
        (K-means clusters vs genres; 0 = chance, 1 = identical), ``tsne_tracks``.
    """
    from dask_ml.cluster import KMeans
    from dask_ml.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score

    from fmadask.ml.fit import tsne_embedding

    out = Path(out_dir)
    genres = np.asarray(genres).astype(str)
    classes = sorted(set(genres.tolist()))
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(X), size=min(tsne_max, len(X)), replace=False))
    # t-SNE is the slowest view: start it first so it overlaps with PCA and K-means.
    tsne = client.submit(tsne_embedding, X[sample], seed, pure=False)

    Xd = to_dask_array(client, X.astype(np.float32)).persist()
    with client.as_current():
        pca = PCA(n_components=2, random_state=seed).fit(Xd)
        points = np.asarray(pca.transform(Xd).compute())
        kmeans = KMeans(n_clusters=len(classes), random_state=seed).fit(Xd)
        clusters = np.asarray(kmeans.labels_.compute()) if hasattr(kmeans.labels_, "compute") \
            else np.asarray(kmeans.labels_)
    ratio = [float(r) for r in pca.explained_variance_ratio_[:2]]
    scatter_by_label(points, genres, out / PCA_FILE,
                     title=f"PCA of the scaled features ({len(X)} tracks)",
                     xlabel=f"PC1 ({ratio[0]:.1%} of variance)",
                     ylabel=f"PC2 ({ratio[1]:.1%} of variance)")

    ari = float(adjusted_rand_score(genres, clusters))
    table = contingency(genres, clusters, classes)
    heatmap(table.to_numpy(), classes, [f"cluster {c}" for c in table.columns], out / KMEANS_FILE,
            title=f"K-means ({len(classes)} clusters) vs genre: adjusted Rand index {ari:.3f}",
            xlabel="K-means cluster (ordered by dominant genre)",
            ylabel="genre (share of its tracks per cluster)", vmax=1.0)

    embedding = tsne.result()
    scatter_by_label(embedding, genres[sample], out / TSNE_FILE,
                     title=f"t-SNE of the scaled features ({len(sample)} tracks)")
    summary = {"tracks": int(len(X)), "pca_explained_variance": ratio,
               "kmeans_clusters": len(classes), "adjusted_rand_index": ari,
               "tsne_tracks": int(len(sample))}
    write_json(summary, out / UNSUPERVISED_SUMMARY)
    return summary


def contingency(genres: np.ndarray, clusters: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Share of each genre's tracks in each cluster (rows sum to 1).

    Clusters are ordered by the genre they hold most of (in ``classes`` order), then by size, so a
    clustering that matches the genres shows as a diagonal.

    Returns
    -------
    pandas.DataFrame, shape (len(classes), n_clusters)
        Index: genres; columns: cluster numbers.
    """
    counts = pd.crosstab(pd.Series(genres, name="genre"), pd.Series(clusters, name="cluster"))
    counts = counts.reindex(index=classes, fill_value=0)
    shares = counts.div(counts.sum(axis=1).replace(0, 1), axis=0)
    dominant = counts.to_numpy().argmax(axis=0)
    order = sorted(range(counts.shape[1]), key=lambda j: (dominant[j], -counts.iloc[:, j].sum()))
    return shares.iloc[:, order]
