# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.12
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Keep every cache inside the project, never in ~.
export HF_HOME := $(CURDIR)/.cache/huggingface
export HF_DATASETS_CACHE := $(CURDIR)/.cache/huggingface/datasets
export HF_HUB_OFFLINE ?= 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install demo test lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m jobs.demo $(ARGS)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf .cache outputs .pytest_cache
