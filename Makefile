# The two commands of the README:
#   make book [PROFILE=standard|quick|smoke|full]   set up, run every chapter, build the HTML book
#     standard (the default) renders the records published in results/standard/ and trains nothing;
#     another profile trains what its published records and the run cache lack
#   make test                              set up, run the test suite
# Set-up (each step skipped once done): a Python 3.11 virtual environment in .venv with
# requirements.txt, Fashion-MNIST from Debian's package where apt can install it, MathJax from npm.

PYTHON  ?= python3.11
VENV    ?= .venv
PROFILE ?= standard
PY      := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: book test check-book setup data mathjax chromium clean

book: setup
	@start=$$(date +%s); \
	$(PY) -m clmini book --profile $(PROFILE) || exit $$?; \
	echo "make book: $$(( $$(date +%s) - start )) s with profile $(PROFILE); open _build/html/index.html"

# The book-build test also opens the pages in headless Chromium when it is installed: install it
# where apt can run, otherwise that one test is skipped (with its reason in the pytest summary).
test: setup
	@$(MAKE) --no-print-directory chromium || echo "note: chromium unavailable; the Chromium page check will be skipped"
	$(PY) -m pytest -q tests

check-book: chromium
	$(PY) scripts/check_book.py _build/html

setup: $(VENV)/.requirements.stamp data mathjax

$(PY):
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Reinstalled only when requirements.txt or pyproject.toml change.
$(VENV)/.requirements.stamp: requirements.txt pyproject.toml | $(PY)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	@touch $@

# Fashion-MNIST is found in $$CLMINI_DATA or in Debian's dataset-fashion-mnist files; install
# the package when neither has it and apt can run, otherwise say what to do and go on.
data:
	@if [ -f "$(FASHION_MNIST)" ] || [ -n "$$CLMINI_DATA" ]; then \
	  :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  $(APT_GET) install -y dataset-fashion-mnist || { $(APT_GET) update && $(APT_GET) install -y dataset-fashion-mnist; } \
	  || echo "warning: could not install dataset-fashion-mnist; put the four Fashion-MNIST IDX files in a directory and set CLMINI_DATA to it"; \
	else \
	  echo "note: Fashion-MNIST not found and apt-get cannot run here (not root, or no apt)."; \
	  echo "      Run 'sudo apt-get install dataset-fashion-mnist', or set CLMINI_DATA to a directory with its IDX files."; \
	fi

# MathJax is served from the build (no CDN): node_modules/ is copied into _build/html/_static/.
mathjax: node_modules/.stamp
node_modules/.stamp: package.json package-lock.json
	@command -v npm >/dev/null || { echo "error: npm not found; install Node.js/npm (apt-get install npm) to get MathJax" >&2; exit 1; }
	npm ci --no-audit --no-fund
	@touch $@

chromium:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null || [ -n "$$CHROMIUM" ]; then \
	  :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  $(APT_GET) install -y chromium || { $(APT_GET) update && $(APT_GET) install -y chromium; }; \
	else \
	  echo "error: chromium not found; install it (sudo apt-get install chromium) or set CHROMIUM" >&2; exit 1; \
	fi

clean:
	rm -rf _build book/chapters
