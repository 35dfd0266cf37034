# Smart Factory Data Platform — the menu. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)/include
# make run's environment (also ./.env, unless that file is a deployment's: see launcher)
RUN_ENV := $(CURDIR)/var/$(or $(SFDP_RUN_INSTANCE),run)/.env
export DBT_SEND_ANONYMOUS_USAGE_STATS := false

.PHONY: help run stop status test test-fast bench chaos docs dbt-dev dbt-ci backfill lint requirements image-check clean

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements/dev.txt requirements/bootstrap.txt scripts/bootstrap-venv.sh
	scripts/bootstrap-venv.sh
	touch $@

# `make run EXECUTOR=celery WORKERS=3`: Airflow's CeleryExecutor, a private Redis and 3 workers
EXECUTOR    ?= local
WORKERS     ?= 2
CONCURRENCY ?= 4

run: $(STAMP)  ## start PostgreSQL, the simulated plant and Airflow (UI on :8080); EXECUTOR=celery WORKERS=n
	$(PY) -m launcher run --executor $(EXECUTOR) --workers $(WORKERS) --concurrency $(CONCURRENCY)

stop:  ## stop everything `make run` started
	@if [ -x $(PY) ]; then $(PY) -m launcher stop; else echo "nothing to stop (no .venv)"; fi

status:  ## show what `make run` started and whether it is running
	$(PY) -m launcher status

test: $(STAMP)  ## run the whole test suite on its own private PostgreSQL (port 55433)
	scripts/test-prereqs.sh
	$(PY) -m pytest

test-fast: $(STAMP)  ## the tests without the slow end-to-end ones
	$(PY) -m pytest -m "not slow"

bench: $(STAMP)  ## run the benchmarks; writes bench/results.json
	$(PY) -m bench

chaos: $(STAMP)  ## 24 plant-hours, every delivery fault, an outage, a Postgres restart: nothing lost (~15 min)
	$(PY) bench/chaos.py $(CHAOS_ARGS)

docs: $(STAMP)  ## generate dbt docs (needs `make run` for the warehouse) and say where they are
	set -a; . $(RUN_ENV); set +a; cd dbt_project && ../$(VENV)/bin/dbt docs generate --profiles-dir . --quiet
	@echo "dbt docs: open file://$(CURDIR)/dbt_project/target/index.html (or: cd dbt_project && ../$(VENV)/bin/dbt docs serve --profiles-dir . --port 8081)"

# The dbt developer's loop (README): your own schemas (dev_<user>_staging, …), never production's.
# `make dbt-dev SELECT=selector:marts` (or any --select; empty: the whole project);
# DBT_DEV_SCHEMA_PREFIX=dev_anna names the schemas. Its artifacts go to target/dev, not to the
# manifest Airflow renders transform_dbt from.
SELECT ?=
DBT_CLI := $(VENV)/bin/dbt
DBT_DIRS := --project-dir dbt_project --profiles-dir dbt_project

dbt-dev: $(STAMP)  ## dbt build --target dev into your own dev_<user>_* schemas: make dbt-dev SELECT=selector:marts
	set -a; . $(RUN_ENV); set +a; $(DBT_CLI) build $(DBT_DIRS) --target dev --target-path $(CURDIR)/dbt_project/target/dev $(if $(SELECT),--select $(SELECT))

# Slim CI: the models changed against the production manifest (git BASE, default HEAD: your
# uncommitted changes; or STATE=<folder of a production manifest.json>) and everything
# downstream, built into dev_* schemas, the rest read from production (--defer).
BASE ?= HEAD
STATE ?=

dbt-ci: $(STAMP)  ## slim CI: build state:modified+ against the production manifest (BASE=HEAD or STATE=dir)
	set -a; . $(RUN_ENV); set +a; DBT_DEV_SCHEMA_PREFIX=$${DBT_DEV_SCHEMA_PREFIX:-dev_ci} $(PY) -m factory_platform.dbt_project ci $(if $(STATE),--state $(STATE),--base $(BASE))

backfill: $(STAMP)  ## backfill one DAG over a range: make backfill DAG=extract_mes FROM=2026-10-19 TO=2026-10-20
	@test -n "$(DAG)" -a -n "$(FROM)" -a -n "$(TO)" || { echo "usage: make backfill DAG=extract_mes FROM=2026-10-19T00:00 TO=2026-10-20T00:00"; exit 2; }
	set -a; . $(RUN_ENV); set +a; $(VENV)/bin/airflow backfill create --dag-id $(DAG) --from-date $(FROM) --to-date $(TO) --reprocess-behavior completed

lint: $(STAMP)  ## ruff (+ Airflow's AIR rules), import contracts, SQLFluff on the dbt models, dbt project rules
	$(VENV)/bin/ruff check dags include plugins tests bench
	PYTHONPATH=include:. $(VENV)/bin/lint-imports --no-cache --no-logo
	cd dbt_project && ../$(VENV)/bin/sqlfluff lint models --processes 2
	$(PY) -m factory_platform.dbt_rules

requirements:  ## re-resolve requirements.txt (runtime) and requirements/dev.txt (tests, tools) (needs uv)
	$(VENV)/bin/uv pip compile --python-version 3.11 requirements/requirements.in \
	  --excludes requirements/excludes.txt -o requirements.txt --no-header --no-annotate
	$(VENV)/bin/uv pip compile --python-version 3.11 requirements/dev.in -c requirements.txt \
	  -o requirements/dev.txt --no-header --no-annotate

image-check: $(STAMP)  ## the image's dependency set alone: fresh venv, requirements.txt --no-deps, pip check
	$(PY) deploy/pip_check.py --fresh-venv var/image-check/venv

clean: stop  ## stop, then delete everything generated (virtualenv, clusters, .env)
	rm -rf $(VENV) var .env dbt_project/target dbt_project/logs
