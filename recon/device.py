"""The torch device a reconstruction runs on: checked once, up front, with an error that names the problem.

:func:`resolve_device` accepts ``"cpu"``, ``"cuda"`` and ``"cuda:N"`` (or a :class:`torch.device` of those)
and raises ``ValueError`` for anything else, for CUDA on a machine where ``torch.cuda.is_available()`` is
False (a CPU build of torch, no driver, no GPU), and for a CUDA index beyond the devices present: so
``scenegrad reconstruct --device cuda`` fails at once with a clear message instead of deep inside a stage.

>>> resolve_device("cpu")
device(type='cpu')
>>> resolve_device("tpu")
Traceback (most recent call last):
...
ValueError: unknown device 'tpu': use cpu, cuda or cuda:N
"""

from __future__ import annotations

import re

import torch

__all__ = ["resolve_device"]

_PATTERN = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device` after checking that it can run here.

    Raises:
        ValueError: not ``cpu``, ``cuda`` or ``cuda:N``; CUDA asked for where torch sees no CUDA device;
            ``cuda:N`` with ``N`` at or beyond ``torch.cuda.device_count()``.
    """
    text = str(device).strip().lower()
    match = _PATTERN.match(text)
    if match is None or (match.group(1) == "cpu" and match.group(2) is not None):
        raise ValueError(f"unknown device {str(device)!r}: use cpu, cuda or cuda:N")
    if match.group(1) == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ValueError(f"device {text!r} was asked for, but CUDA is not available: torch.cuda.is_available() is "
                         f"False (torch {torch.__version__}, {build}); use --device cpu")
    count = torch.cuda.device_count()
    if match.group(2) is not None and int(match.group(2)) >= count:
        raise ValueError(f"device {text!r} was asked for, but torch sees {count} CUDA device(s) "
                         f"(cuda:0 to cuda:{count - 1})")
    return torch.device(text)
