# Two commands set everything up and test: `make setup` then `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup chromium test lint docs demo bench

setup:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[dev]" torch==2.14.1 torchvision==0.29.1
	@$(MAKE) --no-print-directory chromium

# headless Chromium for the explorer's browser tests (tests/test_explorer_browser.py); needs root and apt
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q && apt-get install -y -q chromium; } \
	  || echo "warning: could not install chromium (apt-get install -y chromium as root); the browser tests will be skipped"

test:
	$(BIN)/python -m pytest

# ruff's docstring rules (numpy convention, pyproject.toml) on the modules that define the public API; left out:
# D105 (magic methods), D205/D209 (the summary may wrap; closing quotes end the text), D401 (summaries name
# what is returned: "The atlas of an entry"), D403/D404 (a docstring may start with a code name or "This")
DOCSTRING_RULES := --select D --ignore D105,D205,D209,D401,D403,D404

lint:
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff check $(DOCSTRING_RULES) $$($(BIN)/python scripts/public_modules.py)
	$(BIN)/mypy

# the docs site (MkDocs, warnings are errors) into site/
docs:
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

demo:
	$(BIN)/unitlens record --model efficientnet_lite0 --data demo --out atlas/lite0-demo

bench:
	$(BIN)/python benchmarks/record_overhead.py
