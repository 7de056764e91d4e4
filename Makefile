# make demo      : create .venv (once), fetch the data (offline copy when ../shared/data exists), run the
#                  three entry scripts on the shipped weights and print a table of outputs and scores
# make test      : create .venv when missing, run the whole test suite (what CI runs: .ci/run)
# make test-fast : the tests not marked slow (a quick check while developing)
PY := .venv/bin/python
HW2_DATA_FROM ?= $(if $(wildcard ../shared/data/*.tar.gz),../shared/data,)

.PHONY: demo test test-fast venv data

venv: .venv/.installed
.venv/.installed: requirements.txt pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q -r requirements.txt
	.venv/bin/pip install -q --no-deps -e .
	touch $@

data: venv
	HW2_DATA_FROM=$(HW2_DATA_FROM) bash hw2_download.sh

test: venv
	$(PY) -m pytest -q tests

test-fast: venv
	$(PY) -m pytest -q -m "not slow" tests

demo: data
	bash scripts/demo.sh
