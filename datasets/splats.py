"""Gaussian splat scenes: the :class:`Splats` container, 3DGS PLY and ``.splat`` files, initialisation from points.

**Raw parameters.** :class:`Splats` stores what 3DGS optimises and writes, *before* activation:
``log_scales`` (``scales = exp``), ``opacity_logits`` (``opacities = sigmoid``), unnormalised
``quats`` (w, x, y, z; ``unit_quats`` normalises) and SH coefficients split as 3DGS does into
``sh0 [N, 1, 3]`` (band 0) and ``shN [N, K - 1, 3]`` (the other bands, ``K = (degree + 1) ** 2``).
Properties give the activated values for :func:`scenegrad.render.gaussians.rasterize_gaussians`.
Storing raw values makes PLY round trips exact and keeps optimisation unconstrained.

**3DGS PLY** (the layout that the original code, gsplat, nerfstudio and viewers such as SuperSplat
use): binary little-endian, one ``vertex`` element of float32 properties, exactly
``x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 .. f_rest_{3(K-1)-1} opacity scale_0 scale_1 scale_2
rot_0 rot_1 rot_2 rot_3`` (:func:`splat_ply_properties`). Normals are written as zeros. ``f_rest`` is
channel-major: all red coefficients (bands 1..), then green, then blue. The SH degree is inferred
from the number of ``f_rest`` properties (0, 9, 24, 45 -> degree 0, 1, 2, 3). The reader also
accepts other property orders, extra properties, double precision, big-endian and ASCII files.

**.splat** (antimatter15's web viewer format, also read by most web viewers): no header, 32 bytes per
Gaussian: position ``3 x float32``, activated scales ``3 x float32`` (``exp``), colour ``RGBA 4 x uint8``
(``rgb = 0.5 + SH_C0 * f_dc``, ``a = sigmoid(opacity)``, each ``* 255``, clipped to 0..255 and
truncated) and rotation ``4 x uint8`` (``q / |q| * 128 + 128``, clipped and truncated, w first).
Gaussians are sorted by decreasing ``exp(sum(log_scales)) * sigmoid(opacity)``, as antimatter15's
``convert.py``. The format keeps band 0 only, quantised: :func:`load_splat` decodes each byte to the
centre of its quantisation bin, so saving what it loaded reproduces the colour and alpha bytes.

>>> import tempfile, torch
>>> from pathlib import Path
>>> from scenegrad.datasets.scene import Points
>>> splats = splats_from_points(Points(xyz=torch.rand(20, 3), rgb=torch.rand(20, 3)), sh_degree=1)
>>> len(splats), splats.sh_degree, splats.shN.shape, round(float(splats.opacities[0]), 6)
(20, 1, torch.Size([20, 3, 3]), 0.1)
>>> path = save_splats_ply(splats, Path(tempfile.mkdtemp()) / "scene.ply")
>>> back = load_splats_ply(path)
>>> all(torch.equal(getattr(back, f), getattr(splats, f)) for f in ("means", "quats", "log_scales", "sh0", "shN"))
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from scenegrad.datasets.scene import Points
from scenegrad.render.gaussians.sh import SH_C0, num_sh_bases, rgb_to_sh, sh_degree_from_bases

__all__ = [
    "Splats",
    "splat_ply_properties",
    "load_splats_ply",
    "save_splats_ply",
    "load_splat",
    "save_splat",
    "splats_from_points",
    "SPLAT_RECORD",
]

#: One Gaussian of a ``.splat`` file (32 bytes).
SPLAT_RECORD = np.dtype([("position", "<f4", (3,)), ("scale", "<f4", (3,)), ("rgba", "u1", (4,)),
                         ("rot", "u1", (4,))])

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_F_REST_COUNTS = {3 * (num_sh_bases(d) - 1): d for d in range(4)}  # 0, 9, 24, 45 -> 0..3


@dataclass(eq=False)
class Splats:
    """``N`` Gaussians as stored by 3DGS, before activation (see the module docstring).

    Fields:
        means: ``[N, 3]`` world positions.
        quats: ``[N, 4]`` rotations (w, x, y, z), not necessarily unit.
        log_scales: ``[N, 3]`` log standard deviations along the rotated axes.
        opacity_logits: ``[N]`` inverse-sigmoid opacities.
        sh0: ``[N, 1, 3]`` band-0 SH coefficients (``rgb = 0.5 + SH_C0 * sh0``).
        shN: ``[N, K - 1, 3]`` higher bands, ``K - 1`` in 0, 3, 8, 15 (degree 0..3).

    All fields share a float dtype and device; shapes are checked at construction.
    """

    means: Tensor
    quats: Tensor
    log_scales: Tensor
    opacity_logits: Tensor
    sh0: Tensor
    shN: Tensor

    def __post_init__(self) -> None:
        n = self.means.shape[0] if isinstance(self.means, Tensor) else -1
        shapes = {"means": (n, 3), "quats": (n, 4), "log_scales": (n, 3), "opacity_logits": (n,), "sh0": (n, 1, 3)}
        for name, shape in shapes.items():
            value = getattr(self, name)
            if not isinstance(value, Tensor) or tuple(value.shape) != shape:
                got = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"Splats.{name} must be {list(shape)}, got {got}")
        if (not isinstance(self.shN, Tensor) or self.shN.dim() != 3 or self.shN.shape[0] != n
                or self.shN.shape[2] != 3 or self.shN.shape[1] + 1 not in (1, 4, 9, 16)):
            got = list(self.shN.shape) if isinstance(self.shN, Tensor) else type(self.shN).__name__
            raise ValueError(f"Splats.shN must be [N, K - 1, 3] with K - 1 in (0, 3, 8, 15), got {got}")

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        """SH degree, 0..3, from the number of coefficients."""
        return sh_degree_from_bases(self.shN.shape[1] + 1)

    @property
    def scales(self) -> Tensor:
        """``[N, 3]`` activated scales ``exp(log_scales)``."""
        return torch.exp(self.log_scales)

    @property
    def opacities(self) -> Tensor:
        """``[N]`` activated opacities ``sigmoid(opacity_logits)``."""
        return torch.sigmoid(self.opacity_logits)

    @property
    def unit_quats(self) -> Tensor:
        """``[N, 4]`` normalised quaternions (w, x, y, z)."""
        return torch.nn.functional.normalize(self.quats, dim=-1)

    @property
    def sh_coeffs(self) -> Tensor:
        """``[N, K, 3]`` all SH coefficients (``sh0`` then ``shN``): the ``colors`` argument of
        ``rasterize_gaussians`` with ``sh_degree=self.sh_degree``."""
        return torch.cat([self.sh0, self.shN], dim=1)

    @property
    def rgb(self) -> Tensor:
        """``[N, 3]`` view-independent colour ``0.5 + SH_C0 * sh0``, clamped to ``[0, 1]``."""
        return (0.5 + SH_C0 * self.sh0[:, 0]).clamp(0.0, 1.0)


def splat_ply_properties(sh_degree: int) -> list[str]:
    """The 3DGS PLY vertex property names, in order, for ``sh_degree`` (0..3).

    >>> len(splat_ply_properties(3)), splat_ply_properties(0)[6:]
    (62, ['f_dc_0', 'f_dc_1', 'f_dc_2', 'opacity', 'scale_0', 'scale_1', 'scale_2', 'rot_0', 'rot_1', 'rot_2', 'rot_3'])
    """
    rest = 3 * (num_sh_bases(sh_degree) - 1)
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def _check_writable(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)


def _np32(x: Tensor) -> np.ndarray:
    return x.detach().cpu().to(torch.float32).numpy()


def save_splats_ply(splats: Splats, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``splats`` as a standard 3DGS PLY (float32, binary little-endian; layout in the module
    docstring) and return the path. Raises ``FileExistsError`` naming an existing file unless ``overwrite``."""
    path = Path(path)
    _check_writable(path, overwrite)
    n = len(splats)
    names = splat_ply_properties(splats.sh_degree)
    f_rest = _np32(splats.shN.transpose(1, 2).reshape(n, -1))  # channel-major
    columns = [_np32(splats.means), np.zeros((n, 3), np.float32), _np32(splats.sh0[:, 0]), f_rest,
               _np32(splats.opacity_logits)[:, None], _np32(splats.log_scales), _np32(splats.quats)]
    table = np.ascontiguousarray(np.concatenate(columns, axis=1), dtype="<f4")
    assert table.shape[1] == len(names)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in names] + ["end_header"]
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(table.tobytes())
    return path


def _parse_header(path: Path, data: bytes) -> tuple[str, int, list[tuple[str, str]], int]:
    """(format, vertex count, [(name, numpy type)], offset of the vertex data) of a PLY file."""
    if not data.startswith(b"ply"):
        raise ValueError(f"{path}: not a PLY file (it does not start with 'ply')")
    end = data.find(b"end_header")
    if end < 0:
        raise ValueError(f"{path}: malformed PLY header (no 'end_header')")
    newline = data.find(b"\n", end)
    if newline < 0:
        raise ValueError(f"{path}: malformed PLY header (nothing after 'end_header')")
    try:
        lines = data[:end].decode("ascii").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: malformed PLY header (not ASCII)") from e
    fmt, elements = None, []  # elements: [name, count, [(prop, type)]]
    for number, raw in enumerate(lines[1:], start=2):
        words = raw.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) == 3:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and len(words) == 3 and elements:
            if words[1] not in _PLY_TYPES:
                raise ValueError(f"{path}: unknown PLY property type {words[1]!r} (header line {number})")
            elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
        elif words[0] == "property" and len(words) >= 2 and words[1] == "list" and elements:
            if elements[-1][0] == "vertex":
                raise ValueError(f"{path}: list property in the vertex element is not a Gaussian splat PLY")
        else:
            raise ValueError(f"{path}: malformed PLY header line {number}: {raw!r}")
    if fmt not in ("binary_little_endian", "binary_big_endian", "ascii"):
        raise ValueError(f"{path}: unsupported or missing PLY format {fmt!r}")
    if not elements or elements[0][0] != "vertex":
        raise ValueError(f"{path}: expected the 'vertex' element first, found "
                         f"{[e[0] for e in elements] or 'no elements'}")
    _, count, props = elements[0]
    return fmt, count, props, newline + 1


def load_splats_ply(path: str | Path, dtype: torch.dtype = torch.float32) -> Splats:
    """Read a 3DGS PLY (see the module docstring) into raw-parameter :class:`Splats` of ``dtype``.

    Raises ``FileNotFoundError``, or ``ValueError`` naming the file for a malformed header, missing
    properties, an ``f_rest`` count that is not 0, 9, 24 or 45, or truncated data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such PLY file")
    data = path.read_bytes()
    fmt, n, props, offset = _parse_header(path, data)
    names = [p for p, _ in props]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate vertex property names")
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
                "rot_0", "rot_1", "rot_2", "rot_3"]
    missing = [p for p in required if p not in names]
    if missing:
        raise ValueError(f"{path}: not a Gaussian splat PLY, missing vertex properties {missing}")
    n_rest = sum(1 for p in names if p.startswith("f_rest_"))
    if n_rest not in _F_REST_COUNTS:
        raise ValueError(f"{path}: {n_rest} f_rest properties; expected 0, 9, 24 or 45 (SH degree 0..3)")
    if any(f"f_rest_{i}" not in names for i in range(n_rest)):
        raise ValueError(f"{path}: f_rest properties are not numbered f_rest_0..f_rest_{n_rest - 1}")

    if fmt == "ascii":
        try:
            values = np.array(data[offset:].split()[: n * len(props)], dtype=np.float64)
        except ValueError as e:
            raise ValueError(f"{path}: malformed ASCII PLY data ({e})") from e
        if values.size < n * len(props):
            raise ValueError(f"{path}: truncated: {n} vertices need {n * len(props)} values, found {values.size}")
        table = values.reshape(n, len(props))
        column = {name: table[:, i] for i, name in enumerate(names)}
    else:
        order = "<" if fmt == "binary_little_endian" else ">"
        record = np.dtype([(name, order + t) for name, t in props])
        need = n * record.itemsize
        if len(data) - offset < need:
            raise ValueError(f"{path}: truncated: {n} vertices need {need} bytes of data, found {len(data) - offset}")
        table = np.frombuffer(data, dtype=record, count=n, offset=offset)
        column = {name: table[name] for name in names}

    def cols(*keys: str) -> Tensor:
        stacked = np.stack([np.asarray(column[k], dtype=np.float64 if dtype == torch.float64 else np.float32)
                            for k in keys], axis=1) if keys else np.zeros((n, 0), np.float32)
        return torch.from_numpy(np.ascontiguousarray(stacked)).to(dtype)

    k1 = n_rest // 3
    f_rest = cols(*[f"f_rest_{i}" for i in range(n_rest)])
    return Splats(
        means=cols("x", "y", "z"),
        quats=cols("rot_0", "rot_1", "rot_2", "rot_3"),
        log_scales=cols("scale_0", "scale_1", "scale_2"),
        opacity_logits=cols("opacity")[:, 0].contiguous(),
        sh0=cols("f_dc_0", "f_dc_1", "f_dc_2")[:, None, :].contiguous(),
        shN=f_rest.reshape(n, 3, k1).transpose(1, 2).contiguous(),
    )


def save_splat(splats: Splats, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write antimatter15's 32-byte-per-Gaussian ``.splat`` (layout in the module docstring; band 0
    only) and return the path. Raises ``FileExistsError`` naming an existing file unless ``overwrite``.

    The arithmetic is float32, as antimatter15's converter does with float32 PLY values.
    """
    path = Path(path)
    _check_writable(path, overwrite)
    log_scales = _np32(splats.log_scales)
    logits = _np32(splats.opacity_logits)
    with np.errstate(over="ignore"):
        alpha = np.float32(1) / (np.float32(1) + np.exp(-logits))
        key = np.exp(log_scales.sum(1, dtype=np.float32)) * alpha
    order = np.argsort(-key, kind="stable")
    rgb = np.float32(0.5) + np.float32(SH_C0) * _np32(splats.sh0[:, 0])
    rgba = np.concatenate([rgb, alpha[:, None]], axis=1)
    quats = _np32(splats.quats)
    rot = quats / np.linalg.norm(quats, axis=1, keepdims=True)
    table = np.empty(len(splats), dtype=SPLAT_RECORD)
    table["position"] = _np32(splats.means)
    with np.errstate(over="ignore"):
        table["scale"] = np.exp(log_scales)
    table["rgba"] = np.clip(rgba * np.float32(255), 0, 255).astype(np.uint8)
    table["rot"] = np.clip(rot * np.float32(128) + np.float32(128), 0, 255).astype(np.uint8)
    with open(path, "wb") as f:
        f.write(table[order].tobytes())
    return path


def load_splat(path: str | Path) -> Splats:
    """Read a ``.splat`` file into degree-0 :class:`Splats` (float32).

    Each colour byte ``c`` decodes to ``(c + 0.5) / 255`` (the centre of its bin) and each alpha byte
    ``a`` to the logit of ``min((a + 0.5) / 255, 1 - 2^-25)`` (255 gives a logit of about 17.3, which
    float32 ``sigmoid`` maps to exactly 1), so :func:`save_splat` writes the same colour bytes back.
    Rotations decode as ``(r - 128) / 128`` (not re-normalised; saving again may move a rotation byte
    by one), scales as ``log`` (float32: ``exp`` of it may differ from the stored scale by an ulp).
    Raises ``FileNotFoundError``, or ``ValueError`` naming the file when its size is not a multiple
    of 32 bytes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such .splat file")
    data = path.read_bytes()
    if len(data) % SPLAT_RECORD.itemsize:
        raise ValueError(f"{path}: {len(data)} bytes is not a whole number of 32-byte .splat records "
                         "(truncated or not a .splat file)")
    table = np.frombuffer(data, dtype=SPLAT_RECORD)
    rgba = table["rgba"].astype(np.float64)
    p = np.minimum((rgba[:, 3] + 0.5) / 255.0, 1.0 - 2.0**-25)
    with np.errstate(divide="ignore"):
        log_scales = np.log(table["scale"].astype(np.float64)).astype(np.float32)
    return Splats(
        means=torch.from_numpy(table["position"].copy()),
        quats=torch.from_numpy((table["rot"].astype(np.float32) - 128) / 128),
        log_scales=torch.from_numpy(log_scales),
        opacity_logits=torch.from_numpy(np.log(p / (1 - p)).astype(np.float32)),
        sh0=rgb_to_sh(torch.from_numpy((rgba[:, :3] + 0.5) / 255.0)).float()[:, None, :],
        shN=torch.zeros(len(table), 0, 3),
    )


def splats_from_points(points: Points, sh_degree: int = 3, init_opacity: float = 0.1,
                       dtype: torch.dtype = torch.float32) -> Splats:
    """Initial Gaussians at the points of a cloud, as 3DGS initialises from SfM points.

    - scales: isotropic, ``sqrt(mean squared distance to the 3 nearest other points)`` (3DGS's
      ``distCUDA2``; squared distances clamped at ``1e-7``, so duplicates and a lone point get
      ``sqrt(1e-7)``), stored as logs;
    - rotations: identity ``(1, 0, 0, 0)``;
    - opacity: ``init_opacity`` everywhere, stored as a logit;
    - colour: band 0 from ``points.rgb`` (``rgb_to_sh``; mid grey, i.e. 0, without colours), higher
      bands up to ``sh_degree`` zero.
    """
    xyz = points.xyz.detach().cpu().double().numpy()
    n = len(xyz)
    if n == 0:
        raise ValueError("cannot initialise Gaussians from an empty point cloud")
    if not 0.0 < init_opacity < 1.0:
        raise ValueError(f"init_opacity must be in (0, 1), got {init_opacity}")
    k = num_sh_bases(sh_degree)
    if n > 1:
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(xyz).query(xyz, k=min(4, n))  # column 0: the point itself (distance 0)
        dist2 = (dist[:, 1:] ** 2).mean(axis=1)
    else:
        dist2 = np.zeros(1)
    log_scale = np.log(np.sqrt(np.maximum(dist2, 1e-7)))
    rgb = points.rgb.detach().cpu().double() if points.rgb is not None else torch.full((n, 3), 0.5, dtype=torch.float64)
    quats = torch.zeros(n, 4, dtype=dtype)
    quats[:, 0] = 1
    return Splats(
        means=torch.from_numpy(xyz).to(dtype),
        quats=quats,
        log_scales=torch.from_numpy(log_scale).to(dtype)[:, None].repeat(1, 3),
        opacity_logits=torch.full((n,), math.log(init_opacity / (1 - init_opacity)), dtype=dtype),
        sh0=rgb_to_sh(rgb).to(dtype)[:, None, :],
        shN=torch.zeros(n, k - 1, 3, dtype=dtype),
    )
