# Two entry points do all the set-up on a fresh machine:
#   make demo   installs into .venv and runs the main job on the default (MNIST-1D)
#   make test   installs into .venv (with test extras) and runs lint + the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# constraints.txt pins torch to the CPU wheel; see the comment in it.
PIP    := $(BIN)/pip install -q -c constraints.txt
OUT    ?= out/demo

.PHONY: install demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test]'
	touch $@

demo: install
	$(BIN)/lossatlas train --out $(OUT)
	$(BIN)/lossatlas show $(OUT)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/python -m pytest

bench: install
	$(PIP) -e '.[test,bench]'
	$(BIN)/python benchmarks/population.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
