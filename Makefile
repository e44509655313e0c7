# Two commands for a newcomer: `make demo` and `make test`. Both create the environment
# with uv first, installing uv itself when the machine does not have it. The environment is
# installed compiled to bytecode: every process then starts without compiling its imports
# (seconds each for the service, the flows' subprocesses and the test suite's servers).
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --frozen

.PHONY: env demo report-picture tracking-picture test lint format bench bento clean

env: .venv/.synced

.venv/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --compile-bytecode
	@touch $@

demo: env
	$(RUN) aftersale demo

# The README's picture of the report (docs/report.png): `aftersale report` on the demo's
# data folder, drawn by headless Chromium (Debian's `chromium`); runs the demo first when
# the folder holds no raw data.
report-picture: env
	@test -d "$${AFTERSALE_DATA_DIR:-data}/raw" || $(MAKE) demo
	$(RUN) aftersale report --png docs/report.png

# The README's picture of the tracking page (docs/tracking_page.png): the browser test of
# the demo page, which draws it with headless Chromium on the tests' simulated business.
tracking-picture: env
	AFTERSALE_TRACKING_PICTURE=$(CURDIR)/docs/tracking_page.png $(RUN) pytest \
		tests/serving/test_service.py -k in_a_browser

test: env
	$(RUN) pytest

lint: env
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) lint-imports

format: env
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

bench: env
	$(RUN) python -m benchmarks

# The service as a Bento (bentofile.yaml): uv.lock's runtime versions, then the build.
bento: env
	@mkdir -p build
	$(UV) export --frozen --no-dev --no-hashes --no-emit-project --no-header --no-annotate \
		--quiet --output-file build/requirements.txt
	$(RUN) bentoml build

clean:
	rm -rf data build .pytest_cache .ruff_cache
