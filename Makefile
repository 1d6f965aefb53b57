# Everyday commands. The README's two set-up commands need none of these.
PY ?= .venv/bin/python

.PHONY: setup test test-fast lint typecheck bench demo

setup:
	python3 -m venv .venv && .venv/bin/pip install -q -e ".[dev]"

test:
	$(PY) -m pytest

test-fast:  ## everything but the tests marked slow (subprocesses, many calls)
	$(PY) -m pytest -m "not slow"

lint:
	$(PY) -m ruff check server tests bench

typecheck:  ## needs mypy: .venv/bin/pip install mypy
	$(PY) -m mypy server/llm_router

bench:
	$(PY) bench/run.py

demo:
	.venv/bin/llm-router-mcp demo
