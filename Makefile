# Two entry points for a fresh machine: `make generate` and `make test`.
# Both create .venv/ (CPU torch 2.13.0 first, so no multi-GB CUDA build is pulled in) and install the package.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROMPT ?= two objects. a large red circle at the top and a large blue square at the bottom. the red circle is above the blue square.
OUT ?= image.png

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0

.PHONY: install generate test test-portable-kernels
install: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"

generate: install
	$(BIN)/pixart generate "$(PROMPT)" --out $(OUT)

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

# The numeric tests on torch's portable CPU kernels (what another CPU computes), as CI runs them after `make test`;
# compiled kernels get their own inductor cache (one built for another instruction set aborted a later run here).
test-portable-kernels: install
	ATEN_CPU_CAPABILITY=default TORCHINDUCTOR_CACHE_DIR=$${TMPDIR:-/tmp}/torchinductor-portable-kernels \
		$(BIN)/python -m pytest -q -p no:cacheprovider -m numeric tests
