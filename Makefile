# meshwright: the commands a user runs. Everything lands in .venv; nothing needs root.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: venv test bench lint clean demo demo-down

$(BIN)/meshwright: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/meshwright

## make test: every test that needs no root daemon (unit, golden, real-Envoy integration)
test: venv
	$(BIN)/python -m pytest -q

## make bench: compile benchmark (prints a table with ratios against json.dumps)
bench: venv
	$(BIN)/python bench/compile.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

## make demo: the seed scenario on this machine (gateway on 127.0.0.1:8080), state in state/demo
demo: venv
	$(BIN)/python examples/seed/demo.py up

demo-down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python examples/seed/demo.py down; else echo "demo is not running"; fi
