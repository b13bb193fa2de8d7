#!/usr/bin/env bash
# The one script to run on the GPU machine (issues 3 and 7): fits one 10-minute device call.
# Results land in $OUT (default out/gpu): nvidia-smi.txt, e2e_*.md/json, kodak.log,
# <date>_<gpu>.md/json of the kernel suite, test_ops.log. Copy the .md and .json files into
# benchmarks/results/ (e2e ones into benchmarks/results/e2e/) and commit them.
# Before the device call, in the repo root here:
#   ../shared/tools/device-wheels.sh .device-wheels
#   mkdir -p out/kodak && cp ../shared/data/kodak/*.png out/kodak/   # research-only: never commit
# then carry [".device-wheels", "out/kodak"] and run: OUT=$OUT benchmarks/run_gpu.sh
# Order: what the issue needs most first, each step under its own time limit.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install --quiet --no-deps --no-index .device-wheels/*.whl \
    && python3 -m pip install --quiet --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"
status=0
kodak=$([ -d out/kodak ] && echo "--images out/kodak")
# 1. end-to-end throughput against the official-style loop, and the pipeline's idle fraction
timeout 240 python3 benchmarks/bench_e2e.py --device cuda \
    --models default,mbt2018-mean:3,mbt2018-mean:6 --batches 1,8,24 --warmup 3 --iters 20 \
    --rounds 5 $kodak --pipeline-images 48 --pipeline-iters 200 --pipeline-batch 24 \
    --out "$OUT" 2>&1 | tail -40 || status=1
# 2. all 24 Kodak images x 2000 iterations with the bundled model, load and bitstreams included
# (the records hold each image's history.peak_memory_bytes: the batch's CUDA peak per image)
if [ -d out/kodak ]; then
    { time timeout 120 sgafast refine out/kodak -o out/kodak-run --batch-size 24 --quiet \
        --device cuda ; } > "$OUT/kodak.log" 2>&1 || status=1
    tail -4 "$OUT/kodak.log"
    cp out/kodak-run/_sgafast/summary.json "$OUT/kodak_summary.json" 2>/dev/null
    python3 -c "import json,glob; r=[json.load(open(p)) for p in glob.glob('out/kodak-run/*.json')]; print('peak MB per image', max(x['history']['peak_memory_bytes'] for x in r)/2**20)" \
        | tee -a "$OUT/kodak.log"
fi
# 3. the fused rounding op against eager and compiled references
timeout 150 python3 benchmarks/gpu_suite.py --out "$OUT" --budget 120 2>&1 \
    | tail -20 || status=1
# 4. the kernel tests on the GPU, fp32 only (every dtype compiles hundreds of variants)
timeout 120 python3 -m pytest tests/test_op_sga_round.py tests/test_op_gaussian_bits.py \
    tests/test_op_sga_round_bits.py tests/test_step.py -q -x -p no:cacheprovider \
    -k "not float16 and not bfloat16" > "$OUT/test_ops.log" 2>&1 || status=1
tail -3 "$OUT/test_ops.log"
exit $status
