#!/usr/bin/env bash
# Every GPU check in one go, for a session lent a GPU machine (figures: README "Performance").
#
#   bash tests/benchmarks/gpu_session.sh DATA_DIR [OUT_DIR]
#
# DATA_DIR is an FMA-shaped folder (`fmadask sample DATA_DIR --tracks-per-genre 5`). A machine
# without network gets the packages it lacks from wheels in .whl/ (downloaded beforehand for its
# Python with `pip download --no-deps --only-binary=:all: ...`). Runs the GPU tests
# (tests/test_gpu.py, which skip without CUDA), then tests/benchmarks/bench_gpu.py; logs and the
# figures (bench_gpu.json) go to OUT_DIR.
set -uo pipefail
cd "$(dirname "$0")/../.."
data=${1:?usage: gpu_session.sh DATA_DIR [OUT_DIR]}
out=${2:-.}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}
if [ -d .whl ] && ! "$PY" -c "import distributed, librosa, av" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
"$PY" tests/benchmarks/sgemm_check.py | tee "$out/sgemm.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
timeout 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/test_gpu.log"
timeout 330 "$PY" tests/benchmarks/bench_gpu.py --data "$data" --json "$out/bench_gpu.json" ${BENCH_ARGS:-} \
    2>&1 | tee "$out/bench_gpu.log"
