"""Pure-PyTorch twins of the native kernels: same signatures, readable, autograd, any device.

Tests compare the native kernels against these, and these against finite differences.
"""
