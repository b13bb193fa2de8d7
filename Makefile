# sgafast: `make demo` runs the main job on the bundled default, `make test` runs the tests.
# Both create .venv with pip and install from this repository's own files when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_OUT := out/demo

.PHONY: venv demo test bench bench-e2e bench-sizes bench-budget clean

$(STAMP): requirements.txt setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/sgafast refine sgafast/data/images/*.png -o $(DEMO_OUT) --model default \
		--method ssl --iters 300 --batch-size 2 --track-every 50 --overwrite
	$(BIN)/sgafast decode $(DEMO_OUT)/kodim05_center256.bin -o $(DEMO_OUT)/kodim05_center256.decoded.png
	@echo "outputs in $(DEMO_OUT)/ (per-image .bin and .json; _sgafast/summary.json)"

test: venv
	$(BIN)/python -m pytest

bench: venv
	$(BIN)/python -m pytest benchmarks/bench_sga_round.py benchmarks/bench_gaussian_bits.py \
		benchmarks/bench_sga_round_bits.py --benchmark-enable --benchmark-only

# end-to-end throughput against the official-style loop (CPU; the README's table)
bench-e2e: venv
	$(BIN)/python benchmarks/bench_e2e.py --device cpu --models default,mbt2018-mean:3 \
		--batches 1 --pipeline-images 48 --pipeline-iters 10 --out benchmarks/results/e2e

# a dataset of 24 image sizes, compiled and eager (CPU; KODAK: a folder of the 24 Kodak PNGs)
KODAK ?= ../shared/data/kodak
bench-sizes: venv
	$(BIN)/python benchmarks/bench_sizes.py --kodak $(KODAK) --iters 200 --batch-size 4 \
		--out benchmarks/results/sizes

# refinement gain against iterations per schedule (CPU: 128² Kodak crops, q3 and q5; about an
# hour on two cores). Schedules were chosen on training photos: see benchmarks/results/budget/
bench-budget: venv
	$(BIN)/python benchmarks/budget.py $(KODAK) --crop 128 --models q3,q5 \
		--budgets 250,500,2000 --schedules budget --batch-size 12 --compile \
		--out benchmarks/results/budget/kodak

clean:
	rm -rf $(VENV) out .pytest_cache
