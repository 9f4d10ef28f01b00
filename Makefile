# Standalone set-up, demo and tests. Inside ComfyUI, install requirements.txt instead (it keeps ComfyUI's torch).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Demo models, inputs and outputs of `make demo` live here (git-ignored).
DEMO_HOME ?= $(CURDIR)/demo
# The torch build this project is tested with; ComfyUI installs keep their own.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test lint bench-fidelity clean

$(BIN)/.stylebridge-installed: pyproject.toml requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

install: $(BIN)/.stylebridge-installed

demo: install
	STYLEBRIDGE_HOME=$(DEMO_HOME) $(BIN)/stylebridge demo-models
	STYLEBRIDGE_HOME=$(DEMO_HOME) $(BIN)/stylebridge run workflows/stylegan_to_diffusion.json
	@echo "Images are in $(DEMO_HOME)/output (StyleGAN previews in $(DEMO_HOME)/temp)."

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

# Compares with a local NVlabs/stylegan3 checkout: make bench-fidelity OFFICIAL=/path/to/stylegan3
bench-fidelity: install
	$(BIN)/python bench/fidelity.py --official $(OFFICIAL)

clean:
	rm -rf $(VENV) $(DEMO_HOME) .pytest_cache
