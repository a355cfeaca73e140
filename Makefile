# One virtual environment for everything: `make test` creates it on a fresh clone.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(abspath ../shared/data)
export KDCOMPRESS_DATA_DIR ?= $(DATA_DIR)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv test demo clean

# --no-cache-dir: pip's cache would hold a second copy of every wheel (about 1 GB), and a CI disk has run out of
# space installing them.
$(BIN)/kdcompress: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --no-cache-dir --upgrade pip
	# torch first, pinned: an unpinned resolve would fetch a multi-GB CUDA build.
	$(BIN)/pip install --no-cache-dir torch==2.13.0
	$(BIN)/pip install --no-cache-dir -e '.[offline,dev,openvino]'
	touch $@

venv: $(BIN)/kdcompress

test: venv
	$(BIN)/python -m pytest -q

# The main job end to end on the real teacher and data, offline: `kdcompress compress`
# from multilingual-e5-small to the fastest student within 3 points of it on SIB-200's 31 target languages.
# `make demo HUB=1`: mBERT and SIB-200 from the Hugging Face hub instead.
# compress exits 3 when no candidate meets the budget: a result the report states, not a failed demo.
demo: venv
	$(BIN)/kdcompress compress --config configs/quickstart.toml $(if $(HUB),--teacher bert-base-multilingual-cased --data-dir "" --out runs/quickstart-hub); \
	status=$$?; if [ $$status -eq 3 ]; then echo "no candidate met the demo's budget; the report says by how much"; \
	elif [ $$status -ne 0 ]; then exit $$status; fi

clean:
	rm -rf $(VENV)
