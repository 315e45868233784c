"""``report.html``: one self-contained page about a ``scenegrad reconstruct`` run.

It reads what the run left in its folder (``report.json``, ``images/``, ``depth/``, ``sparse/0``,
``renders/orbit.mp4``) and shows the stage timings and peak memory, the frames used and posed, the
held-out PSNR/SSIM, a top view of the camera trajectory (inline SVG, the cameras as small
frustums), a strip of input frames beside their depth maps, and frames of the rendered video.
Pictures are embedded as JPEG data URIs, so the page can be mailed or opened anywhere offline.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

__all__ = ["write_report_html"]

THUMB_WIDTH = 240
MAX_STRIP = 6


def _jpeg_uri(image_bgr: np.ndarray, width: int = THUMB_WIDTH) -> str:
    import cv2

    h, w = image_bgr.shape[:2]
    if w > width:
        image_bgr = cv2.resize(image_bgr, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("could not encode a thumbnail")
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def _img(uri: str, title: str) -> str:
    return f'<figure><img src="{uri}" alt="{html.escape(title)}"><figcaption>{html.escape(title)}</figcaption></figure>'


def _spread(items: list, count: int) -> list:
    if len(items) <= count:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def _frames_and_depth(out: Path) -> str:
    import cv2

    names = _spread(sorted(p.name for p in (out / "images").glob("*.png")), MAX_STRIP)
    cells = []
    for name in names:
        image = cv2.imread(str(out / "images" / name))
        if image is None:
            continue
        cells.append(_img(_jpeg_uri(image), name))
        depth = cv2.imread(str(out / "depth" / name))
        if depth is not None:
            cells.append(_img(_jpeg_uri(depth), f"depth of {name}"))
    return "".join(cells)


def _video_frames(video: Path, count: int = MAX_STRIP) -> str:
    if not video.is_file():
        return ""
    import cv2

    capture = cv2.VideoCapture(str(video))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    cells = []
    for index in _spread(list(range(total)), count):
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
        if ok:
            cells.append(_img(_jpeg_uri(frame), f"{video.name} frame {index}"))
    capture.release()
    return "".join(cells)


def trajectory_svg(R: np.ndarray, t: np.ndarray, size: int = 420) -> str:
    """A top view of OpenCV cameras (world-to-camera ``R [N, 3, 3]``, ``t [N, 3]``) as SVG: the
    plane is the one orthogonal to the cameras' mean up direction (image up is -Y); each camera is
    a small frustum (its centre and the two top corners of its image plane), the path joins the
    centres in order, the first camera is green and the last red."""
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    centres = -np.einsum("nji,nj->ni", R, t)  # -R^T t
    up = -R[:, 1, :].mean(0)
    up /= max(np.linalg.norm(up), 1e-12)
    a = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(up, a)
    extent = np.ptp(centres, axis=0).max() if len(centres) > 1 else 1.0
    arm = 0.08 * max(extent, 1e-9)
    points = []  # (centre, left corner, right corner) in the plane
    for Ri, c in zip(R, centres, strict=True):
        forward, right = Ri[2], Ri[0]
        corners = [c + arm * (forward - 0.5 * right), c + arm * (forward + 0.5 * right)]
        points.append([(p @ a, p @ b) for p in (c, *corners)])
    xy = np.array(points).reshape(-1, 2)
    lo, hi = xy.min(0), xy.max(0)
    scale = (size - 40) / max((hi - lo).max(), 1e-12)

    def pt(p: tuple[float, float]) -> str:
        return f"{20 + (p[0] - lo[0]) * scale:.1f},{size - 20 - (p[1] - lo[1]) * scale:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" class="traj">',
             f'<rect width="{size}" height="{size}" fill="#fafafa" stroke="#ccc"/>',
             '<polyline fill="none" stroke="#999" stroke-width="1" points="'
             + " ".join(pt(p[0]) for p in points) + '"/>']
    for i, (c, left, right) in enumerate(points):
        colour = "#2a2" if i == 0 else "#c22" if i == len(points) - 1 else "#357"
        corners = f"{pt(c)} {pt(left)} {pt(right)}"
        parts.append(f'<polygon fill="none" stroke="{colour}" stroke-width="1" points="{corners}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _trajectory(out: Path) -> str:
    sparse = out / "sparse" / "0"
    if not sparse.is_dir():
        return "<p>No cameras (the poses stage has not finished).</p>"
    from scenegrad.datasets.colmap import load_colmap

    scene = load_colmap(sparse, out / "images")
    cams = scene.cameras
    return trajectory_svg(cams.R.numpy(), cams.t.numpy())


def _stage_table(report: dict) -> str:
    rows = []
    for name, stage in report.get("stages", {}).items():
        facts = {k: v for k, v in stage.items() if k not in ("done", "seconds", "peak_memory_mb")}
        shown = ", ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in facts.items()
                          if not isinstance(v, list) or len(v) <= 4)
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{stage.get('seconds', 0):.1f}</td>"
                    f"<td>{stage.get('peak_memory_mb', '')}</td><td>{html.escape(shown)}</td></tr>")
    return ("<table><tr><th>stage</th><th>seconds</th><th>peak memory (MB)</th><th>facts</th></tr>"
            + "".join(rows) + "</table>")


def _summary(report: dict) -> str:
    stages = report.get("stages", {})
    frames = stages.get("frames", {}).get("count")
    posed = stages.get("poses", {}).get("frames_posed")
    splats = stages.get("splats", {})
    psnr, ssim = splats.get("heldout_psnr"), splats.get("heldout_ssim")
    items = [f"input: {html.escape(str(report.get('input', '?')))}",
             f"frames used: {frames if frames is not None else '?'}, posed: {posed if posed is not None else '?'}",
             f"total time: {report.get('total_seconds', sum(s.get('seconds', 0) for s in stages.values())):.1f} s"]
    if psnr is not None:
        items.append(f"held-out PSNR {psnr:.2f} dB" + (f", SSIM {ssim:.3f}" if ssim is not None else "")
                     + f" on frames {splats.get('heldout_frames')}")
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


def write_report_html(out: str | Path) -> Path:
    """Write ``out/report.html`` from the run in folder ``out``; returns its path. Sections whose
    stage has not run yet say so instead of failing."""
    out = Path(out)
    report_path = out / "report.json"
    if not report_path.is_file():
        raise FileNotFoundError(f"{report_path} does not exist: not a scenegrad reconstruct folder")
    report = json.loads(report_path.read_text())
    frames = _frames_and_depth(out) if (out / "images").is_dir() else ""
    renders = _video_frames(out / "renders" / "orbit.mp4")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>scenegrad reconstruct: {html.escape(out.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ddd; padding: 4px 8px; text-align: left; }}
figure {{ display: inline-block; margin: 4px; }} figcaption {{ font-size: 11px; color: #666; }}
</style></head><body>
<h1>scenegrad reconstruct</h1>
{_summary(report)}
<h2>Stages</h2>
{_stage_table(report)}
<h2>Camera trajectory (top view; first camera green, last red)</h2>
{_trajectory(out)}
<h2>Frames and depth</h2>
{frames or "<p>No frames yet.</p>"}
<h2>Renders</h2>
{renders or "<p>No render video yet.</p>"}
</body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    return path
