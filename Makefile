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

# a real scan for the demo's last step: a BraTS 2018 case kept back from glioma-mr4's training
BRATS ?= ../shared/data/brats2018/Brats18_TCIA02_606_1/Brats18_TCIA02_606_1

demo: $(STAMP)
	rm -rf runs/demo
	$(VENV)/bin/sarseg demo --out runs/demo
	@if [ -f $(BRATS)_flair.nii.gz ]; then \
	  echo "== a real scan: $(notdir $(BRATS)) with the built-in glioma-mr4 (FLAIR, T1, T1c, T2)"; \
	  $(VENV)/bin/sarseg segment --model glioma-mr4 --output runs/demo/brats_segmentation.nii.gz \
	    --input $(BRATS)_flair.nii.gz $(BRATS)_t1.nii.gz $(BRATS)_t1ce.nii.gz $(BRATS)_t2.nii.gz && \
	  $(VENV)/bin/sarseg evaluate --model glioma-mr4 --pred runs/demo/brats_segmentation.nii.gz \
	    --ref $(BRATS)_seg.nii.gz --csv runs/demo/brats_dice.csv | $(PY) scripts/dice_table.py; \
	else echo "(no ../shared/data: the synthetic phantoms only)"; fi

test: $(STAMP)
	$(PY) -m pytest -q

models: $(STAMP)  # the built-in models, trained again from ../shared/data (hours on 2 CPU cores)
	$(PY) scripts/make_models.py

.PHONY: install demo test models
