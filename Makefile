# Plain targets that set everything up from nothing and can be re-run (idempotent).
#   make reproduce   the main job: the smoke reproduction on CPU and its HTML book (_build/smoke)
#   make test        lint (ruff, import layers), unit tests, notebooks under nbval, the book checked in Chromium
#   make carry       what travels to the GPU box (.carry/: data and papermill's wheels); prints the upload size
#   make rehearse    the GPU command of book/rerun.md, literally, on this CPU (smoke preset)
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PRESET  ?= smoke
OUT     ?= _build/$(PRESET)
RUN     ?=
DATA    ?= ../shared/data/photos128
BUDGET  ?= 150
CARRY   := .carry

.PHONY: setup chromium sync check-pairs lint test reproduce book adopt benchmark carry rehearse clean

$(STAMP): pyproject.toml constraints-ci.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]" -c constraints-ci.txt
	touch $(STAMP)

setup: $(STAMP)

chromium:  # Debian's Chromium for the browser test of the book
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

sync: setup  # by hand, after editing notebooks/*.py: .py (source of truth) -> paired .ipynb (keeps stored outputs)
	$(BIN)/jupytext --quiet --to ipynb --update notebooks/*.py

check-pairs: setup  # fails (rewrites nothing) when a committed .ipynb is out of date with its .py: run make sync
	$(BIN)/python -m pytest -q -o addopts="" -p no:cacheprovider tests/test_reproduce.py::test_paired_notebooks_are_up_to_date

lint: setup  # ruff's checks and the import layers of cce_core (both configured in pyproject.toml)
	$(BIN)/ruff check cce_core tests benchmarks notebooks .ci
	$(BIN)/lint-imports

test: setup chromium check-pairs lint
	$(BIN)/python -m pytest --nbval -v -rs

reproduce: setup
	$(BIN)/python -m cce_core reproduce --preset $(PRESET) --out $(OUT)

book: setup  # the repository's book, with the committed results in book/generated (optional parts if the run has them)
	mkdir -p _build
	$(BIN)/python -c "from cce_core.reproduce import toc_for; print(toc_for('book/generated'), end='')" > _build/_toc.yml
	$(BIN)/jupyter-book build . --toc _build/_toc.yml -W --keep-going

adopt: setup  # publish a reproduction's executed notebooks and figures in the book: make adopt RUN=_build/cpu
	test -n "$(RUN)" && test -f "$(RUN)/generated/run.json"
	rm -rf book/generated && cp -r $(RUN)/generated book/generated
	$(BIN)/python -m cce_core compact book/generated  # small notebooks and figures (a run made before they were)

benchmark: setup
	$(BIN)/python benchmarks/train_throughput.py

carry:  # data (checked against SHA256SUMS) and Python 3.12 wheels (.ci/carry-wheels.txt) for the GPU box
	mkdir -p $(CARRY)
	cp -u $(DATA)/train-gpu.zip $(DATA)/eval-imagenet250.zip $(DATA)/eval-bsds100.zip $(CARRY)/
	cd $(CARRY) && grep -E ' (train-gpu|eval-imagenet250|eval-bsds100)\.zip$$' $(abspath $(DATA))/SHA256SUMS | sha256sum -c --quiet
	rm -rf $(CARRY)/wheels
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d $(CARRY)/wheels -r .ci/carry-wheels.txt
	echo "$$(git rev-parse HEAD)$$(git diff --quiet HEAD -- || echo -dirty)" > $(CARRY)/COMMIT  # the box has no .git
	$(PY) .ci/upload_size.py $(CARRY)

rehearse: carry  # book/rerun.md's GPU command, the literal line, with DEVICE=cpu PRESET=smoke (_build/rehearse)
	rm -rf _build/rehearse && mkdir -p _build/rehearse/out
	awk '/^% the GPU command/{f=1} f&&/^```bash/{g=1;next} g&&/^```/{exit} g&&!/^#/' book/rerun.md > _build/rehearse/gpu-command.sh
	OUT=$$PWD/_build/rehearse/out RUN=$$PWD/_build/rehearse/run W=$$PWD/_build/rehearse/site PY=$(abspath $(BIN))/python \
	    DEVICE=cpu PRESET=smoke BUDGET=$(BUDGET) BENCH=--quick bash _build/rehearse/gpu-command.sh
	ls -l _build/rehearse/out

clean:
	rm -rf _build test-artifacts
