# Every target creates the environment (.venv) from nothing when it is missing; see tools/bootstrap_env.sh.
PY := .venv/bin/python
VENV_READY := .venv/.rgtp-ready

.PHONY: env test test-fast demo flops lint format clean

$(VENV_READY): setup.py tools/bootstrap_env.sh
	./tools/bootstrap_env.sh

env: $(VENV_READY)

test: $(VENV_READY)
	$(PY) -m pytest -n 2 --dist loadfile -q tests

test-fast: $(VENV_READY)
	$(PY) -m pytest -q tests -x -k "not slow"

demo: $(VENV_READY)
	$(PY) tools/demo.py

flops: $(VENV_READY)
	$(PY) tools/count_flops.py --paper-table

lint: $(VENV_READY)
	$(PY) -m black --check -l 100 rgtp projects tools tests datasets
	$(PY) -m isort --check-only --profile black -l 100 rgtp projects tools tests datasets
	$(PY) -m ruff check rgtp projects tools tests datasets

format: $(VENV_READY)
	$(PY) -m isort --profile black -l 100 rgtp projects tools tests datasets
	$(PY) -m black -l 100 rgtp projects tools tests datasets

clean:
	rm -rf .venv output .pytest_cache
