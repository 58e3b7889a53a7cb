# The two commands of the README: `make serve` and `make test`.
# Each builds .venv on first use (torch's CPU wheel first, then the pinned project) and
# is quick once it exists: the stamp is redone only when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stitch-installed
export HF_HUB_OFFLINE ?= 1
export RAY_AUTH_MODE ?= disabled
export TOKENIZERS_PARALLELISM ?= false

.PHONY: serve test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test,bench]"
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/stitch serve $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -ra $(ARGS)

clean:
	rm -rf $(VENV)
