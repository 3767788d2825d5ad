# kit: `make demo` (or `make download cv submit` with Kaggle credentials) and `make test`.
# Every target first makes .venv from pyproject.toml; a second call costs nothing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

# The oldest Python pyproject.toml allows, checked before a venv is made (or, with one there,
# on the venv's own): a one-line stop instead of pip's resolver failing half-way.
MIN_PYTHON := $(shell sed -n 's/^requires-python *= *">= *\([0-9.]*\)".*/\1/p' pyproject.toml)
CHECKED_PYTHON := $(if $(wildcard $(PY)),$(PY),$(PYTHON))
ifneq ($(filter-out clean,$(or $(MAKECMDGOALS),env)),)
PYTHON_PROBLEM := $(shell $(CHECKED_PYTHON) -c "import sys; need = tuple(map(int, '$(MIN_PYTHON)'.split('.'))); \
	print('' if sys.version_info >= need else 'kit needs Python >= $(MIN_PYTHON); $(CHECKED_PYTHON) is ' \
	+ sys.version.split()[0] + ': pick another, e.g. make demo PYTHON=python3.12' \
	+ (' (after rm -r $(VENV))' if '$(CHECKED_PYTHON)' == '$(PY)' else ''))" 2>&1 \
	|| echo "kit needs Python >= $(MIN_PYTHON); $(CHECKED_PYTHON) does not run: pick another, e.g. make demo PYTHON=python3.12")
ifneq ($(PYTHON_PROBLEM),)
$(error $(PYTHON_PROBLEM))
endif
endif
STAMP := $(VENV)/.installed-stamp
KIT := $(PY) -m kit

# Make variables, also accepted as CLI flags (python -m kit cv --help). SET: config fields,
# space-separated, each passed as --set (SET="teacher=<run-id> pseudo_labels=1").
PRESET ?=
FOLDS ?=
SEED ?=
EPOCHS ?=
SET ?=
RESUME ?= 1
REMOTE ?=
RUN ?=
MESSAGE ?=
DRY_RUN ?=
ARCHIVE ?=
FORCE ?=
REFRESH ?=
SOLUTION ?=
SESSION ?=
DEMO_DIR ?= demo

.PHONY: env download data cv submit submissions test test-fast matrix bench demo lint clean

env: $(STAMP)

# pip compiles what it installs one file after another; compileall then does it on every
# core (files that do not compile are skipped, as pip skips them), leaving out the packages'
# own test suites, which nothing imports.
INSTALL := $(PY) -m pip install --quiet --no-compile --disable-pip-version-check -e
COMPILE := $(PY) -m compileall -q -j 0 -x '/tests?/' $(VENV)/lib > /dev/null || true

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(INSTALL) '.[dev]'
	@$(COMPILE)
	@touch $(STAMP)

download: $(STAMP)
	$(KIT) download $(if $(ARCHIVE),--archive "$(ARCHIVE)") $(if $(FORCE),--force)

data: $(STAMP)
	$(KIT) data

CV_FLAGS = $(if $(PRESET),--preset $(PRESET)) $(if $(FOLDS),--folds $(FOLDS)) $(if $(SEED),--seed $(SEED)) \
	$(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(filter 0,$(RESUME)),--no-resume) \
	$(if $(REMOTE),--remote $(REMOTE)) $(foreach setting,$(SET),--set $(setting))

cv: $(STAMP)
	$(KIT) cv $(CV_FLAGS)

submit: $(STAMP)
	$(KIT) submit $(RUN) $(if $(MESSAGE),--message "$(MESSAGE)") $(if $(DRY_RUN),--dry-run) \
		$(if $(SOLUTION),--solution "$(SOLUTION)")

submissions: $(STAMP)
	$(KIT) submissions $(if $(REFRESH),--refresh)

# Two workers (pytest-xdist) that take the next test as each finishes (worksteal): modules'
# costs differ too much for a module per worker. test-fast leaves out the tests that train.
# The kit's own modules are compiled first: the tests start dozens of Python processes, and
# where PYTHONDONTWRITEBYTECODE is set each would compile them again.
TEST_WORKERS ?= 2
COMPILE_KIT := $(PY) -m compileall -q -j 0 kit tests bench > /dev/null
test: $(STAMP)
	@$(COMPILE_KIT)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

test-fast: $(STAMP)
	@$(COMPILE_KIT)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not slow"

# The test matrix (noxfile.py): newest versions, Kaggle's image, the declared floor. Each
# session wants its Python on PATH (python3.12, python3.11); pyenv's are all put there.
NOX_PYENV := $(if $(shell command -v pyenv),PYENV_VERSION=$$(pyenv versions --bare | tr '\n' ':'))
matrix: $(STAMP)
	$(NOX_PYENV) $(VENV)/bin/nox $(if $(SESSION),-s $(SESSION))

BENCH_STAMP := $(VENV)/.installed-bench-stamp

$(BENCH_STAMP): $(STAMP)
	$(INSTALL) '.[dev,bench]'
	@$(COMPILE)
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m bench

lint: $(STAMP)
	$(PY) -m ruff check kit tests bench
	$(VENV)/bin/lint-imports

# The whole path on a synthetic competition: no Kaggle account, a few minutes on a laptop.
demo: $(STAMP)
	$(KIT) synth $(DEMO_DIR)/competition
	$(KIT) --data $(DEMO_DIR)/data --runs $(DEMO_DIR)/cv download --archive $(DEMO_DIR)/competition/facial-keypoints-detection.zip
	$(KIT) --data $(DEMO_DIR)/data --runs $(DEMO_DIR)/cv cv --preset demo
	$(KIT) --data $(DEMO_DIR)/data --runs $(DEMO_DIR)/cv submit --dry-run --out $(DEMO_DIR)/submissions --solution $(DEMO_DIR)/competition/solution.csv

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
