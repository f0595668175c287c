#!/usr/bin/env bash
# Run an fmadask job on SLURM: this batch job is the client (it holds the Dask scheduler) and
# submits the worker jobs itself through dask-jobqueue (deploy/slurm/jobqueue.yaml).
#   sbatch deploy/slurm/submit.sh jobs/fma-large.toml [--set cluster.workers=128 ...]
# Run from the repository root on a shared file system (data/ and runs/ must be visible on
# every node at the same path). The dashboard is on this job's node, port 8787.
#SBATCH --job-name=fmadask
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=24:00:00
#SBATCH --output=fmadask-%j.out
set -euo pipefail
JOB=${1:?usage: sbatch deploy/slurm/submit.sh JOB.toml [fmadask run options]}
shift
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/../..}"
mkdir -p slurm-logs
export FMADASK_VENV=${FMADASK_VENV:-$PWD/.venv}
source "$FMADASK_VENV/bin/activate"
# Dask reads every YAML file in DASK_CONFIG: the jobqueue settings of this folder.
export DASK_CONFIG=$PWD/deploy/slurm
exec fmadask run "$JOB" --scheduler slurm "$@"
