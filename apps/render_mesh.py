"""``scenegrad render-mesh``: an orbit video and pictures of a mesh, drawn by scenegrad's
differentiable mesh renderer (the default input is a built-in textured torus)."""

from __future__ import annotations

import time
from pathlib import Path


def run(mesh_path: Path | None, out: Path, frames: int, size: int, shading: str, device: str, overwrite: bool) -> Path:
    """Render ``frames`` views on an orbit to ``out/orbit.mp4`` and ``out/first_frame.png``."""
    import imageio.v2 as imageio
    import torch
    from tqdm import tqdm

    from scenegrad.datasets.synthetic import orbit_cameras, torus_mesh
    from scenegrad.datasets.video import write_video
    from scenegrad.render.mesh import Lights, antialias_topology, render_mesh

    targets = [out / "orbit.mp4", out / "first_frame.png"]
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace it")
    if mesh_path is not None:
        from scenegrad.datasets.meshes import load_mesh

        mesh = load_mesh(mesh_path)
        name = mesh_path.name
        up = (0.0, 1.0, 0.0)  # OBJ, PLY and glTF models are +Y up
    else:
        mesh = torus_mesh()
        name = "built-in torus"
        up = (0.0, -1.0, 0.0)
    mesh = mesh.to(device=torch.device(device))
    lo, hi = mesh.vertices.min(0).values, mesh.vertices.max(0).values
    centre, radius = ((lo + hi) / 2).tolist(), (hi - lo).norm().item() / 2
    cams = orbit_cameras(frames, 3.0 * radius, size, size, 1.4 * size, centre=tuple(centre), up=up)
    topology = antialias_topology(mesh.faces)
    # A key light from above and to the side, whichever way is up.
    lights = Lights(directions=torch.tensor([[0.4, 0.0, 0.6]]) + torch.tensor([up]))
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    def images():
        with torch.no_grad():
            for k in tqdm(range(frames), desc=f"rendering {name}", unit="frame"):
                result = render_mesh(mesh, cams[k : k + 1], shading=shading, lights=lights, background=1.0,
                                     topology=topology, near=0.01 * radius, far=100 * radius)
                image = (result.color[0].clamp(0, 1) * 255).round().byte().cpu().numpy()
                if k == 0:
                    imageio.imwrite(out / "first_frame.png", image)
                yield image

    write_video(out / "orbit.mp4", images(), fps=30, overwrite=True)
    seconds = time.perf_counter() - start
    print(f"rendered {frames} frames of {name} ({mesh.num_faces} faces) at {size}x{size} in {seconds:.1f} s "
          f"({frames / seconds:.1f} frames/s): {out / 'orbit.mp4'}")
    return out / "orbit.mp4"
