# Two commands for a fresh clone: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The registry's standard pair: torchvision's CUDA build only imports with a matching torch, so
# they are pinned together here (pyproject keeps ranges for people installing into their own env).
TORCH_PAIR := "torch==2.14.*" "torchvision==0.29.*"

.PHONY: demo test bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PAIR)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/facevae demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --durations=10

bench: $(STAMP)
	$(BIN)/python bench/data.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/classify.py
	$(BIN)/python bench/serve.py

clean:
	rm -rf $(VENV) runs/demo
