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
# Most important first, each step with its own time limit (device time is short; what a cut-off run
# wrote to $OUT still comes back): the build, the CUDA tests (every test marked `cuda`, which
# tests/conftest.py's requires_cuda adds, including the whole pipeline on the GPU:
# test_reconstruct_tiny_on_cuda), then the GPU benchmarks against their peers where installed.
status=0
step() {
    local name=$1 limit=$2
    shift 2
    echo "== gpu_check: $name (limit ${limit} s)"
    timeout "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.txt"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        if [ "$rc" -eq 124 ]; then echo "gpu_check: $name ran over its limit"; else echo "gpu_check: $name failed (exit $rc)"; fi
        status=1
    fi
}
step build 240 $PY -m scenegrad.apps info --build
step cuda_tests 180 $PY -m pytest -q -rs -m cuda tests
step bench_spheres 60 $PY benchmarks/bench_spheres.py --device cuda --json "$OUT_DIR/spheres_cuda.json"
step bench_mesh 90 $PY benchmarks/bench_mesh.py --device cuda --max-seconds 5 --json "$OUT_DIR/mesh_cuda.json"
step bench_gaussians 60 $PY benchmarks/bench_gaussians.py --device cuda --json "$OUT_DIR/gaussians_cuda.json"
exit $status
