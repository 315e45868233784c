# The two set-up commands of the README. Each creates the virtual environment and installs
# scenegrad into it on first use, so either can be run first on a fresh machine.
#   make demo   runs the main job on the bundled default input
#   make test   runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.scenegrad-installed
# torch is installed first, pinned: an unpinned torch would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# make demo DEVICE=cuda TORCH_SPEC=torch: the demo on a GPU.
DEVICE ?= cpu

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[dev,open3d,peers,app]"
	@touch $(STAMP)

# The demo builds the native kernels, reports the machine, and reconstructs the built-in sample
# clip (a walk through a textured room that scenegrad renders itself) into demo_out/: about 3
# minutes on 2 CPU cores.
demo: $(STAMP)
	$(VENV)/bin/scenegrad info --build
	$(VENV)/bin/scenegrad reconstruct --out demo_out --overwrite --preset fast --iterations 400 --device $(DEVICE)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/bench_mesh.py

clean:
	rm -rf build dist *.egg-info .pytest_cache benchmarks/results demo_out
