# Two commands set everything up: `make run` trains the default model, `make test` runs the tests
# (`make test-fast`: all but those marked slow, for the inner loop).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast install data browser clean

run: $(STAMP) data
	$(BIN)/alexnet train $(ARGS)

# Two workers, each on its share of the CPUs (tests/conftest.py); a test file stays on one worker,
# so its module fixtures (a trained run) are made once; files run in the order tests/conftest.py
# sets (longest first), not reordered by their number of tests.
XDIST := -n 2 --dist loadfile --no-loadscope-reorder
# The tests' temporary files in memory where /dev/shm is a tmpfs with 4 GB free: the export tests
# alone write and read back GBs of weights files (test_export.py 6% faster on a 2-core Xeon).
# Elsewhere, or with TMPDIR set, the usual temporary folder. Each passing test's files are removed as it ends
# (pyproject.toml: tmp_path_retention_policy).
SHM := $(shell [ -z "$$TMPDIR" ] && df -k --output=avail /dev/shm 2>/dev/null | awk 'NR == 2 && $$1 > 4000000 {print "/dev/shm"}')
# Byte code cached (in git-ignored __pycache__ folders) even where PYTHONDONTWRITEBYTECODE is set:
# the suite starts ~60 Python processes, and each would compile the package's source anew (0.35 s
# of CPU each), and each worker pytest's rewrite of the test files (2 s).
TEST_ENV := PYTHONDONTWRITEBYTECODE= $(if $(SHM),TMPDIR=$(SHM))

test: $(STAMP) data browser
	$(TEST_ENV) $(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: $(STAMP) data browser
	$(TEST_ENV) $(BIN)/python -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,tensorboard]'
	touch $(STAMP)

# Fashion-MNIST from Debian's package where apt is available (no download needed); elsewhere the
# toolkit downloads it on first use.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		{ $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; } || \
		echo "note: could not install dataset-fashion-mnist; Fashion-MNIST will be downloaded on first use"; \
	fi

# Debian's chromium for the browser test of `alexnet serve` (Playwright drives it; its own browser
# downloads are not needed). Without apt, that one test is skipped and says why.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || \
		{ $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q chromium >/dev/null; } || \
		echo "note: could not install chromium; the browser test of alexnet serve will be skipped"; \
	fi

clean:
	rm -rf $(VENV) build src/*.egg-info
