# Every target creates/updates .venv by itself, so each works on a fresh machine with
# Python >= 3.10 and make. Re-running is cheap: the install step is skipped until
# pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo release reference test bench lint install clean help

help:
	@echo "make demo   - the main job (see README)"
	@echo "make test   - the test suite"
	@echo "make bench  - benchmarks against segmentation_models_pytorch and MONAI (writes build/bench.json)"
	@echo "make reference - train the reference FPN and the single-scale baseline with the CPU budget"
	@echo "make release - regenerate notebooks/ (student versions) from solutions/ with nbgrader"
	@echo "make lint   - ruff"

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m course_lib.demo --out build/demo

release: $(STAMP)
	$(BIN)/autograder release

reference: $(STAMP)
	$(BIN)/python -m course_lib.demo --budget reference --out build/reference

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_models.py --out build/bench.json

lint: $(STAMP)
	$(BIN)/ruff check course_lib tests benchmarks

clean:
	rm -rf build .pytest_cache
