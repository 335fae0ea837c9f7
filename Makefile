# The two commands: `make demo` runs the main job on embedded defaults, `make test` runs the tests.
# Each creates the virtual environment and installs what it needs when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out

.PHONY: demo test venv clean slurm-packages browser-packages

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/gr-scaling demo --out $(DEMO_OUT)

# The `slurm` tests run on a real single-node Slurm on localhost (slurm/devcluster.py, started by
# their fixture). This installs its Debian packages when missing (needs root and apt-get); where it
# cannot, those tests skip with the reason, except under CI=true, where both fail.
slurm-packages: $(STAMP)
	$(BIN)/python -m slurm.devcluster install --best-effort

# The report's browser test (tests/unit/test_report_browser.py) opens a real report in Debian's
# headless chromium; this installs it when missing (root + apt-get). Where it cannot, that test
# skips with the reason, except under CI=true, where it fails.
browser-packages: $(STAMP)
	$(BIN)/python tests/unit/headless_chromium.py install --best-effort

# The suite runs on TEST_WORKERS processes (pytest-xdist; `auto`: one per core); `slurm` tests stay
# on one of them (tests/xdist_groups.py). TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= auto
test: $(STAMP) slurm-packages browser-packages
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_OUT)
