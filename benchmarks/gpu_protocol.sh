#!/usr/bin/env bash
# The SGA+ comparison, GPU protocol (issue 4), for a session with the GPU machine: all 24 Kodak
# images at full size, 2000 iterations, the paper's settings (tau rate 1e-3, Adam 5e-3).
# METHODS defaults to what fits a few minutes of an H100; widen it when there is more time.
# Kodak must be reachable on the device: KODAK=path/to/kodak (e.g. a carried copy).
set -euo pipefail
cd "$(dirname "$0")/.."
KODAK=${KODAK:-../shared/data/kodak}
OUT=${OUT:-out/gpu-protocol}
METHODS=${METHODS:-none,atanh,ssl}
sgafast eval "$KODAK" -o "$OUT" --models ladder --iters 2000 --batch-size 24 \
    --track-every 100 --methods "$METHODS" --device cuda --backend auto --quiet "$@"
