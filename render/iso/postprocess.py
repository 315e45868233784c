"""Clean-ups users expect after an extraction, through Open3D (``pip install scenegrad[open3d]``):
keep the largest connected piece, Taubin smoothing, quadric decimation. None is differentiable;
each takes and returns ``(vertices [V, 3], faces [F, 3])`` tensors on the input's device and dtype
(faces int32), keeping the winding.

>>> import torch
>>> from scenegrad.render.iso import marching_cubes
>>> x = torch.linspace(-1, 1, 33)
>>> p = torch.stack(torch.meshgrid(x, x, x, indexing="ij"), -1)
>>> sdf = torch.minimum(p.norm(dim=-1) - 0.5, (p - 0.8).norm(dim=-1) - 0.1)  # a sphere and a speck
>>> iso = marching_cubes(sdf, spacing=2 / 32, origin=(-1, -1, -1))
>>> v, f = largest_component(iso.vertices, iso.faces)
>>> bool(v.norm(dim=1).max() < 0.55), f.shape[0] < iso.faces.shape[0]
(True, True)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["largest_component", "smooth", "decimate"]


def _open3d():
    try:
        import open3d as o3d
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("mesh post-processing needs Open3D: pip install 'scenegrad[open3d]'") from error
    return o3d


def _to_o3d(vertices: Tensor, faces: Tensor):
    o3d = _open3d()
    if vertices.dim() != 2 or vertices.shape[-1] != 3 or faces.dim() != 2 or faces.shape[-1] != 3:
        raise ValueError(f"expected vertices [V, 3] and faces [F, 3], got {list(vertices.shape)} and "
                         f"{list(faces.shape)}")
    mesh = o3d.geometry.TriangleMesh()
    mesh.vertices = o3d.utility.Vector3dVector(vertices.detach().cpu().double().numpy())
    mesh.triangles = o3d.utility.Vector3iVector(faces.detach().cpu().numpy().astype(np.int32))
    return mesh


def _from_o3d(mesh, like_v: Tensor, like_f: Tensor) -> tuple[Tensor, Tensor]:
    v = torch.from_numpy(np.asarray(mesh.vertices)).to(like_v.device, like_v.dtype)
    f = torch.from_numpy(np.asarray(mesh.triangles).astype(np.int32)).to(like_f.device)
    return v, f


def largest_component(vertices: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:
    """The connected piece (triangles linked through shared edges) with the most triangles."""
    if faces.shape[0] == 0:
        return vertices, faces
    mesh = _to_o3d(vertices, faces)
    labels, counts, _ = mesh.cluster_connected_triangles()
    labels = np.asarray(labels)
    mesh.remove_triangles_by_mask(labels != int(np.argmax(np.asarray(counts))))
    mesh.remove_unreferenced_vertices()
    return _from_o3d(mesh, vertices, faces)


def smooth(vertices: Tensor, faces: Tensor, iterations: int = 10, *, lam: float = 0.5,
           mu: float = -0.53) -> tuple[Tensor, Tensor]:
    """Taubin smoothing (``lam`` / ``mu`` steps, ``iterations`` times): removes the staircase of a
    coarse extraction without the shrinking of plain Laplacian smoothing. Faces are unchanged."""
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    mesh = _to_o3d(vertices, faces).filter_smooth_taubin(number_of_iterations=int(iterations), lambda_filter=lam,
                                                         mu=mu)
    return _from_o3d(mesh, vertices, faces)


def decimate(vertices: Tensor, faces: Tensor, target_faces: int) -> tuple[Tensor, Tensor]:
    """Quadric edge-collapse decimation (Garland-Heckbert) to at most ``target_faces`` triangles."""
    if target_faces < 1:
        raise ValueError(f"target_faces must be >= 1, got {target_faces}")
    if faces.shape[0] <= target_faces:
        return vertices, faces
    mesh = _to_o3d(vertices, faces).simplify_quadric_decimation(target_number_of_triangles=int(target_faces))
    mesh.remove_unreferenced_vertices()
    return _from_o3d(mesh, vertices, faces)
