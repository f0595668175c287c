# The two commands of the README. Both do their own set-up (scripts/setup.sh: .venv + install).
.PHONY: setup demo test bench

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/fmadask run jobs/demo.toml

test: setup
	.venv/bin/python -m pytest -q

bench: setup
	for b in tests/benchmarks/bench_*.py; do .venv/bin/python $$b || exit 1; done
