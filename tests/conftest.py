"""Shared fixtures: a generated FMA-shaped sample and a real local Dask cluster."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fmadask.fma.sample import make_sample


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small FMA-shaped sample: 3 good clips of 5 s per genre, plus FMA's defects."""
    return make_sample(tmp_path_factory.mktemp("fma"), tracks_per_genre=3, seconds=5.0, seed=0)


@pytest.fixture(scope="session")
def local_client() -> Iterator["distributed.Client"]:  # noqa: F821
    """A real distributed LocalCluster of 2 worker processes, shared by the session."""
    from fmadask.cluster import get_client

    with get_client(workers=2, quiet=True) as client:
        yield client
