"""The notebooks run top to bottom on the generated sample and a run directory made from it.

Each notebook is executed by nbclient in a real IPython kernel. The kernel is this interpreter
(a kernel spec written to a temporary folder by ipykernel, so the test does not depend on any
kernel installed by hand); the notebooks' ``parameters`` cell reads ``FMADASK_DATA_DIR`` and
``FMADASK_RUN_DIR`` from the kernel's environment. Figures go through matplotlib's inline backend
(Agg rendering, no display needed), which is what turns them into ``image/png`` outputs.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
KERNEL = "fmadask-test"
#: Seconds one cell may run: the first librosa call compiles numba code (~15 s on a fresh machine).
CELL_TIMEOUT = 300


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding one kernel spec that runs ipykernel on this very interpreter."""
    from ipykernel.kernelspec import write_kernel_spec

    folder = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(folder / KERNEL)
    assert sys.executable in (folder / KERNEL / "kernel.json").read_text()
    return folder


def execute(name: str, kernel_specs: Path, cwd: Path, **env: str) -> nbformat.NotebookNode:
    """Run ``notebooks/<name>`` with ``env`` added to the kernel's environment; return it with outputs.

    Raises nbclient's ``CellExecutionError`` when a cell fails.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    specs = KernelSpecManager(kernel_dirs=[str(kernel_specs)], ensure_native_kernel=False)
    km = AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)
    # The inline backend renders with Agg and sends each figure as image/png; a backend named in
    # the caller's MPLBACKEND (Agg, a GUI) would swallow the figures or need a display.
    kernel_env = {**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline", **env}
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(cwd)}})
    client.execute(env=kernel_env)
    return nb


def outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def figures(nb: nbformat.NotebookNode) -> int:
    """How many PNG images the executed notebook displayed."""
    return sum(1 for out in outputs(nb)
               if out["output_type"] in ("display_data", "execute_result") and "image/png" in out["data"])


def printed(nb: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for out in outputs(nb) if out["output_type"] == "stream")


@pytest.fixture(scope="module")
def run_dir(sample_dir: Path, local_client: "distributed.Client",  # noqa: F821
            tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory made from the sample by the real stages, laid out as ``fmadask run`` does.

    Featurize (features, spectrograms, errors), two classical models, and a 2-epoch CNN on two
    DDP ranks into ``cnn/<arch>/``; all on the session's local Dask cluster. Kept small: the
    notebooks, not the stages, are under test here.
    """
    from fmadask.dl.config import TrainConfig
    from fmadask.dl.launch import run_cnn
    from fmadask.ml.train import ClassicalConfig, train
    from fmadask.pipeline.featurize import FeaturizeConfig, run_featurize
    from fmadask.dl.entry import cnn_dir

    run = tmp_path_factory.mktemp("run")
    run_featurize(sample_dir, out=run, client=local_client,
                  config=FeaturizeConfig(partition_size=16), progress=False)
    train(run, client=local_client, progress=False,
          config=ClassicalConfig(models=["logistic_regression", "xgboost"], unsupervised=False))
    run_cnn(run, TrainConfig(arch="naive", epochs=2, batch_size=8, crops=1,
                             out_dir=str(cnn_dir(run, "naive"))),
            local_client, ranks=2, progress=False)
    return run


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_is_committed_clean(path: Path) -> None:
    """Valid nbformat v4, no outputs or execution counts, one ``parameters`` cell first among code."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    tagged = [cell for cell in nb.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0]


def test_notebooks_exist() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == [
        "01_one_track.ipynb", "02_feature_space.ipynb", "03_results.ipynb"]


def test_one_track(sample_dir: Path, kernel_specs: Path, tmp_path: Path) -> None:
    nb = execute("01_one_track.ipynb", kernel_specs, tmp_path, FMADASK_DATA_DIR=str(sample_dir))
    # waveform/RMS, centroid..., contrast, STFT/CQT, chroma, CENS, tonnetz, MFCC, ZCR, log-mel
    assert figures(nb) == 10
    assert "(Rock):" in printed(nb)


@pytest.mark.slow
def test_feature_space(run_dir: Path, kernel_specs: Path, tmp_path: Path) -> None:
    # The notebook starts its own local Dask cluster, as the classical stage does.
    nb = execute("02_feature_space.ipynb", kernel_specs, tmp_path, FMADASK_RUN_DIR=str(run_dir))
    from fmadask.runfolder import read_features

    assert figures(nb) == 3  # PCA, t-SNE, K-means against genres
    text = printed(nb)
    assert f"{len(read_features(run_dir))} tracks x 518 features" in text
    assert "adjusted Rand index: " in text


@pytest.mark.slow
def test_results(run_dir: Path, kernel_specs: Path, tmp_path: Path) -> None:
    nb = execute("03_results.ipynb", kernel_specs, tmp_path, FMADASK_RUN_DIR=str(run_dir))
    # classical confusion grid, CNN curves, CNN confusion grid (validation and test)
    assert figures(nb) == 3
    text = printed(nb)
    assert "not in this run" not in text
    assert "7 tracks could not be featurized" in text  # the sample's 3 empty, 3 short, 1 truncated
    markdown = [out["data"]["text/markdown"] for out in outputs(nb) if "text/markdown" in out.get("data", {})]
    # Table 1, the CNN folder's heading, its report (without the image links, shown from files)
    assert [m.splitlines()[0] for m in markdown] == ["# Classical models", "### `cnn/naive`",
                                                      "# CNN `naive` on mel-spectrograms"]
    assert "XGBoost" in markdown[0] and "track acc (vote)" in markdown[2]
    assert not any("![" in m for m in markdown)


def test_results_of_an_empty_run(kernel_specs: Path, tmp_path: Path) -> None:
    """A run directory with no stage done yet: every section says so, nothing crashes."""
    empty = tmp_path / "run"
    empty.mkdir()
    nb = execute("03_results.ipynb", kernel_specs, tmp_path, FMADASK_RUN_DIR=str(empty))
    assert figures(nb) == 0
    missing = [line for line in printed(nb).splitlines() if line.startswith("not in this run: ")]
    assert [line.split()[4] for line in missing] == [
        str(empty / part) for part in ("featurize.json", "classical/table.md", "classical/best.json",
                                       "classical/results.csv", "classical/confusion",
                                       "cnn/metrics.csv", "cnn/report.md")]
