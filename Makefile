# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: install data demo demo-quick test bench-demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The stamp re-installs when the project's dependencies change.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Fashion-MNIST ships as a Debian package; install it only when missing (needs root/sudo).
data:
	@if [ -z "$$NOISYSTUDENT_DATA" ] && [ ! -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi

demo: install data
	$(BIN)/noisystudent demo

demo-quick: install data
	$(BIN)/noisystudent demo --quick

# The suite runs in a new random order each time (pytest-randomly): a test that depends on another's
# order or imports fails early. The seed is printed so that an order can be replayed.
test: install data
	@seed=$${TEST_SEED:-$$(date +%s)}; echo "test order seed $$seed (replay: TEST_SEED=$$seed make test)"; \
	$(BIN)/python -m pytest -q -p randomly --randomly-seed=$$seed

bench-demo: install data
	$(BIN)/python benchmarks/demo.py

clean:
	rm -rf runs .pytest_cache

bench: install data
	$(BIN)/python benchmarks/demo.py
	$(BIN)/python benchmarks/teacher_sweep.py
	$(BIN)/python benchmarks/ddp_overhead.py
	$(BIN)/python benchmarks/label_throughput.py
	$(BIN)/python benchmarks/select_scale.py
	$(BIN)/python benchmarks/seed_sweep.py
	$(BIN)/python benchmarks/results_table.py --write
