# Plain targets that set everything up from nothing and can be re-run (idempotent).
#   make reproduce   the main job: the smoke reproduction on CPU and its HTML book (_build/smoke)
#   make test        unit tests, notebooks under nbval, the book built and checked in headless Chromium
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PRESET  ?= smoke
OUT     ?= _build/$(PRESET)
RUN     ?=

.PHONY: setup chromium sync test reproduce book adopt benchmark clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

chromium:  # Debian's Chromium for the browser test of the book
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

sync: setup  # .py (source of truth) -> paired .ipynb, one way only (keeps stored outputs)
	$(BIN)/jupytext --quiet --to ipynb --update notebooks/*.py

test: setup chromium sync
	$(BIN)/python -m pytest --nbval -v -rs

reproduce: setup
	$(BIN)/python -m cce_core reproduce --preset $(PRESET) --out $(OUT)

book: setup  # the repository's book, with the committed results in book/generated
	$(BIN)/jupyter-book build . -W --keep-going

adopt:  # publish a reproduction's executed notebooks and figures in the book: make adopt RUN=_build/cpu
	test -n "$(RUN)" && test -f "$(RUN)/generated/run.json"
	rm -rf book/generated && cp -r $(RUN)/generated book/generated

benchmark: setup
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf _build test-artifacts
