# Every target makes its own virtual environment: a fresh machine needs only Python 3.10+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Two stamps on one venv: RUN_STAMP is the runtime install alone (what `make demo` needs),
# STAMP adds the test and lint extras (what `make test` needs).
RUN_STAMP := $(VENV)/.installed-run
STAMP     := $(VENV)/.installed

.PHONY: demo test lint typecheck unit test-install fuzz bench bench-smoke clean

$(RUN_STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	# An editable install leaves the package uncompiled; compile it as pip does for a regular
	# install, so that no command pays for compiling at start-up (PYTHONDONTWRITEBYTECODE).
	$(BIN)/python -m compileall -q vault >/dev/null
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -e '.[test,postgres]'
	touch $(STAMP)

demo: $(RUN_STAMP)
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check vault tests cli.py scripts
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

# The Secret Service tests need a D-Bus session of their own: .ci/run runs them in it.
unit: $(STAMP)
	$(BIN)/pytest -q -n 2 -m 'not install and not secret_service'

# Build the wheel, install it in a fresh venv outside the checkout and run it (tests/test_install.py).
test-install: $(STAMP)
	$(BIN)/pytest -q -m install tests/test_install.py

test: lint unit

# The long fuzzing run: every parser target of tests/test_fuzz.py with 2000 examples each
# (the normal suite runs 30). EVAULT_FUZZ_EXAMPLES=N make fuzz to choose another number.
fuzz: $(STAMP)
	EVAULT_FUZZ_EXAMPLES=$${EVAULT_FUZZ_EXAMPLES:-2000} $(BIN)/pytest -q -n 2 tests/test_fuzz.py

# Benchmarks against the stock tools (benchmarks/README.md). bench: full scale, 1 GiB files
# and a million custody events, 20-25 minutes on two cores (case 10 needs PostgreSQL:
# EVAULT_BENCH_PG_URL or EVAULT_TEST_PG_URL); bench-smoke: every
# case scaled down to seconds, to check that the harness works (not the goals).
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --scale full

bench-smoke: $(STAMP)
	$(BIN)/python benchmarks/run.py --scale smoke --rounds 1
	$(BIN)/python benchmarks/floor.py --files 200 --gib 0.0625

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
