# fastlb: `make run` and `make test` work on a fresh Debian machine as root.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
CONFIG ?=

.PHONY: all setup run test lint typecheck unit bench report images clean

all: test

# Debian's python3 lacks venv/ensurepip until python3-venv is installed.
$(STAMP): setup.cfg pyproject.toml
	@python3 -c 'import venv, ensurepip' 2>/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip; }
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(STAMP)

run: setup
	$(VENV)/bin/fastlb $(if $(CONFIG),--config $(CONFIG))

lint: setup
	$(VENV)/bin/ruff check fastlb replica bench tests

typecheck: setup
	$(VENV)/bin/mypy

unit: setup
	$(PY) -m pytest -q

test: lint typecheck unit

bench: setup
	$(PY) -m bench.run

# The spec's analysis (A-1..A-4) against fresh balancers: report/report.md and its charts.
report: setup
	$(PY) -m fastlb.analyze

# Needs a running Docker engine, mmdebstrap and python3-pip (see .ci/run); no registry is used.
images:
	bash docker/build-images.sh

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
