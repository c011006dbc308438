# `make demo` and `make test` are the two commands README.md starts with; both set up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) sweeps/figkd_tinyimagenet.py --smoke

# two pytest workers: most of the slow end-to-end tests wait on Ray and subprocesses rather than compute
test: $(VENV)/.installed
	$(PY) -m pytest -n 2 --dist worksteal --durations=15

bench: $(VENV)/.installed
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
