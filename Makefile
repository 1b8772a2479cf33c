# Tocsin's interface: every workflow is one of these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
PACKAGES := libs/common libs/client services/gateway services/ingest services/processor \
	services/notifier services/scheduler
PYPROJECTS := $(addsuffix /pyproject.toml,$(PACKAGES))
SOURCES := libs services tests conftest.py
PYTEST_ARGS ?=

.PHONY: setup run test lint fmt bench chaos conformance clean image

setup: $(STAMP)

# Re-run the install whenever the pins or any distribution's metadata change.
$(STAMP): constraints.txt requirements-dev.txt $(PYPROJECTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(BIN)/python -m pip install --quiet \
		--disable-pip-version-check -r requirements-dev.txt $(addprefix -e ,$(PACKAGES))
	touch $(STAMP)

# `make run PORT=8100` puts the five services on 8100-8104 (default 8080-8084).
run: $(STAMP)
	$(BIN)/tocsin dev $(if $(PORT),--base-port $(PORT))

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy libs/common/src libs/client/src services/*/src

fmt: $(STAMP)
	$(BIN)/ruff check --fix $(SOURCES)
	$(BIN)/ruff format $(SOURCES)

bench: $(STAMP)
	$(BIN)/python -m tests.load $(BENCH)

# Every chaos scenario in its long form (minutes of traffic per fault); `make test`
# runs the short forms only.
chaos: $(STAMP)
	TOCSIN_CHAOS=long $(BIN)/python -m pytest tests/chaos -s $(PYTEST_ARGS)

# Outside conformance suites against real servers (tests/conformance; CHECK= picks some).
conformance: $(STAMP)
	$(BIN)/python -m tests.conformance $(CHECK)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

image:
	docker build -t tocsin:dev .
