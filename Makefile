# Two entry points: `make demo` and `make test`. Both build .venv on first use.
# torch is pinned to the CPU build that lies on the project's machines; users on a GPU install their own torch first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test bench setup clean

$(BIN)/plasticnet: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip show torch >/dev/null 2>&1 || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev,docs,sweep,triton]"
	touch $@

setup: $(BIN)/plasticnet

demo: setup
	$(BIN)/plasticnet demo --out runs/demo

test: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q  # one thread: the suite is many small steps, and threads that wait on each other slow them down on a busy machine

bench: setup
	$(BIN)/plasticnet bench pattern

clean:
	rm -rf $(VENV) runs
