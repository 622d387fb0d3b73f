# The documented entry points. `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: venv services demo test test-deploy lint docs format bench bench-quick bench-docker bench-reliability bench-partitions soak chaos notebook report ui traces test-traces dagster-home clean images up down deploy rollback

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

## demo: 20 orders at 30% injected faults on the embedded default (SQLite, local files, offline model)
demo: venv
	$(BIN)/agentforge demo --orders 20 --fault-rate 0.3 --seed 7

## services: start what the tests need (PostgreSQL; the S3 server is started by the fixtures)
services:
	scripts/start-services.sh

## test: the whole suite, with the services it needs, on two workers (the tests of the Docker
## stack share it on one worker)
test: venv services
	$(BIN)/pytest -n 2 --dist loadgroup

## test-deploy: the compose deployment brought up whole by the README's commands
## (docker/deploy-steps.sh) in a copy of this tree, orders taken the three ways and delivered,
## then torn down (tests/stack; images cached after the first run)
test-deploy: venv services
	AGENTFORGE_STACK_RESULTS=$(CURDIR)/bench/DEPLOY.md $(BIN)/pytest -p no:cacheprovider -m stack tests/stack

lint: venv
	$(BIN)/ruff check agentforge_dagster tests bench
	$(BIN)/ruff format --check agentforge_dagster tests bench
	$(BIN)/mypy agentforge_dagster
	$(BIN)/vulture
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

## traces: Phoenix, a trace viewer, on loopback with authentication, in a venv of its own
## (scripts/phoenix.sh; `make -s traces ARGS=--env` prints the variables that point the project at it)
traces:
	bash scripts/phoenix.sh $(ARGS)

## test-traces: two orders through the Docker run launcher, their traces read back from Phoenix
## (tests/deploy/test_phoenix.py; Phoenix's venv made once per machine)
test-traces: venv services
	bash scripts/phoenix.sh --venv-only
	$(BIN)/pytest -p no:cacheprovider -m traces tests/deploy/test_phoenix.py

## docs: the documentation site, built into build/site/ (docs/, with pages generated from the code)
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

format: venv
	$(BIN)/ruff format agentforge_dagster tests bench
	$(BIN)/ruff check --fix agentforge_dagster tests bench

## bench: the benchmark suite, full profile (about 40 minutes): ours in-process and under the daemon
## against the plain asyncio + tenacity script, side by side (results and figures to
## bench/RESULTS.md), then the Docker run launcher (bench-docker, bench/DOCKER.md)
bench: venv services
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/suite.py --profile full --write bench/RESULTS.md
	$(MAKE) bench-docker

## bench-quick: the same suite on a few orders (under 5 minutes); prints, writes nothing
bench-quick: venv
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/suite.py --profile quick

## bench-docker: benchmark (d), 20 orders at f = 0.3 with the Docker run launcher (installs the
## engine and builds the images as make test does); writes bench/DOCKER.md
bench-docker: venv services
	AGENTFORGE_BENCH_DOCKER_FAULT_RATE=0.3 $(BIN)/pytest -p no:cacheprovider -m bench \
		tests/deploy/test_bench_docker.py

## bench-reliability: the in-process reliability table by fault rate and seed (bench/RELIABILITY.md)
bench-reliability: venv
	$(BIN)/python bench/reliability.py --write bench/RELIABILITY.md

## bench-partitions: what 10k and 100k order partitions cost (sensor tick, adding one, the UI's
## Partitions tab in a real dagster-webserver) beside 100, on throwaway PostgreSQL databases of the
## server at 127.0.0.1:5432 (make services); results to bench/PARTITIONS.md (about 2 minutes)
bench-partitions: venv
	$(BIN)/python bench/partitions.py --write bench/PARTITIONS.md

## soak: 100 orders under the real daemon (faults, a SIGKILL mid-way); figures to bench/SOAK.md
soak: venv services
	AGENTFORGE_SOAK_ORDERS=100 AGENTFORGE_SOAK_RESULTS=$(CURDIR)/bench/SOAK.md \
		$(BIN)/pytest -p no:cacheprovider --timeout 1800 \
		tests/orchestration/test_daemon.py::test_orders_under_the_daemon_with_faults_a_killed_daemon_and_launches_by_hand

## chaos: the fault campaign on its own production stack (PostgreSQL cluster, S3 server, daemon);
## one fault a phase; figures to bench/CHAOS.md (about 30 minutes; not part of make test)
chaos: venv
	$(BIN)/python bench/chaos.py --write bench/CHAOS.md

## notebook: the reliability notebook in Jupyter, over the instance the demo wrote to
notebook: venv
	$(BIN)/pip install --quiet -e '.[notebook]'
	$(BIN)/jupyter notebook notebooks/reliability.ipynb

## report: the notebook executed to HTML (build/reliability.html), figures included
report: venv
	mkdir -p build
	MPLBACKEND=Agg $(BIN)/jupyter nbconvert --to html --execute notebooks/reliability.ipynb --output-dir build

## ui: the Dagster UI over the same instance the demo wrote to (created empty if there is none yet)
ui: venv dagster-home
	$(BIN)/dagster dev -w workspace.yaml

## dagster-home: the instance folder and its dagster.yaml (SQLite storage, telemetry off), as the CLI makes it
dagster-home:
	mkdir -p "$(DAGSTER_HOME)"
	test -f "$(DAGSTER_HOME)/dagster.yaml" || printf 'telemetry:\n  enabled: false\n' > "$(DAGSTER_HOME)/dagster.yaml"

## images: the base image (once per machine) and the project image of this tree; prints the tag
images:
	bash docker/install-engine.sh
	bash docker/build-base-image.sh
	bash docker/build-image.sh | tail -n1

## up / down: the compose deployment (needs docker/.env, see docker/compose.env.example)
up:
	docker-compose -f docker/compose.yaml up -d

down:
	docker-compose -f docker/compose.yaml down

## deploy IMAGE=agentforge:TAG / rollback: switch the code location's image (agentforge deploy)
deploy: venv
	@test -n "$(IMAGE)" || { echo "usage: make deploy IMAGE=agentforge:TAG" >&2; exit 2; }
	$(BIN)/agentforge deploy --image $(IMAGE)

rollback: venv
	$(BIN)/agentforge rollback

clean:
	rm -rf .dagster_home .agentforge
