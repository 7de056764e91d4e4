# make demo : create .venv (once), fetch data (offline copy when ../shared/data exists), run the main job
# make test : create .venv (once), run the test suite
PY := .venv/bin/python
HW2_DATA_FROM ?= $(if $(wildcard ../shared/data/*.tar.gz),../shared/data,)

.PHONY: demo test venv data

venv: .venv/.installed
.venv/.installed: requirements.txt
	python3 -m venv .venv
	.venv/bin/pip install -q -r requirements.txt
	touch $@

data: venv
	HW2_DATA_FROM=$(HW2_DATA_FROM) bash hw2_download.sh

test: venv
	$(PY) -m pytest -q tests

demo: data
	bash scripts/demo.sh
