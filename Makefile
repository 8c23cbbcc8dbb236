# Two commands: `make demo` and `make test`. Both build .venv on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install browser bench bench-data bench-behaviors bench-scenarios bench-privacy bench-batch bench-warm bench-tune bench-text bench-serve bench-explain bench-scale ablate gpu-carry gpu-dry-run clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch is on this machine's disk; install it first so nothing pulls a CUDA build.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/nextaction demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

# The web page test drives Debian's chromium through Playwright (no browser download): install it when
# this is Debian and we may (root); elsewhere the page test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not installed: the web page test will be skipped (apt-get install chromium)"; fi; }

test: $(STAMP) browser
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest

bench-data: $(STAMP)
	$(BIN)/python bench/bench_data.py

bench: $(STAMP)
	$(BIN)/python bench/bench_model.py --recbole

bench-behaviors: $(STAMP)
	$(BIN)/python bench/bench_behaviors.py

# The scenario recipes (docs/scenarios/): knowledge tracing on ASSISTments 2009/2017 (5 folds each, ~11 min a
# 2009 fold here), StackExchange routing, CiaoDVD with and without its trust graph; --reuse keeps done folds
bench-scenarios: $(STAMP)
	$(BIN)/python bench/bench_scenarios.py

# every Beauty user's top-50 into Parquet (needs the Beauty model of `make bench`)
bench-batch: $(STAMP)
	$(BIN)/python bench/bench_batch.py

# warm start against a full retrain on MovieLens-100k by time (~5 min)
bench-warm: $(STAMP)
	$(BIN)/python bench/bench_warm.py

# a 30-minute Optuna search on MovieLens-100k against the defaults (~35 min)
bench-tune: $(STAMP)
	$(BIN)/python bench/bench_tune.py

# Private training (user-level DP-SGD) on Beauty and MovieLens-100k at ε 1…16 and ∞, ID and text designs,
# with the membership audit of every model (BENCHMARKS.md "Privacy"),
# then federated training on Beauty (bench_federated.py, "Federated")
bench-privacy: $(STAMP)
	$(BIN)/python bench/bench_privacy.py
	$(BIN)/python bench/bench_federated.py

# Encoding, then id vs id+text on Beauty (standard and cold-item split), two seeds each (~2 h on 2 cores;
# --only/--seeds/--reuse split it over processes, see bench/bench_text.py)
bench-text: $(STAMP)
	$(BIN)/python bench/bench_text.py

# Load generators from Debian: wrk (closed-loop HTTP load); installed on first use like the browser.
bench-serve: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/python bench/bench_serve.py

# Large logs and catalogues (1M and 10M events), then 1 vs 2 DDP processes on Beauty (~40 min in all)
bench-scale: $(STAMP)
	$(BIN)/python bench/bench_scale.py
	$(BIN)/python bench/bench_ddp.py

bench-explain: $(STAMP)
	$(BIN)/python bench/bench_explain.py

ablate: $(STAMP)
	$(BIN)/python bench/ablate.py --epochs 10

# The GPU check (bench/gpu_check.py, issue 23). The lent GPU machine reaches no registry and its image lacks a
# few of our packages: gpu-carry puts their cp312 wheels (our venv's versions) and Beauty into .gpu/ (ignored,
# never committed), to be carried. On the device:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl &&
#   PYTHONPATH=/tmp/site:src python3 bench/gpu_check.py --beauty .gpu/Beauty.txt --out $$OUT
GPU_PACKAGES := polars|polars-runtime-32|fastapi|starlette|pydantic|pydantic_core|annotated-types|annotated-doc|typing-inspection|uvicorn
gpu-carry: $(STAMP)
	mkdir -p .gpu/whl
	cp ../shared/data/amazon-beauty-s3rec/Beauty.txt .gpu/
	$(BIN)/pip freeze | grep -iE '^($(GPU_PACKAGES))==' > .gpu/requirements.txt
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .gpu/whl -r .gpu/requirements.txt

# every step of the GPU check on this CPU with a tiny schedule (about a minute)
gpu-dry-run: $(STAMP)
	$(BIN)/python bench/gpu_check.py --dry-run --out /tmp/gpu_dry

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
