#!/usr/bin/env bash
# A separate environment in which bench_spheres.py times PyTorch3D's Pulsar beside scenegrad: PyPI has
# no PyTorch3D for torch 2.13 on CPU, but the `easypytorch3d` wheel (PyTorch3D 0.7.9, built for torch
# 2.11 with CUDA 13, Python 3.11) runs Pulsar's CPU path with torch 2.11's CUDA build on a machine
# without a GPU. About 5 GB (torch's CUDA libraries).
#
#     bash benchmarks/pulsar_env.sh [DIR]            # default .venv-pulsar (git-ignored)
#     DIR/bin/python benchmarks/bench_spheres.py     # native and Pulsar rows in one table
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-.venv-pulsar}"
python3 -m venv "$DIR"
"$DIR/bin/pip" install -q "torch==2.11.0"
"$DIR/bin/pip" install -q iopath "easypytorch3d==0.7.9.post1"
"$DIR/bin/pip" install -q -e ".[dev]"
"$DIR/bin/python" -c "from pytorch3d import _C; import scenegrad; print('pulsar environment ready:', '$DIR')"
