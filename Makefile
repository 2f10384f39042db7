# medprobe: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Which torch goes into .venv. The default is the CPU build these CI machines keep on disk;
# on a CUDA workstation use `make demo TORCH=torch` (PyPI's Linux wheels carry CUDA) or conda
# (environment.yml). Installed first, so pyproject's `torch>=2.1` never pulls a second build.
TORCH  ?= torch==2.13.0
STUDY  ?= demo-study

.PHONY: demo test lint venv clean rate bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/python -m probes catalog show prompts/oncology.yaml
	$(BIN)/python -m probes run --study $(STUDY) --catalog oncology --presets tiny \
		--topics brain,lung_cancer --detail short --images-per-prompt 4
	$(BIN)/python -m probes score --study $(STUDY) --metrics diversity
	$(BIN)/python -m ratings build --study $(STUDY) --raters A,B,C --repeats 0.1
	# SIMULATED raters (sim-1..3) rate this study's own panels, following its diversity score
	$(BIN)/python -m ratings simulate --study $(STUDY) --follow diversity
	$(BIN)/python -m ratings analyze --study $(STUDY) --out $(STUDY)/reports/simulated-study-analysis
	# and a SIMULATED study of the whole oncology catalog (the published design)
	$(BIN)/python -m ratings simulate -o $(STUDY)/simulated-ratings.csv
	$(BIN)/python -m ratings analyze --table $(STUDY)/simulated-ratings.csv --out $(STUDY)/reports/simulated-analysis

# The rating app for clinicians: Voila serves notebooks/20_rate.ipynb with the code hidden, its token
# login on (JUPYTER_TOKEN, else Voila prints one), idle kernels culled, tracebacks hidden
# (ratings/serve.py). Raters come in by their personal links: python -m ratings invite.
PORT   ?= 8866
HOST   ?= 127.0.0.1
BASE_PATH ?= /
rate: venv
	$(BIN)/python -m ratings serve --study "$(STUDY)" --port=$(PORT) --host=$(HOST) --base-path=$(BASE_PATH)

# CPU benchmark table (issue 6); the GPU figures are `python -m probes.bench --full-size` on a GPU.
bench: venv
	$(BIN)/python benchmarks/cpu.py --markdown docs/benchmarks.md

lint: venv
	$(BIN)/ruff check .

test: venv lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
