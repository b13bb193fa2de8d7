#!/usr/bin/env bash
# The SGA+ comparison, CPU protocol (issue 4): 6 Kodak images, centre 256x256 crops, 600
# iterations with the temperature rate scaled so the schedule spans the run, the 4 ladder
# points, every method. Resumable: rerun the same command after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
KODAK=${KODAK:-../shared/data/kodak}
OUT=${OUT:-out/cpu-protocol}
.venv/bin/sgafast eval "$KODAK"/kodim{01,05,07,13,21,23}.png -o "$OUT" --crop 256 \
    --models ladder --iters 600 --tau-rate 3.3e-3 --batch-size 6 --track-every 20 \
    --methods none,ste@1e-4,noise,atanh,linear,cosine,ssl,linear:3,cosine:3,ssl:3 --device cpu "$@"
