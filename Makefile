# The two commands: `make run` (the site with demo images, a worker and an admin login)
# and `make test` (the whole suite). Both build the virtual environment on first use.
PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
# The tests' embedded servers live apart from the dev site's.
TEST_DATA_DIR := $(or $(IMAGEREC_DATA_DIR),.devdata)/test

.PHONY: run test bench services-start services-stop

$(STAMP): requirements.txt
	test -x $(VENV_PY) || $(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --quiet --upgrade pip
	$(VENV_PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

run: $(STAMP)
	$(VENV_PY) -m devtools.run

# Starts the tests' own PostgreSQL and Redis, runs pytest with their URLs, stops them.
# pytest exits 5 when it collects no tests; say so plainly instead of failing obscurely.
test: $(STAMP)
	@sh devtools/test_packages.sh
	$(VENV_PY) -m devtools.services run --data-dir $(TEST_DATA_DIR) -- $(VENV_PY) -m pytest $(PYTEST_ARGS); \
	status=$$?; if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$status

bench: $(STAMP)
	$(VENV_PY) -m pip install --quiet -r bench/requirements.txt
	$(VENV_PY) bench/run_all.py

# The dev site's embedded servers for `manage.py` typed by hand (make run starts them itself).
services-start: $(STAMP)
	$(VENV_PY) -m devtools.services start

services-stop: $(STAMP)
	$(VENV_PY) -m devtools.services stop
