"""What ``scenegrad demo`` shows of a finished reconstruction: the camera trajectory with frustums,
the report as a table and a figure, the depth maps, and one zip of every output.

The figures are Plotly figures when Plotly is installed (interactive in the page), else Matplotlib.

>>> import torch
>>> from scenegrad.render.cameras import Cameras
>>> cams = Cameras(fx=50.0, fy=50.0, cx=32.0, cy=24.0, R=torch.eye(3)[None].repeat(2, 1, 1),
...                t=torch.tensor([[0.0, 0, 0], [-1.0, 0, 0]]), width=64, height=48)
>>> frustum_lines(cams, depth=1.0).shape  # 2 cameras x 8 edges x (start, end, gap)
(48, 3)
"""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import numpy as np

from scenegrad.recon.reconstruct import OUTPUTS, STAGES

#: Outputs that go into the download (the splat training checkpoints stay out: they are large and
#: only useful to resume).
ZIPPED = tuple(name for name in OUTPUTS if name != "splat")


def frustum_lines(cameras, depth: float) -> np.ndarray:
    """Line segments drawing each camera's frustum (apex to the four image corners at ``depth``,
    and the image rectangle) as ``[N * 8 * 3, 3]`` world points, segments separated by NaN rows."""
    R = cameras.R.double().numpy()
    t = cameras.t.double().numpy()
    rows = []
    for i in range(len(cameras)):
        fx, fy, cx, cy = (float(v[i]) for v in (cameras.fx, cameras.fy, cameras.cx, cameras.cy))
        w, h = float(cameras.width[i]), float(cameras.height[i])
        corners = np.array([[(u - cx) / fx * depth, (v - cy) / fy * depth, depth]
                            for u, v in ((0, 0), (w, 0), (w, h), (0, h))])
        world = (corners - t[i]) @ R[i]  # R^T (x - t)
        apex = -t[i] @ R[i]
        gap = np.full(3, np.nan)
        for k in range(4):
            rows += [apex, world[k], gap, world[k], world[(k + 1) % 4], gap]
    return np.array(rows).reshape(-1, 3)


def _scene(run_dir: Path):
    import torch

    from scenegrad.datasets.colmap import load_colmap

    return load_colmap(Path(run_dir) / "sparse" / "0", dtype=torch.float64)


def trajectory_figure(run_dir: Path, max_points: int = 3000, backend: str = "auto"):
    """The cameras of a reconstruct folder (path, frustums) over a sample of its dense points.

    ``backend``: ``plotly``, ``matplotlib`` or ``auto`` (Plotly when installed)."""
    scene = _scene(run_dir)
    cams = scene.cameras
    centres = cams.centers.numpy()
    extent = float(np.linalg.norm(centres.max(0) - centres.min(0)))
    points = None
    if scene.points is not None and len(scene.points):
        rng = np.random.default_rng(0)
        keep = rng.permutation(len(scene.points))[:max_points]
        points = (scene.points.xyz.numpy()[keep], scene.points.rgb.numpy()[keep])
        if points[0].size:
            extent = max(extent, float(np.median(np.linalg.norm(points[0] - centres.mean(0), axis=1))))
    lines = frustum_lines(cams, depth=0.12 * max(extent, 1e-3))
    up = -cams.R[:, 1, :].double().mean(0).numpy()  # OpenCV: image up is -Y
    if backend == "plotly" or (backend == "auto" and importlib.util.find_spec("plotly") is not None):
        return _plotly(centres, lines, points, up)
    return _matplotlib(centres, lines, points, up)


def _plotly(centres, lines, points, up):
    import plotly.graph_objects as go

    traces = []
    if points is not None:
        rgb = [f"rgb({r},{g},{b})" for r, g, b in (np.asarray(points[1]).reshape(-1, 3) * 255).astype(int)]
        traces.append(go.Scatter3d(x=points[0][:, 0], y=points[0][:, 1], z=points[0][:, 2], mode="markers",
                                   marker={"size": 1.5, "color": rgb}, name="dense points"))
    traces.append(go.Scatter3d(x=lines[:, 0], y=lines[:, 1], z=lines[:, 2], mode="lines",
                               line={"color": "#d62728", "width": 2}, name="cameras"))
    traces.append(go.Scatter3d(x=centres[:, 0], y=centres[:, 1], z=centres[:, 2], mode="lines+markers",
                               line={"color": "#1f77b4", "width": 4}, marker={"size": 2}, name="trajectory"))
    figure = go.Figure(traces)
    figure.update_layout(scene={"aspectmode": "data", "camera": {"up": dict(zip("xyz", up.tolist(), strict=True))}},
                         margin={"l": 0, "r": 0, "t": 30, "b": 0}, title="cameras", height=420)
    return figure


def _matplotlib(centres, lines, points, up):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(6, 4.5))
    axes = figure.add_subplot(projection="3d")
    if points is not None:
        axes.scatter(*points[0].T, s=0.5, c=np.clip(np.asarray(points[1]).reshape(-1, 3), 0, 1))
    axes.plot(*lines.T, color="#d62728", linewidth=0.8)
    axes.plot(*centres.T, color="#1f77b4", linewidth=2, marker=".")
    axes.set_title("cameras")
    axes.set_aspect("equal")
    plt.close(figure)
    return figure


def report_rows(report: dict) -> list[list]:
    """``[stage, seconds, peak memory MB, details]`` rows of a ``report.json``."""
    rows = []
    for stage in STAGES:
        record = report.get("stages", {}).get(stage)
        if not record:
            continue
        details = ", ".join(f"{k}={_short(v)}" for k, v in record.items()
                            if k not in ("done", "seconds", "peak_memory_mb"))
        rows.append([stage, round(record["seconds"], 2), record.get("peak_memory_mb"), details])
    return rows


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) > 6:
        return f"[{len(value)} values]"
    return str(value)


def stage_figure(report: dict):
    """A bar chart of the seconds each stage took (Matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report_rows(report)
    figure, axes = plt.subplots(figsize=(6, 2.6))
    axes.barh([r[0] for r in rows][::-1], [r[1] for r in rows][::-1], color="#1f77b4")
    axes.set_xlabel("seconds")
    psnr = report.get("stages", {}).get("splats", {}).get("heldout_psnr")
    axes.set_title(f"time per stage (total {report.get('total_seconds', 0):.0f} s"
                   + (f", held-out PSNR {psnr:.1f} dB)" if psnr is not None else ")"))
    figure.tight_layout()
    plt.close(figure)
    return figure


def depth_gallery(run_dir: Path) -> list[tuple[str, str]]:
    """``(png path, caption)`` for each depth map the poses stage wrote."""
    return [(str(p), p.stem) for p in sorted((Path(run_dir) / "depth").glob("*.png"))]


def zip_outputs(run_dir: Path, target: Path) -> Path:
    """Zip the outputs of ``run_dir`` (:data:`ZIPPED`) into ``target`` (paths relative to ``run_dir``)."""
    run_dir = Path(run_dir)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in ZIPPED:
            path = run_dir / name
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                if file.is_file():
                    zf.write(file, file.relative_to(run_dir).as_posix())
    return target
