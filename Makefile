# finecot: `make test` and `make demo` build their environment from nothing (idempotent).
# CPU installs pin torch through constraints-cpu.txt (an unpinned torch pulls a CUDA build).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.finecot-installed
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints-cpu.txt
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.PHONY: test demo lint venv clean

# The Label Studio server for the review tests lives in its own venv: its pins (openai<2,
# pyarrow<25) conflict with ours. Bump LS_VERSION to reinstall (the stamp names the version).
LS_VERSION := 1.23.2
LS_VENV := .venv-labelstudio
LS_STAMP := $(LS_VENV)/.installed-$(LS_VERSION)

.PHONY: labelstudio
labelstudio: $(LS_STAMP)

# The LiteLLM proxy, a real third-party server the tests put in front of the scripted
# teacher (it moves <think> into reasoning_content, answers a wrong model with 400), in its
# own venv: its pins are not ours.
LITELLM_VERSION := 1.108.7
LITELLM_VENV := .venv-litellm
LITELLM_STAMP := $(LITELLM_VENV)/.installed-$(LITELLM_VERSION)

.PHONY: litellm
litellm: $(LITELLM_STAMP)

$(LITELLM_STAMP):
	test -x $(LITELLM_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'litellm[proxy]==$(LITELLM_VERSION)'
	touch $(LITELLM_STAMP)

$(LS_STAMP):
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check label-studio==$(LS_VERSION)
	touch $(LS_STAMP)

venv: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test,serve]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) $(LS_STAMP) $(LITELLM_STAMP)
	$(BIN)/ruff check .
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) || echo 'chromium not installed: the report render test will be skipped'
	$(BIN)/pytest -n 2

demo: $(STAMP)
	$(BIN)/finecot demo

clean:
	rm -rf $(VENV) $(LS_VENV) $(LITELLM_VENV) runs .pytest_cache
