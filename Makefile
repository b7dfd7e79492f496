# fastlb: `make run` and `make test` work on a fresh Debian machine as root.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
CONFIG ?=
# The interpreter the venv is made from: Debian's own when there is one, even if another
# python3 comes first on PATH (pyenv's, say). Debian's links CPython into its executable; a
# default pyenv build runs it from libpython3.11.so, a position-independent shared library,
# and every C-API call of the data path pays for that: `python -m bench.exchange` measured
# fastlb's own work per request taking 22% longer on one, and a whole request 6% dearer in CPU
# (README, "Which Python"). `make PYTHON=python3.12 ...` picks another; changing it remakes
# the venv.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)

.PHONY: all setup compile run test lint typecheck unit bench hardening fuzz report images clean FORCE

all: test

# Debian's python3 lacks venv/ensurepip until python3-venv is installed.
# $(STAMP): the venv with fastlb and what it runs on, which is all `make run` installs.
# setuptools warns on every editable install that a folder named like the package may shadow
# it: true of any checkout, and here the checkout is the point. PIP_QUIET silences that one
# warning by its text, and nothing else.
PIP_QUIET := PYTHONWARNINGS='ignore:Editable installation'
$(STAMP): setup.cfg pyproject.toml $(VENV)/.interpreter
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip; }
	$(PYTHON) -m venv --clear $(VENV)
	echo '$(PYTHON)' > $(VENV)/.interpreter
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PIP_QUIET) $(PY) -m pip install -q -e .
	touch $@

# mypyc (it comes with mypy) for `make compile`: the `native` extra.
NATIVE_DEPS := $(VENV)/.native-stamp
$(NATIVE_DEPS): $(STAMP)
	$(PIP_QUIET) $(PY) -m pip install -q -e '.[native]'
	touch $@

# The test, lint and analysis tools: the `dev` extra, for `make test` and the targets below.
DEV_STAMP := $(VENV)/.dev-stamp
$(DEV_STAMP): $(STAMP)
	$(PIP_QUIET) $(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(DEV_STAMP)

# Rewritten (so newer than the stamp) only when PYTHON names another interpreter than the one
# the venv was made from; `venv --clear` above then makes it afresh.
$(VENV)/.interpreter: FORCE
	@mkdir -p $(VENV)
	@echo '$(PYTHON)' | cmp -s - $@ || echo '$(PYTHON)' > $@

FORCE:

# The data path compiled to C by mypyc (fastlb/_native.py says why and which modules); built
# again whenever a source changes. fastlb runs the same code from source where it is not built.
NATIVE_STAMP := build/.native-stamp
HAVE_CC := command -v gcc >/dev/null && $(PY) -c 'import os, sysconfig, sys; \
  sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'
$(NATIVE_STAMP): $(NATIVE_DEPS) $(shell find fastlb -name '*.py')
	@$(HAVE_CC) 2>/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc python3-dev; }
	$(PY) -c 'from fastlb._native import build; build()'
	@mkdir -p build && touch $@

compile: $(NATIVE_STAMP)

# Only what running needs: fastlb's dependencies and mypyc to compile its data path.
run: $(STAMP)
	@$(MAKE) --no-print-directory compile || echo "fastlb: data path not compiled; running it from source"
	$(VENV)/bin/fastlb $(if $(CONFIG),--config $(CONFIG))

lint: setup
	$(VENV)/bin/ruff check fastlb replica bench tests

typecheck: setup
	$(VENV)/bin/mypy

# The whole suite on the compiled data path, then the data path's own tests from source.
unit: setup compile
	$(PY) -m pytest -q
	FASTLB_PURE=1 $(PY) -m pytest -q tests/test_proxy.py tests/test_exchange.py tests/test_parsers.py \
	  tests/test_response.py tests/test_native.py tests/test_outbox.py

test: lint typecheck unit

bench: setup compile
	$(PY) -m bench.run

# The hostile-input corpus against fastlb (both parsers), HAProxy and nginx, side by side.
hardening: setup compile
	$(PY) -m bench.hardening

# The long fuzz run (the suite runs 1000 exchanges a parser): mutated requests against the
# head parsers, the chunked framer and a real fastlb behind the strict recorder.
fuzz: setup compile
	$(PY) -m bench.fuzz --inputs 100000

# The spec's analysis (A-1..A-4) against fresh balancers: report/report.md and its charts.
report: setup
	$(PY) -m fastlb.analyze

# Needs a running Docker engine, mmdebstrap and python3-pip (see .ci/run); no registry is used.
images:
	bash docker/build-images.sh

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
	find fastlb -name '*.so' -delete
