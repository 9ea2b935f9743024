# The README's two commands: `make demo` and `make test`. Both work on a fresh Debian machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# pytest-xdist workers for `make test`: most of the suite's slowest tests wait on wall-clock market
# intervals, so more workers than cores (docs/testing.md)
TEST_PROCESSES ?= 4

.PHONY: demo test lint bench clean deb

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[demo]'
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/peerwatt demo

test: $(VENV)/.installed-dev
	bash scripts/ensure-system-deps.sh
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile --no-loadscope-reorder

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/run_all.py

# The agent's Debian package (docs/agent.md, "Install from the Debian package"): DEB_OUT/peerwatt-agent_*.deb
DEB_OUT ?= build/deb
deb: $(BIN)/python
	bash scripts/build-deb.sh $(DEB_OUT)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info test-artifacts
