# The targets the README shows and CI runs.
PYTHON ?= python3
VENV ?= .venv
CONFIG ?= config/qprserver.example.toml
BIN := $(VENV)/bin

.PHONY: venv serve test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.installed

serve: venv
	$(BIN)/qprserver --config $(CONFIG) init
	$(BIN)/qprserver --config $(CONFIG) serve

test: venv
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check qprserver tests $(wildcard bench)
	$(BIN)/ruff format --check qprserver tests $(wildcard bench)
	$(BIN)/mypy qprserver

bench: venv
	$(BIN)/python bench/run.py $(if $(QUICK),--quick,) $(BENCH_ARGS)
	$(BIN)/python bench/web.py $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
