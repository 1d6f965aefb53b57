# Everyday commands. The README's two set-up commands need none of these.
PY ?= .venv/bin/python

.PHONY: setup test test-fast lint typecheck check ci bench demo

setup:
	python3 -m venv .venv && .venv/bin/pip install -q -e ".[dev]"

test:
	$(PY) -m pytest

test-fast:  ## everything but the tests marked slow (subprocesses, many calls)
	$(PY) -m pytest -m "not slow"

# lint and typecheck are the commands .ci/run runs before the tests; their rules are in pyproject.toml.
lint:
	$(PY) -m ruff check server tests bench

typecheck:  ## mypy --strict on server/llm_router (the files are set in pyproject.toml)
	$(PY) -m mypy

check: lint typecheck test  ## what CI checks, without its scratch PostgreSQL and Node peers

ci:  ## the whole CI run: a scratch PostgreSQL, the Node peers, lint, typecheck, tests
	bash .ci/run

bench:
	$(PY) bench/run.py

demo:
	.venv/bin/llm-router-mcp demo
