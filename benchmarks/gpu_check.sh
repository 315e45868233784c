#!/usr/bin/env bash
# One call on a machine with a GPU: build the CUDA kernels, run the CUDA tests, run the GPU
# benchmarks. Results land in $OUT (when set, as on the device tool) or benchmarks/results/.
# On the device tool: run benchmarks/gpu_wheels.sh here first, then
#     run(command="bash benchmarks/gpu_check.sh", carry=[".gpu_wheels"])
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-benchmarks/results}"
mkdir -p "$OUT_DIR"
if [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
elif python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    # The device machine: python3 holds torch with CUDA and no package index is reachable. Install the
    # carried wheels of benchmarks/gpu_wheels.sh (carry: [".gpu_wheels"]) and scenegrad itself, both
    # without an index.
    PY=python3
    if ls .gpu_wheels/*.whl >/dev/null 2>&1; then
        $PY -m pip install -q --no-index --no-deps .gpu_wheels/*.whl
    else
        echo "gpu_check: no .gpu_wheels/ (run benchmarks/gpu_wheels.sh and carry it): roma, trimesh and tyro may be missing"
    fi
    $PY -m pip install -q --no-index --no-deps --no-build-isolation -e .
else
    python3 -m venv .venv
    # On a GPU machine with a package index, take torch's CUDA build (TORCH_SPEC overrides).
    .venv/bin/pip install -q "${TORCH_SPEC:-torch==2.14.1}"
    .venv/bin/pip install -q -e ".[dev]"
    PY=.venv/bin/python
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/gpu.txt"
$PY -m scenegrad.apps info --build | tee "$OUT_DIR/info.txt"
status=0
$PY -m pytest -q -m cuda -k "cuda" tests 2>&1 | tee "$OUT_DIR/cuda_tests.txt" || status=1
$PY -m pytest -q tests/render 2>&1 | tail -n 5 | tee -a "$OUT_DIR/cuda_tests.txt" || status=1
# the whole pipeline on the GPU: scenegrad reconstruct, tiny preset, on the built-in sample clip (make demo's input)
$PY -m scenegrad.apps reconstruct --out "$OUT_DIR/reconstruct_cuda" --overwrite --preset tiny --device cuda 2>&1 \
    | tee "$OUT_DIR/reconstruct_cuda.txt" || status=1
$PY benchmarks/bench_mesh.py --device cuda --json "$OUT_DIR/mesh_cuda.json" 2>&1 | tee "$OUT_DIR/bench_mesh.txt" || status=1
$PY benchmarks/bench_gaussians.py --device cuda --json "$OUT_DIR/gaussians_cuda.json" 2>&1 \
    | tee "$OUT_DIR/bench_gaussians.txt" || status=1
$PY benchmarks/bench_spheres.py --device cuda --json "$OUT_DIR/spheres_cuda.json" 2>&1 \
    | tee "$OUT_DIR/bench_spheres.txt" || status=1
exit $status
