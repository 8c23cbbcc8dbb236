# Two commands: `make demo` and `make test`. Both build .venv on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install bench bench-data bench-behaviors bench-text ablate clean

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

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest

bench-data: $(STAMP)
	$(BIN)/python bench/bench_data.py

bench: $(STAMP)
	$(BIN)/python bench/bench_model.py --recbole

bench-behaviors: $(STAMP)
	$(BIN)/python bench/bench_behaviors.py

bench-text: $(STAMP)
	$(BIN)/python bench/bench_text.py

ablate: $(STAMP)
	$(BIN)/python bench/ablate.py --epochs 10

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
