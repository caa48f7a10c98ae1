# bk — the two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help deps test lint sanity unit molecule demo demo-down build bench clean

help:
	@echo "make demo       deploy and back up a lab fleet, then show it in the reporter"
	@echo "make demo-down  stop the lab fleet and the reporter started by make demo"
	@echo "make test       install what the tests need, then run every test and quality gate"
	@echo "make lint       ruff, yamllint, ansible-lint only"
	@echo "make sanity     ansible-test sanity only"
	@echo "make unit       pytest only"
	@echo "make build      build the collection tarball"
	@echo "make bench      run every benchmark once, write docs/benchmarks.md (long; BENCH_ARGS=--help)"

deps:
	@scripts/bootstrap.sh

test: deps
	@scripts/test.sh all

lint: deps
	@scripts/test.sh lint

sanity: deps
	@scripts/test.sh sanity

unit: deps
	@scripts/test.sh pytest

molecule: deps
	@scripts/test.sh molecule

demo: deps
	@scripts/demo.sh up

demo-down:
	@scripts/demo.sh down

build: deps
	@.venv/bin/ansible-galaxy collection build --force --output-path .cache/dist .

bench: deps
	@source scripts/env.sh && BK_BENCH_VIA_MAKE=1 .venv/bin/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf .cache/dist tests/output .pytest_cache .ruff_cache
