#!/usr/bin/env bash
# What to run on the GPU machine (issue 3): install, the kernel tests on the GPU, the suite.
# Results land in $OUT (default out/gpu): test log, suite log, <date>_<gpu>.json and .md; copy
# the .json and .md into benchmarks/results/ and commit them. About 6 minutes on one H100, most
# of it compiling kernel variants (the tests run in 8 processes to compile them in parallel; the
# suite then finds them in Triton's cache).
# Before the device call, in the repo root here:
#   ../shared/tools/device-wheels.sh .device-wheels pytest-xdist execnet
# then name .device-wheels in the call's carry and run: OUT=$OUT benchmarks/run_gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install --no-deps --no-index .device-wheels/*.whl \
    && python3 -m pip install --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"
status=0
parallel=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")  # xdist is not in the image
python3 -m pytest tests/test_kernels.py -q $parallel -p no:cacheprovider 2>&1 \
    | tee "$OUT/test_kernels.log" || status=1
python3 benchmarks/gpu_suite.py --out "$OUT" 2>&1 | tee "$OUT/gpu_suite.log" || status=1
exit $status
