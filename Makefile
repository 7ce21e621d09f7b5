.PHONY: install test lint bench serve

install:
	./scripts/install.sh

test:
	.venv/bin/pytest

lint:
	.venv/bin/ruff check .
	.venv/bin/mypy

bench:
	.venv/bin/python -m bench

serve:
	.venv/bin/control-tower serve
