"""The README's bucket flow, run line by line: ``featurize`` -> ``train`` -> ``predict`` ->
``cnn`` -> ``predict`` -> ``fuse`` -> ``predict``, all on ``s3://`` (moto's S3 server, the
session fixture of conftest) on a scheduler and two workers started as separate processes that
reach the store through the standard ``AWS_*`` environment only, as the README's users do.

The commands are read from the README itself, so the test follows the documentation: each
``fmadask`` line of the block that uses ``s3://bucket/runs/r1`` runs as written, with the
bucket, the scheduler, the cache folder and ``some.mp3`` replaced by the test's, and flags
appended that only make it small (a narrow net for one epoch, two models). The lines that need
what a test cannot have are left out, each for a reason written below.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from external_cluster import external_cluster

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: Lines of the README's block that are not run, and why.
NOT_RUN = {
    "fetch": "downloads FMA's own archives (checked against FMA's published SHA-1)",
    "run": "the study's whole job (hours)",
    "info": "an https:// mirror",
}
#: Flags appended to a command so that it runs in seconds; none changes what the line does.
SMALL = {
    "featurize": ["--partition-size", "16"],
    "train": ["--models", "logistic_regression,decision_tree", "--no-unsupervised"],
    "cnn": ["--arch", "naive_bn", "--epochs", "1", "--segment-seconds", "1", "--crops", "1",
            "--batch-size", "4", "--width", "4", "--ranks", "2"],
}


def readme_bucket_lines() -> list[list[str]]:
    """The ``fmadask`` command lines of the README's code block about buckets, as argv lists
    (continuation lines joined, comments dropped)."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    block = next(b for b in blocks if "s3://bucket/runs/r1" in b)
    lines = []
    for line in block.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        if argv[:1] == ["fmadask"]:
            lines.append(argv)
    return lines


@pytest.fixture(scope="module")
def env_cluster(s3_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler and two workers whose only way to the store is the AWS_* environment."""
    with external_cluster(tmp_path_factory.mktemp("readme-cluster"),
                          env=s3_server.env) as address:
        yield address


@pytest.mark.slow      # seven commands, each a fresh process (about 2 minutes on 2 cores)
def test_the_readme_bucket_flow_runs_as_written(s3_server, s3_sample: str, sample_dir: Path,
                                                env_cluster: str, tmp_path: Path) -> None:
    s3_server.filesystem().mkdir("readme")
    clip = sorted((sample_dir / "fma_small").rglob("*.mp3"))[0]
    swaps = [("s3://bucket/fma", s3_sample), ("s3://bucket/", "s3://readme/"),
             ("tcp://host:8786", env_cluster),
             ("/scratch/fmadask-shards", str(tmp_path / "cache")), ("some.mp3", str(clip))]
    env = {**os.environ, **s3_server.env, "PYTHONPATH": str(ROOT)}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    ran = []
    for argv in readme_bucket_lines():
        command = argv[1]
        if command in NOT_RUN:
            continue
        for old, new in swaps:
            argv = [a.replace(old, new) for a in argv]
        done = subprocess.run([str(BIN / "fmadask"), *argv[1:], *SMALL.get(command, [])],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stderr[-3000:]}"
        ran.append((command, done.stdout))
    # every stage of the flow ran, and each model folder predicted the clip
    assert [c for c, _ in ran] == ["featurize", "train", "predict", "cnn", "predict", "fuse",
                                   "predict"]
    for command, out in ran:
        if command == "predict":       # "clip.mp3: Rock 0.62, Pop 0.21, Folk 0.07"
            assert re.fullmatch(rf"{re.escape(str(clip))}: (\w[\w -]* \d\.\d\d(, )?){{3}}.*",
                                out.strip()), out
    fs = s3_server.filesystem()
    for stage in ("classical", "cnn", "fusion"):
        assert fs.exists(f"readme/runs/r1/{stage}"), stage
    assert fs.exists("readme/runs/r1/fusion/model.json")
    assert not fs.exists("readme/runs/r1/.fmadask.lock")
