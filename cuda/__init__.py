"""C++ (CPU, OpenMP) and CUDA kernel sources, and their first-use build (:mod:`.build`).

Layout: one folder per area (``mesh/``, later ``gaussians/``, ``spheres/``, ``iso/``), each with

- ``<op>.h``: the per-element math, ``SG_HD`` (``__host__ __device__``) functions with no torch in
  them, shared by both launchers so the CPU tests exercise the code the GPU runs;
- ``<op>_cpu.cpp``: the CPU launcher (shape checks, OpenMP loops over the math);
- ``<op>.cu``: the CUDA kernels and launcher;

plus ``common/`` (shared macros and checks) and ``bindings.cpp``, the one place where each
operation picks its CPU or CUDA launcher by the device of its inputs.
"""
