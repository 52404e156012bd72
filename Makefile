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

# The trainers' own code that reads our EasyR1 and LLaMA-Factory exports (tests/third_party.py),
# in its own venv: their pins (transformers < 5, datasets <= 4.0, peft 0.18) are not ours.
# LLaMA-Factory comes from PyPI without its GPU/UI dependencies (--no-deps: torchvision,
# torchaudio, gradio, vllm cannot be installed here); only its argument parser and dataset
# converter are imported. EasyR1 is not on PyPI: its pinned source is read from EASYR1_SRC or
# ../shared/easyr1 (see tests/third_party.py); these packages are what its data, config and
# reward modules import. Bump TRAINERS_VERSION to reinstall.
TRAINERS_VERSION := lf0.9.5-easyr1deps2
TRAINERS_VENV := .venv-trainers
TRAINERS_STAMP := $(TRAINERS_VENV)/.installed-$(TRAINERS_VERSION)

.PHONY: trainers
trainers: $(TRAINERS_STAMP)

$(TRAINERS_STAMP): constraints-cpu.txt
	test -x $(TRAINERS_VENV)/bin/python || $(PYTHON) -m venv $(TRAINERS_VENV)
	$(TRAINERS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints-cpu.txt \
	    torch==2.13.0 transformers==4.57.6 datasets==4.0.0 accelerate==1.11.0 peft==0.18.1 \
	    trl==0.24.0 omegaconf==2.3.0 codetiming==1.4.0 tensordict==0.15.3 ray==2.60.0 jinja2 pillow pyyaml
	$(TRAINERS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps llamafactory==0.9.5
	rm -f $(TRAINERS_VENV)/.installed-*
	touch $(TRAINERS_STAMP)

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

test: $(STAMP) $(LS_STAMP) $(LITELLM_STAMP) $(TRAINERS_STAMP)
	$(BIN)/ruff check .
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) || echo 'chromium not installed: the report render test will be skipped'
	$(BIN)/pytest -n 2

demo: $(STAMP)
	$(BIN)/finecot demo

clean:
	rm -rf $(VENV) $(LS_VENV) $(LITELLM_VENV) $(TRAINERS_VENV) runs .pytest_cache
