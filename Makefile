# The two commands of the README: `make demo` and `make test`. Both create .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# The CPU build of torch (on local disk here); an unpinned torch would pull a multi-GB CUDA build.
TORCH   ?= torch==2.13.0
export DAGSTER_HOME := $(CURDIR)/dagster_home

.PHONY: demo test ui clean-home

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python -m ehr_assets.demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

ui: $(BIN)/.installed
	$(BIN)/dagster dev -m ehr_assets.definitions -h 127.0.0.1 -p 3000

clean-home:
	find dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
