# s2fault: `make check` runs the variant matrix, `make test` runs the tests.
# Both install what they need on first use (ci/setup-host.sh) and skip it after.

VENV     := .venv
S2FAULT  := $(VENV)/bin/s2fault
PYTEST   := $(VENV)/bin/pytest
RESULTS  ?= results/latest

.PHONY: help setup check check-workloads calibrate test test-quick fresh-check bench bench-bisect soak report lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

setup: ## install apt packages and the venv (no-op when present)
	@ci/setup-host.sh

check: setup ## build the variant matrix, boot, judge, print the verdict table
	$(S2FAULT) check --results $(RESULTS) --junit $(RESULTS)/junit.xml --tap $(RESULTS)/check.tap

check-workloads: setup ## every workload (multi-VM, storm, coherence, many blocks, selftests) on every variant
	$(S2FAULT) check --workload all --results $(RESULTS)-workloads --junit $(RESULTS)-workloads/junit.xml

calibrate: setup ## the altra-max model against the seed's figures: 1..64 vCPUs, fix-reverted and upstream (long; not CI)
	$(S2FAULT) calibrate --mode altra-max --results $(RESULTS)-calibrate --json $(RESULTS)-calibrate/summary.json
	cp $(RESULTS)-calibrate/scaling.svg docs/altra-max-scaling.svg

test: setup ## run every test that must pass (real builds and boots included)
	$(PYTEST) -ra --durations=15

test-quick: setup ## the quick loop: tests that neither build nor boot
	$(PYTEST) -ra -m "not slow"

fresh-check: ## the two commands above in a brand-new Debian 12 root (debootstrap; long; not in `make test`)
	@ci/fresh-check.sh

bench: setup ## the analyzer's golden scores and speed, then the issue's timings beside their goals (BENCH=--cold adds a cold check)
	$(VENV)/bin/python bench/score_goldens.py
	$(VENV)/bin/python bench/bench_analyzer.py
	$(VENV)/bin/python bench/bench.py $(BENCH)

soak: setup ## run the functional matrix 20 times: false positives, misses, leftovers
	$(VENV)/bin/python bench/soak.py --iterations 20

bench-bisect: setup ## time a 16-commit bisection
	$(VENV)/bin/python bench/bench_bisect.py

report: setup ## JUnit, TAP and HTML reports of a results directory (RESULTS=...)
	$(S2FAULT) report $(RESULTS)

lint: setup ## ruff and mypy for Python, checkpatch for patches/ and guests/, ci/ up to date
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m s2fault.lint
	$(VENV)/bin/python -m s2fault.cimatrix --check

clean: ## remove results and the venv (the kernel cache stays: see README)
	rm -rf $(VENV) results guests/build
