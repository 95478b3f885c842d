# Two entry points: `make demo` (the main job) and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test docs format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned to the CPU build CI tests: the package asks only for torch>=2.8 (an environment's own
	# torch, a CUDA build included, stays), which with no torch yet would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,tokenizers,docs]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/powersweep demo

test: $(STAMP)
	$(VENV)/bin/ruff format --check --quiet . || { echo "the tree is not formatted: run make format"; exit 1; }
	$(VENV)/bin/ruff check --quiet .
	# Two test files at a time, each file's tests in one process (pytest-xdist): sweeps wait on Ray, trial
	# processes and kills for part of their wall, which the other file's tests fill. PYTHONFAULTHANDLER: a
	# crash in any of those processes, even at exit, prints every thread's stack.
	PYTHONFAULTHANDLER=1 $(PY) -m pytest -q -n 2 --dist loadfile

# the generated reference pages (spec, its JSON Schema, command line), then the site, offline, warnings as errors
docs: $(STAMP)
	$(PY) docs/gen_reference.py
	$(VENV)/bin/mkdocs build --strict --quiet

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache site
