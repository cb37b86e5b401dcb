# Two entry points on a fresh machine: `make demo` and `make test`.
# The venv sees the packages of the Python that made it (system site-packages, or those of a
# venv that python3 itself lives in, as on the H200 image, which already has cupy, numpy,
# jinja2, hypothesis, pytest and torch), so machines without network install nothing new.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SPEC ?= specs/seed.toml

.PHONY: install demo test gpu-test generate

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
	  > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/parent-site.pth"
	$(PY) -m pip install -q "setuptools>=70.1"
	$(PY) -m pip install -q --no-build-isolation -e '.[test]'
	# torch is the test oracle; the CPU build lies on disk here, the H200 image has its own.
	$(PY) -c 'import torch' 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/lstmgen demo $(SPEC)

test: install
	$(PY) -m pytest

gpu-test: install
	$(PY) -m pytest -m gpu

generate: install
	$(VENV)/bin/lstmgen generate specs/*.toml -o generated/
