# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml sarseg/requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0  # the exact build; the package states ranges (sarseg/requirements.txt)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	$(VENV)/bin/sarseg demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

models: $(STAMP)  # the built-in models, trained again from ../shared/data (hours on 2 CPU cores)
	$(PY) scripts/make_models.py

.PHONY: install demo test models
