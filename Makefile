# Developer entry points. `make test` is what CI runs (see .ci/run).
PYTHON ?= python3
VENV ?= .venv
# Empty: the newest Airflow 3 release. CI also runs the suite on the floor version (3.1.3).
AIRFLOW_VERSION ?=

VPY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
# Airflow imports thousands of modules: keep their bytecode in a cache folder instead of
# recompiling them in every process (the machine sets PYTHONDONTWRITEBYTECODE).
RUN := env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=$(CURDIR)/.cache/pycache

LINT_PATHS := airflow_sfox sandbox dags tests benchmarks docker demo

.PHONY: venv install services lint pytest test screenshots docs dist demo bench bench-full soak clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet uv

venv: $(UV)

# The system services of the test tiers (tests/tiers.py), as Debian packages: PostgreSQL, MariaDB,
# Redis, Chromium with its driver, and the build dependencies of the MariaDB driver (mysqlclient).
# Needs root and apt-get; quick when everything is installed already. Tests never install them:
# without a service, its tier is skipped and named at the end of the run.
SERVICE_PACKAGES := postgresql mariadb-server redis-server chromium chromium-driver libmariadb-dev pkg-config
services:
	@missing=$$(for p in $(SERVICE_PACKAGES); do \
		dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null | grep -qx installed || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "services: all installed ($(SERVICE_PACKAGES))"; exit 0; fi; \
	echo "services: installing" $$missing; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get -o DPkg::Lock::Timeout=600 update -qq && \
	apt-get -o DPkg::Lock::Timeout=600 install -y -qq $$missing

# The MariaDB warehouse tier needs the mysql provider, whose mysqlclient builds against libmariadb:
# installed where its headers are (`make services` installs libmariadb-dev); elsewhere the test
# run names the mariadb tier as not run.
MYSQL_EXTRA := $(shell pkg-config --exists libmariadb 2>/dev/null && echo ",mysql")

# The provider, and beside it the sandbox (sfox-sandbox, its own distribution in sandbox/):
# the tests, the demo and the benchmarks run against it.
# Airflow 3.1's models.crypto sets an attribute on MultiFernet, which cryptography 51 (a Rust
# class) refuses: every connection with a password then fails to load. Airflow's own constraints
# for 3.1 pin an older cryptography; the floor install does the same.
AIRFLOW_PINS := $(if $(filter 3.1.%,$(AIRFLOW_VERSION)),"cryptography<51")

install: $(UV)
	$(UV) pip install --quiet --python $(VPY) -e ".[test$(MYSQL_EXTRA)]" -e ./sandbox \
		$(if $(AIRFLOW_VERSION),"apache-airflow==$(AIRFLOW_VERSION)") $(AIRFLOW_PINS)
	@$(VPY) -c "import airflow_sfox, sfox_sandbox, sys; print('python', sys.version.split()[0], '| airflow-provider-sfox', airflow_sfox.__version__, '| sfox-sandbox', sfox_sandbox.__version__)"

lint: install
	$(RUN) $(VENV)/bin/ruff check $(LINT_PATHS)
	$(RUN) $(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(RUN) $(VENV)/bin/mypy

pytest: install
	$(RUN) $(VPY) -m pytest $(PYTEST_ARGS)

test: lint pytest

# The README's pictures (docs/*.png), refreshed on purpose: the browser tests save their
# screenshots to a temp folder otherwise. Needs the live and chromium tiers (`make services`).
screenshots: install
	$(RUN) env SFOX_SCREENSHOT_DIR=$(CURDIR)/docs $(VPY) -m pytest -m "live and chromium" -q \
		tests/live/test_live_airflow.py tests/plugins/test_onboarding_live.py

# The release artifacts: sdist and wheel in dist/, checked by twine (metadata, README rendering).
dist: $(UV)
	rm -rf dist
	$(UV) build --out-dir dist .
	$(UV) pip install --quiet --python $(VPY) "twine>=6.1"
	$(VPY) -m twine check --strict dist/*

# Onboards ~1,000 synthetic users through the DAG against the local sandbox (a few minutes).
demo: install
	$(RUN) $(VPY) demo/run_demo.py

# Benchmarks: write REPORT.md, report.png, results.json; quick mode (about 13 minutes, 1,500 users
# at the budget) to benchmarks/, full mode (5,000 users, 1,000 HttpOperator tasks, 1M planning
# rows, parallel_chunks=1 for comparison; about 45 minutes) to benchmarks/full/.
bench: install
	$(UV) pip install --quiet --python $(VPY) -e ".[bench]"
	$(RUN) $(VPY) benchmarks/run.py --mode quick

bench-full: install
	$(UV) pip install --quiet --python $(VPY) -e ".[bench]"
	$(RUN) $(VPY) benchmarks/run.py --mode full --out benchmarks/full

SOAK_USERS ?= 5000
# The reliability promise at soak sizes: a 5,000-user onboarding under faults, then the
# reliability suite with thousands of users and Hypothesis examples (a few minutes).
soak: install
	$(RUN) $(VPY) benchmarks/soak.py --users $(SOAK_USERS) --bursts 3
	$(RUN) env SFOX_RELIABILITY_PROFILE=soak $(VPY) -m pytest tests/reliability -q

# The reference docs (docs/, Sphinx): HTML in docs/_build/html with warnings as errors and every
# internal reference checked (nitpicky; no network), then the docs' examples and generated
# tables run (tests/docs).
docs: install
	$(UV) pip install --quiet --python $(VPY) -e ".[docs]"
	$(RUN) $(VPY) -m sphinx -E -W --keep-going -n -q -b html docs docs/_build/html
	$(RUN) $(VPY) -m pytest tests/docs -q

clean:
	rm -rf .venv .venv-* .cache .demo .pytest_cache .mypy_cache .ruff_cache dist
