# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test lint typecheck benchmark clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	PY=$(PY) bash scripts/demo.sh

test: $(VENV)/.installed
	bash scripts/docker-engine.sh
	bash scripts/browser.sh
	$(PY) -m ruff check lanworker tests benchmarks
	$(PY) -m mypy
	$(PY) -m pytest -ra $(PYTEST_ARGS)
	bash scripts/other-pythons.sh

lint: $(VENV)/.installed
	$(PY) -m ruff check lanworker tests benchmarks
	$(PY) -m ruff format --check lanworker tests benchmarks

typecheck: $(VENV)/.installed
	$(PY) -m mypy

benchmark: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) benchmarks/staging.py
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/translator.py
	$(PY) benchmarks/front_door.py --store sqlite
	$(PY) benchmarks/polling.py  # these two need the docker engine (scripts/docker-engine.sh)
	$(PY) benchmarks/submit.py

clean:
	rm -rf $(VENV) .venv-3.10 .venv-3.13 demo-output .pytest_cache .mypy_cache .ruff_cache
