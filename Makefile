# Two commands for a newcomer: `make demo` and `make test`. Both create .venv and install on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mkdseg-installed
RUN    ?= runs/demo

.PHONY: install demo test clean

install: $(STAMP)

# torch first: `torch==2.13.0` is a CPU wheel on disk on our machines; elsewhere fall back to pip's own choice.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 || $(PY) -m pip install -q torch
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m mkdseg.demo --config configs/demo.yaml --recipe recipe --run-dir $(RUN) --data.n_target=2

# two workers (pytest-xdist), one torch thread each (tests/conftest.py): both cores busy, neither oversubscribed;
# the slowest tests listed, so a slow one shows in CI's log
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --durations=15 tests

clean:
	rm -rf runs .pytest_cache
