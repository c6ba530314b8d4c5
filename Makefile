# The two commands a newcomer needs are `make serve` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(if $(TRAINING_DATA_DIR),$(TRAINING_DATA_DIR),$(wildcard ../shared/datasets))
FLOAT_WEIGHTS := $(DATA_DIR)/weights/mobilenet_v2_1.0_160_no_top_imagenet_float.h5
WEIGHTS ?= $(if $(wildcard $(FLOAT_WEIGHTS)),$(FLOAT_WEIGHTS),imagenet)
DATA_FLAG := $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

CHECKS_VENV ?= .venv-checks
PORT ?= 3000
MODEL_REPOSITORY ?= models

.PHONY: install models models-quick serve bench bench-peers reliability test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[train,serve,dev]"

# checkov (deployment lint) in its own venv: its dependency pins clash with the service's.
$(CHECKS_VENV)/bin/checkov:
	$(PYTHON) -m venv $(CHECKS_VENV)
	$(CHECKS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKS_VENV)/bin/python -m pip install --quiet checkov==3.3.30

# Full training of all four models into ./models (about an hour on 2 cores).
models: install
	$(BIN)/python -m training train all $(DATA_FLAG) --weights $(WEIGHTS) --out $(MODEL_REPOSITORY)

# The quick profile: same artifacts in a few minutes.
models-quick: install
	$(BIN)/python -m training train all --quick $(DATA_FLAG) --weights $(WEIGHTS) --out $(MODEL_REPOSITORY)

# The HTTP service on the local repository; trains the models first when it is empty.
serve: install
	@if [ -z "$$(ls -A $(MODEL_REPOSITORY) 2>/dev/null)" ]; then $(MAKE) models; fi
	MODEL_REPOSITORY=$(MODEL_REPOSITORY) $(BIN)/bentoml serve --port $(PORT)

# Throughput and latency of the running service against the stock BentoML baseline.
bench: install
	$(BIN)/python -m benchmarks.serve_bench --repository $(MODEL_REPOSITORY) $(DATA_FLAG)

# Other model servers (MLServer, LitServe, KServe, Triton, Ray Serve, stock BentoML) and ours on
# the same ONNX graph and V2 body, in one run; each peer gets its own cached venv on first use.
bench-peers: install
	$(BIN)/python -m benchmarks.peers --repository $(MODEL_REPOSITORY) $(DATA_FLAG)

# The reliability suite's long profile (100,000+ requests, faults, fuzzing, hostile input).
reliability: install
	$(BIN)/python -m reliability --profile long --repository $(MODEL_REPOSITORY) $(DATA_FLAG)

test: install $(CHECKS_VENV)/bin/checkov
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	TRAINING_DATA_DIR=$(abspath $(DATA_DIR)) $(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
