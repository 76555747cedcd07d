# Two commands set everything up and test: `make setup` then `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test lint demo bench

setup:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[dev]" torch==2.14.1 torchvision==0.29.1

test:
	$(BIN)/python -m pytest

lint:
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/mypy

demo:
	$(BIN)/unitlens record --model efficientnet_lite0 --data demo --out atlas/lite0-demo

bench:
	$(BIN)/python benchmarks/record_overhead.py
