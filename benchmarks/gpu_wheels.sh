#!/usr/bin/env bash
# The wheels a GPU machine lacks, fetched here for it: the device machine's python3 has torch with
# CUDA, numpy, OpenCV, imageio, rich and pytest, but reaches no package index. This downloads
# scenegrad's other dependencies and nvdiffrast (for the mesh adapter and bench_mesh's peer rows;
# it compiles itself on first use) into .gpu_wheels/ (git-ignored). Carry that folder with the
# working tree (the device tool's carry: [".gpu_wheels"]); gpu_check.sh installs from it.
#
#     bash benchmarks/gpu_wheels.sh        # GPU_PYTHON=3.12 by default, the device image's Python
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-.venv/bin/pip}"
rm -rf .gpu_wheels
mkdir -p .gpu_wheels
"$PIP" download -q --no-deps --only-binary :all: --python-version "${GPU_PYTHON:-3.12}" \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .gpu_wheels \
    roma trimesh tyro docstring-parser shtab typeguard imageio-ffmpeg diffrp-nvdiffrast
du -sh .gpu_wheels
ls .gpu_wheels
