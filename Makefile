# Every target creates/updates .venv by itself, so each works on a fresh machine with
# Python >= 3.10 and make. Re-running is cheap: the install step is skipped until
# pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# tests run side by side (pytest-xdist, a test module per process so that its shared fixtures
# are computed once; grouping by fixture instead, --dist loadgroup, was slower). The longest
# modules go first (tests/conftest.py): --no-loadscope-reorder keeps that order, where xdist's
# default would sort modules by their number of tests and start the longest ones last.
TEST_PROCESSES ?= auto
DEMO_WORKERS ?= 2  # measured: 2 single-thread workers grade 1.67x faster than 1 two-thread worker on 2 cores

# make gpu-bundle (online) / make gpu-check (on the GPU host, offline): tools/gpu_bundle.py, tools/gpu_check.sh
GPU_BUNDLE         ?= .gpu-bundle
GPU_VENV           ?= .venv-gpu
GPU_PYTHON         ?= python3
GPU_PYTHON_VERSION ?= 3.12
GPU_PLATFORMS      ?=
GPU_IMAGE_PACKAGES ?= tools/gpu_image_packages.txt
GPU_CHECK_ARGS     ?=

.PHONY: demo train release reference test browser-test bench lint install sandbox browser postgres clean help gpu-bundle gpu-check

help:
	@echo "make demo   - the main job: release, grade the example submissions of every assignment, report (build/demo)"
	@echo "make train  - train the FPN and the single-scale baseline briefly, plots in build/train"
	@echo "make test   - the test suite"
	@echo "make browser-test - only the browser tests: JupyterLab, widgets, Validate, formgrader, exchange (build/browser)"
	@echo "make bench  - benchmarks: models vs smp/MONAI (build/bench.json), grading harness vs plain nbgrader (build/bench_grading.json), starting nbgrader processes (build/bench_forkserver.json), the Dask cluster path vs the local pool (build/bench_cluster.json)"
	@echo "make reference - train the reference FPN and the single-scale baseline with the CPU budget"
	@echo "make release - regenerate notebooks/ (student versions) from solutions/ with nbgrader"
	@echo "make lint   - ruff"
	@echo "make gpu-bundle - (online) wheels + bubblewrap for an offline GPU host into $(GPU_BUNDLE)/, sizes checked"
	@echo "make gpu-check  - (GPU host) GPU tests, grading in the sandbox, FPN vs smp speed -> build/gpu-check.json"

install: $(STAMP) sandbox browser postgres

# apt-get install $(1), as root or with passwordless sudo, where apt-get exists (apt-get update only if needed)
APT_INSTALL = if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -qq $(1) >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq $(1) >/dev/null; }; \
	  elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	    sudo apt-get install -y -qq $(1) >/dev/null 2>&1 || { sudo apt-get update -qq && sudo apt-get install -y -qq $(1) >/dev/null; }; \
	  fi

# bubblewrap confines the student kernels while grading (autograder/sandbox.py)
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  $(call APT_INSTALL,bubblewrap); \
	  command -v bwrap >/dev/null 2>&1 || { echo "bubblewrap (bwrap) is needed to sandbox student kernels and could not be installed: install the 'bubblewrap' package (apt, dnf, pacman) or set AUTOGRADER_SANDBOX=off for trusted notebooks only." >&2; exit 1; }; }

# Debian's Chromium for the browser tests (tests/test_browser.py), driven by Playwright: Playwright's own
# browser download needs the network. Where it cannot be installed the browser tests skip, saying why.
CHROMIUM_FOUND = command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || [ -n "$$CHROMIUM" ]
browser:
	@$(CHROMIUM_FOUND) || { \
	  $(call APT_INSTALL,chromium); \
	  $(CHROMIUM_FOUND) || echo "warning: Chromium could not be installed (Debian's 'chromium' package; or set CHROMIUM=/path/to/chromium): the browser tests will be skipped." >&2; }

# Debian's PostgreSQL server for the tests of a PostgreSQL gradebook (tests/postgres.py starts its own
# server with initdb and pg_ctl in a temporary folder; the package's own cluster is not used).
POSTGRES_FOUND = ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1
postgres:
	@$(POSTGRES_FOUND) || { \
	  $(call APT_INSTALL,postgresql); \
	  $(POSTGRES_FOUND) || echo "warning: PostgreSQL could not be installed (Debian's 'postgresql' package): the PostgreSQL gradebook tests will be skipped." >&2; }

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python tools/install.py -e '.[dev]'  # uv with pip's settings, else pip (tools/install.py)
	@touch $(STAMP)

demo: $(STAMP) sandbox
	$(BIN)/python -m autograder.demo --out build/demo --workers $(DEMO_WORKERS)

train: $(STAMP)
	$(BIN)/python -m course_lib.demo --out build/train

release: $(STAMP)
	$(BIN)/autograder release

reference: $(STAMP)
	$(BIN)/python -m course_lib.demo --budget reference --out build/reference

test: $(STAMP) sandbox browser postgres
	$(BIN)/python -m pytest -q -n $(TEST_PROCESSES) --dist loadscope --no-loadscope-reorder --durations=15 $(PYTEST_ARGS)

browser-test: $(STAMP) sandbox browser postgres
	$(BIN)/python -m pytest -q -m browser --durations=15 tests/test_browser.py $(PYTEST_ARGS)

bench: $(STAMP) sandbox
	$(BIN)/python benchmarks/bench_models.py --out build/bench.json
	$(BIN)/python benchmarks/bench_grading.py --out build/bench_grading.json
	$(BIN)/python benchmarks/bench_forkserver.py --out build/bench_forkserver.json
	$(BIN)/python benchmarks/bench_cluster.py --out build/bench_cluster.json

lint: $(STAMP)
	$(BIN)/ruff check course_lib autograder tests benchmarks tools

# Wheels for CPython $(GPU_PYTHON_VERSION) on x86_64 manylinux, without PyTorch/CUDA and without what the GPU image
# already has ($(GPU_IMAGE_PACKAGES)); plus Debian's bubblewrap. Fails when repository + bundle exceed 60 MiB.
gpu-bundle:
	$(PYTHON) tools/gpu_bundle.py --out $(GPU_BUNDLE) --python-version $(GPU_PYTHON_VERSION) \
	  $(foreach p,$(GPU_PLATFORMS),--platform $(p)) --image-packages '$(GPU_IMAGE_PACKAGES)'

# No GPU (no nvidia-smi, or torch.cuda unavailable): says so and succeeds. Else $(GPU_VENV) on the host's PyTorch,
# the bundle installed offline, then benchmarks/gpu_check.py (about 8 minutes at most).
gpu-check:
	GPU_PYTHON=$(GPU_PYTHON) GPU_BUNDLE=$(GPU_BUNDLE) GPU_VENV=$(GPU_VENV) bash tools/gpu_check.sh $(GPU_CHECK_ARGS)

clean:
	rm -rf build .pytest_cache
