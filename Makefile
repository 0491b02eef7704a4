# Two entry points do all the set-up on a fresh machine:
#   make demo   installs into .venv and runs the main job on the default (MNIST-1D)
#   make test   installs into .venv (with test extras) and runs lint + the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# constraints.txt pins torch to the CPU wheel; see the comment in it.
PIP    := $(BIN)/pip install -q -c constraints.txt
OUT    ?= out/demo

.PHONY: install demo test lint bench clean browser

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test]'
	touch $@

demo: install
	$(BIN)/lossatlas run --out $(OUT)
	@echo "open $(OUT)/report.html"

lint: install
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

# The report's browser test needs Debian's chromium; install it when we can (root + apt),
# otherwise that one test skips with a clear reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || true; }

# Two pytest-xdist workers, one module each at a time (module fixtures are built once): the
# suite is mostly single-threaded (plots, subprocess runs, Python loops), so two processes on
# two cores beat one. tests/conftest.py gives each worker its share of the cores' threads.
test: lint browser
	$(BIN)/python -m pytest -n 2 --dist loadscope

bench: install
	$(PIP) -e '.[test,bench]'
	$(BIN)/python benchmarks/population.py
	$(BIN)/python benchmarks/curvature.py
	$(BIN)/python benchmarks/spectrum.py
	$(BIN)/python benchmarks/surface.py
	$(BIN)/python benchmarks/embedding_memory.py
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/ray_overhead.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
