# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs tensorsmith[all], optimizes the sample models
#   make test   creates .venv if needed, installs, runs the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	# Keras 2 (tf_keras) for the tests of Keras-2 files; --no-deps because it asks for the
	# `tensorflow` package, which tensorflow-cpu already provides
	$(BIN)/python -m pip install --quiet --no-deps 'tf_keras==2.21.*'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@mkdir -p build/demo
	@for m in sample_models/*.onnx; do \
	  echo "== $$m"; \
	  $(BIN)/tensorsmith optimize $$m -o build/demo/$$(basename $$m .onnx).opt.onnx || exit $$?; \
	done
	@echo "== recipe: recipes/demo.yaml (every sample model x 2 targets, in parallel; cached when re-run)"
	$(BIN)/tensorsmith run recipes/demo.yaml --report-json build/recipe-demo/report.json \
	  --junit build/recipe-demo/junit.xml --summary-md build/recipe-demo/summary.md

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --durations=10

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "not slow and not thirdparty"

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/optimize.py sample_models

clean:
	rm -rf build .pytest_cache
