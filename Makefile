# The two commands: `make run` (the site with demo images, a worker and an admin login)
# and `make test` (the whole suite). Both build the virtual environment on first use.
PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: run test bench services-stop clean-data

$(STAMP): requirements.txt
	test -x $(VENV_PY) || $(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --quiet --upgrade pip
	$(VENV_PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

run: $(STAMP)
	$(VENV_PY) scripts/run.py

# pytest exits 5 when it collects no tests; say so plainly instead of failing obscurely.
test: $(STAMP)
	$(VENV_PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$status

bench: $(STAMP)
	$(VENV_PY) bench/run_all.py

# Stop the embedded PostgreSQL and Redis that `make run` leaves data for.
services-stop: $(STAMP)
	$(VENV_PY) -m imagerec.devservices stop
