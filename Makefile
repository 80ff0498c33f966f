# Two commands to a running demo and a green suite: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_HOME := $(CURDIR)/var/dagster_home
# hk demo writes the day its first rollup starts there: the demo's partitions start with its data.
DEMO_PARTITIONS_START = $(shell cat $(CURDIR)/var/partitions_start 2>/dev/null)
DEMO_ENV = DAGSTER_HOME=$(DEMO_HOME) HK_CONFIG=$(CURDIR)/hk.yaml \
	$(if $(DEMO_PARTITIONS_START),HK_PARTITIONS_START=$(DEMO_PARTITIONS_START))

.PHONY: install demo dev test lint bench-cleanup bench-rollup bench-rules bench-backtest bench-logs bench-pg-health clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(DEMO_HOME)/dagster.yaml: deploy/dagster.demo.yaml
	mkdir -p $(DEMO_HOME)
	cp deploy/dagster.demo.yaml $@

demo: install $(DEMO_HOME)/dagster.yaml
	$(DEMO_ENV) $(BIN)/hk demo

# The UI on the demo, with live traffic (hk demo traffic) started and stopped with it.
dev: install $(DEMO_HOME)/dagster.yaml
	$(DEMO_ENV) $(BIN)/hk demo traffic & traffic=$$!; \
	trap 'kill $$traffic 2>/dev/null' EXIT INT TERM; \
	$(DEMO_ENV) $(BIN)/dagster dev --host 127.0.0.1 --port 3000 -w workspace.yaml

# One process by default: the end-to-end tests wait on a live daemon, and a second worker beside
# them on a 2-core machine makes their timeouts depend on the load. PYTEST_ARGS="-n 2 --dist
# loadgroup" runs two pytest-xdist workers (one test file a group, the e2e tests in one group).
PYTEST_ARGS ?=
test: install
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench-cleanup: install
	$(BIN)/python bench/bench_cleanup.py

bench-rollup: install
	$(BIN)/python bench/bench_rollup.py

bench-rules: install
	$(BIN)/python bench/bench_rules.py

bench-backtest: install
	$(BIN)/python bench/bench_backtest.py

bench-pg-health: install
	$(BIN)/python bench/bench_pg_health.py

clean:
	rm -rf var .pytest_cache

bench-logs: install
	$(BIN)/python bench/bench_logs.py
