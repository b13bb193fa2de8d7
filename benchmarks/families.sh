#!/bin/sh
# Issue 9's evidence: small models of two new families (raster AR mbt2018, checkerboard
# cheng2020-anchor-checkerboard) trained here, refined with SSL on Kodak crops beside the
# bundled mbt2018-mean ladder; writes benchmarks/results/families/. CPU, about 2 hours of training
# (one thread per job) and 40 minutes of evaluation on two cores.
#   benchmarks/families.sh [train|eval|table]   (default: all three)
set -eu
SGAFAST=${SGAFAST:-.venv/bin/sgafast}
PYTHON=${PYTHON:-.venv/bin/python}
TRAIN=${TRAIN:-../shared/data/train}
KODAK=${KODAK:-../shared/data/kodak}
OUT=${OUT:-out/families}
M=$OUT/models
EVAL="--methods none,ssl --crop 256 --limit 6 --iters 600 --tau-rate 3.3e-3 --track-every 100"
step=${1:-all}
mkdir -p "$M"

train() {  # NAME ARCH LAMBDA OPTIONS...: one training job on one thread
    name=$1 arch=$2 lmbda=$3; shift 3
    OMP_NUM_THREADS=1 $SGAFAST train "$TRAIN" -o "$M/$name.pt" --arch "$arch" --lmbda "$lmbda" "$@"
}

if [ "$step" = all ] || [ "$step" = train ]; then
    # the q3 point (lambda 0.0067): mbt2018 starts from the bundled mbt2018-mean q3 (same
    # transforms and hyperprior; new context model), the checkerboard model from scratch
    train mbt2018-q3 mbt2018 0.0067 --init q3 --steps 3000 &
    train checkerboard-q3 cheng2020-anchor-checkerboard 0.0067 --N 48 --M 48 --steps 3000 &
    wait
    # q2 and q4 (lambdas 0.0035, 0.013): fine-tunes of the q3 models
    for q in "q2 0.0035" "q4 0.013"; do
        set -- $q
        train "mbt2018-$1" mbt2018 "$2" --init "$M/mbt2018-q3.pt" --steps 600 &
        train "checkerboard-$1" cheng2020-anchor-checkerboard "$2" --N 48 --M 48 \
            --init "$M/checkerboard-q3.pt" --steps 600 &
        wait
    done
fi

if [ "$step" = all ] || [ "$step" = eval ]; then
    $SGAFAST eval "$KODAK" -o "$OUT/mbt2018-mean" --models q2,q3,q4 $EVAL --quiet
    $SGAFAST eval "$KODAK" -o "$OUT/mbt2018" $EVAL --quiet \
        --models "$M/mbt2018-q2.pt,$M/mbt2018-q3.pt,$M/mbt2018-q4.pt"
    $SGAFAST eval "$KODAK" -o "$OUT/cheng2020-anchor-checkerboard" $EVAL --quiet \
        --models "$M/checkerboard-q2.pt,$M/checkerboard-q3.pt,$M/checkerboard-q4.pt"
fi

if [ "$step" = all ] || [ "$step" = table ]; then
    mkdir -p benchmarks/results/families
    $PYTHON benchmarks/families_table.py "$OUT" mbt2018-mean mbt2018 \
        cheng2020-anchor-checkerboard > benchmarks/results/families/table.md
    for family in mbt2018-mean mbt2018 cheng2020-anchor-checkerboard; do
        mkdir -p "benchmarks/results/families/$family"
        cp "$OUT/$family/none.json" "$OUT/$family/ssl.json" "$OUT/$family/bd.md" \
            "$OUT/$family/rd.png" "benchmarks/results/families/$family/"
    done
fi
