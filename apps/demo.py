"""``scenegrad demo``: a Gradio app on localhost to reconstruct a video in the browser and look at the
result, and to watch an inverse-rendering fit.

Tab *Reconstruct*: upload a video or a zip of images (or tick the bundled sample clip), choose a
preset, and ``scenegrad reconstruct`` runs in a child process (:mod:`scenegrad.apps.demo_jobs`) with
live progress (stage, percentage, ETA, log tail) and a cancel button. The results: the Gaussian
splats and the mesh in 3D viewers, the orbit video, the depth maps, the camera trajectory with
frustums, the report as a table and a figure, and every output as one zip.

Tab *Inverse rendering*: a mesh (OBJ/GLB/PLY, or the built-in torus) and either a turntable of
itself or photos with known cameras (a zip with ``transforms.json`` or a COLMAP model); its texture
(or vertex colours) and pose are fitted with :func:`scenegrad.render.mesh.render_mesh` while the
loss and the current render update (:mod:`scenegrad.apps.demo_inverse`).

One heavy job runs at a time for the whole app (the others wait in Gradio's queue). Uploads and
results live in a per-session folder that is removed when the page is closed, after an hour idle,
or when the app stops (:mod:`scenegrad.apps.demo_uploads` holds the limits and the zip checks).
Nothing is fetched from the network and the app is never shared publicly.

Gradio is imported when the app is built, not when this module is imported; ``launch`` sets
``GRADIO_TEMP_DIR`` (unless set) to a folder of the app's own before that.
"""

# No "from __future__ import annotations": Gradio reads the ``gr.Request`` annotations of the handlers.
import atexit
import dataclasses
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from scenegrad.apps.demo_uploads import MESH_EXTENSIONS, VIDEO_EXTENSIONS, Limits, Sessions, suffix_of

PRESETS = ("tiny", "fast", "default")
#: Upper limits of the inverse-rendering controls.
MAX_FIT_STEPS, MAX_FIT_SIZE, MAX_FIT_VIEWS, MAX_FIT_FACES = 1000, 256, 16, 200_000


@dataclass
class DemoConfig:
    """host/port: where the app listens (``port=None``: Gradio's first free port from 7860);
    limits: upload and compute limits; work_dir: the folder for sessions and Gradio's uploads
    (``None``: a fresh temporary folder, removed when the app stops); session_idle_s: a session
    untouched this long has its folder removed; queue_size: jobs that may wait."""

    host: str = "127.0.0.1"
    port: int | None = None
    limits: Limits = field(default_factory=Limits)
    work_dir: Path | None = None
    session_idle_s: float = 3600.0
    queue_size: int = 20


class _FitJob:
    """The cancel handle of an inverse-rendering fit (checked between steps)."""

    def __init__(self):
        self.stop = threading.Event()
        self.running = True

    def cancel(self) -> None:
        self.stop.set()


def _gradio_upload_folder() -> Path:
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def _forget_upload(path: str | None) -> None:
    """Remove Gradio's own copy of an upload (ours is in the session folder), only inside its folder."""
    if path:
        file = Path(path).resolve()
        if _gradio_upload_folder() in file.parents:
            file.unlink(missing_ok=True)
            if file.parent != _gradio_upload_folder() and not any(file.parent.iterdir()):
                file.parent.rmdir()


def _preset_options(preset: str, limits: Limits) -> dict:
    from scenegrad.recon.reconstruct import ReconstructConfig

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}")
    resolved = ReconstructConfig(preset=preset).resolved()
    return {"preset": preset, "max_frames": min(resolved.max_frames, limits.max_frames),
            "iterations": min(resolved.iterations, limits.max_iterations),
            "resolution": min(resolved.resolution, limits.max_resolution)}


def _sample(work_dir: Path) -> Path:
    from scenegrad.apps.reconstruct import sample_clip

    return sample_clip(work_dir / "sample")


def _progress_html(fraction: float, text: str) -> str:
    import html

    return (f'<div class="sg-progress"><div style="background:#e5e7eb;border-radius:4px;height:10px">'
            f'<div style="width:{fraction * 100:.1f}%;background:#2563eb;height:10px;border-radius:4px"></div></div>'
            f'<p id="sg-status">{html.escape(text)}</p></div>')


def build_app(config: DemoConfig | None = None):
    """The Gradio ``Blocks`` of the demo (not launched; :func:`launch` does that)."""
    import gradio as gr

    config = config or DemoConfig()
    limits = config.limits
    work_dir = Path(config.work_dir or tempfile.mkdtemp(prefix="scenegrad-demo-"))
    sessions = Sessions(work_dir / "sessions")
    sample_lock = threading.Lock()

    def render_sample():
        with sample_lock:
            _sample(work_dir)

    # The sample clip takes seconds to render: start now, so the first run that picks it need not wait.
    threading.Thread(target=render_sample, daemon=True).start()

    def session_for(request: gr.Request | None):
        sessions.close_idle(config.session_idle_s)
        return sessions.get(getattr(request, "session_hash", None))

    # ----- reconstruct ------------------------------------------------------------------------------
    def reconstruct(upload, use_sample, preset, request: gr.Request):
        from scenegrad.apps.demo_jobs import ReconstructJob
        from scenegrad.apps.demo_uploads import prepare_input

        session = session_for(request)
        if session.job is not None and session.job.running:
            raise gr.Error("a job of this page is still running; cancel it first")
        try:
            folder = session.fresh("reconstruct")
            (folder / "input").mkdir()
            if upload:
                source = prepare_input(Path(upload), Path(upload).name, folder / "input", limits)
            elif use_sample:
                with sample_lock:  # waits for the start-up rendering
                    source = _sample(work_dir)
            else:
                raise ValueError("upload a video or a zip of images, or tick 'use the bundled sample clip'")
            options = _preset_options(preset, limits)
        except ValueError as error:
            shutil.rmtree(session.folder / "reconstruct", ignore_errors=True)
            raise gr.Error(str(error)) from None
        finally:
            _forget_upload(upload)
        job = ReconstructJob(source, folder / "run", **options).start()
        session.job = job
        try:
            while True:
                status = job.status()
                yield _progress_html(status.fraction, status.summary()), status.log_tail
                if status.state != "running":
                    break
                time.sleep(0.5)
            if status.state == "failed":
                raise gr.Error(f"reconstruction failed: {status.error}")
        finally:
            if job.running:
                job.cancel()

    def show_results(request: gr.Request):
        """The outputs of the session's finished run (a separate event: Gradio's 3D viewer stays empty
        when its value comes from a generator)."""
        import json

        from scenegrad.apps import demo_results as results

        session = sessions.get(getattr(request, "session_hash", None))
        run = session.folder / "reconstruct" / "run"
        job = session.job
        if job is None or getattr(job, "out", None) != run:
            raise gr.Error("no reconstruction in this session; run one first")
        if job.status().state != "done":  # cancelled (a failure stops before this event)
            return (gr.skip(),) * 8
        report = json.loads((run / "report.json").read_text())
        archive = run.parent / "scenegrad_reconstruction.zip"
        if not archive.is_file():
            results.zip_outputs(run, archive)
        return (str(run / "splats.ply"), str(run / "mesh.glb"), str(run / "renders" / "orbit.mp4"),
                results.depth_gallery(run), results.trajectory_figure(run), results.stage_figure(report),
                results.report_rows(report), str(archive))

    def cancel(request: gr.Request):
        session = sessions.get(getattr(request, "session_hash", None))
        if session.job is not None and session.job.running:
            session.job.cancel()
            gr.Info("cancelling")

    # ----- inverse rendering ------------------------------------------------------------------------
    def inverse(mesh_file, mode, photos, steps, size, views, fit_pose, fit_appearance, request: gr.Request):
        import torch

        from scenegrad.apps import demo_inverse as inv
        from scenegrad.apps.demo_uploads import check_size, copy_upload, safe_extract
        from scenegrad.datasets.meshes import load_mesh, save_mesh
        from scenegrad.datasets.synthetic import torus_mesh

        session = session_for(request)
        if session.job is not None and session.job.running:
            raise gr.Error("a job of this page is still running; cancel it first")
        steps, size, views = min(int(steps), MAX_FIT_STEPS), min(int(size), MAX_FIT_SIZE), min(int(views),
                                                                                            MAX_FIT_VIEWS)
        try:
            folder = session.fresh("inverse")
            if mesh_file:
                suffix = suffix_of(Path(mesh_file).name)
                if suffix not in MESH_EXTENSIONS:
                    raise ValueError(f"'{suffix or 'no extension'}' is not a mesh file; upload "
                                     f"{', '.join(MESH_EXTENSIONS)} (an OBJ's texture needs its .mtl: use GLB)")
                mesh = load_mesh(copy_upload(Path(mesh_file), folder, "mesh", suffix, limits))
            else:
                mesh = torus_mesh(rings=48, sides=24, texture_size=128)
            if mesh.num_faces > MAX_FIT_FACES:
                raise ValueError(f"the mesh has {mesh.num_faces} faces, over this demo's limit of {MAX_FIT_FACES}")
            mesh = mesh.to(dtype=torch.float32)
            if mode == "turntable":
                cams, targets, alphas = inv.turntable_targets(mesh, views=views, size=size)
            else:
                if not photos:
                    raise ValueError("upload a zip of photos with transforms.json or a COLMAP model, or pick turntable")
                if suffix_of(Path(photos).name) != ".zip":
                    raise ValueError("the photos must come as one .zip")
                check_size(Path(photos), limits)
                safe_extract(Path(photos), folder / "photos", limits)
                cams, targets = inv.photo_targets(folder / "photos", size=size, max_views=views)
                alphas = None
        except (ValueError, FileNotFoundError) as error:
            shutil.rmtree(session.folder / "inverse", ignore_errors=True)
            raise gr.Error(str(error).replace(str(session.folder), "<session>")) from None
        finally:
            _forget_upload(mesh_file)
            _forget_upload(photos)
        job = _FitJob()
        session.job = job
        fit_config = inv.FitConfig(steps=steps, every=max(1, steps // 20), fit_pose=bool(fit_pose),
                                   fit_appearance=bool(fit_appearance))
        try:
            start = time.monotonic()
            try:
                iterator = inv.fit(mesh, cams, targets, alphas, fit_config, turntable=mode == "turntable")
                for result in iterator:
                    text = (f"step {result.step}/{steps} · loss {result.losses[-1]:.5f} · "
                            f"{time.monotonic() - start:.0f} s")
                    if result.pose_error is not None:
                        text += f" · pose error {result.pose_error[0]:.2f}° / {result.pose_error[1] * 100:.2f}% of size"
                    if job.stop.is_set():
                        text += " · cancelled"
                    if job.stop.is_set() or result.step == steps:
                        save_mesh(result.mesh, folder / "fitted.glb", overwrite=True)
                    scale = max(1, 256 // result.preview.shape[0])  # small renders, shown larger (nearest)
                    yield text, inv.loss_figure(result.losses), result.preview.repeat(scale, 0).repeat(scale, 1)
                    if job.stop.is_set():
                        return
            except ValueError as error:
                raise gr.Error(str(error)) from None
        finally:
            job.running = False

    def show_fitted(request: gr.Request):
        glb = sessions.get(getattr(request, "session_hash", None)).folder / "inverse" / "fitted.glb"
        return str(glb) if glb.is_file() else None

    def close_session(request: gr.Request):
        sessions.close(getattr(request, "session_hash", None))

    with gr.Blocks(title="scenegrad demo", analytics_enabled=False, delete_cache=(600, 3600)) as app:
        gr.Markdown("# scenegrad demo\nDifferentiable rendering and 3D reconstruction, on this machine's CPU.")
        with gr.Tab("Reconstruct"):
            with gr.Row():
                with gr.Column(scale=1):
                    upload = gr.File(label=f"a video ({', '.join(VIDEO_EXTENSIONS)}) or a zip of images, at most "
                                     f"{limits.max_upload_mb:g} MB", type="filepath", elem_id="sg-upload")
                    use_sample = gr.Checkbox(label="use the bundled sample clip (a walk through a synthetic room)",
                                             elem_id="sg-sample")
                    preset = gr.Radio(list(PRESETS), value="fast", label="preset (tiny: seconds, fast: minutes)",
                                      elem_id="sg-preset")
                    gr.Markdown(f"At most {limits.max_frames} frames of {limits.max_resolution} pixels and "
                                f"{limits.max_iterations} training iterations per run; one run at a time for "
                                "everyone, others wait in a queue.")
                    with gr.Row():
                        run_button = gr.Button("Reconstruct", variant="primary", elem_id="sg-run")
                        cancel_button = gr.Button("Cancel", variant="stop", elem_id="sg-cancel")
                with gr.Column(scale=2):
                    progress = gr.HTML(_progress_html(0.0, "idle"), elem_id="sg-progress")
                    log = gr.Textbox(label="log", lines=8, max_lines=8, autoscroll=True, elem_id="sg-log")
            with gr.Row():
                splats_view = gr.Model3D(label="Gaussian splats (splats.ply)", elem_id="sg-splats", height=360)
                mesh_view = gr.Model3D(label="mesh (mesh.glb)", elem_id="sg-mesh", height=360)
            with gr.Row():
                video = gr.Video(label="render (renders/orbit.mp4)", elem_id="sg-video", height=360)
                trajectory = gr.Plot(label="cameras", elem_id="sg-trajectory")
            depth = gr.Gallery(label="depth maps", columns=6, height=220, elem_id="sg-depth")
            with gr.Row():
                stages = gr.Plot(label="report", elem_id="sg-stages")
                table = gr.Dataframe(headers=["stage", "seconds", "peak MB", "details"], label="report.json",
                                     interactive=False, elem_id="sg-report", wrap=True)
            download = gr.File(label="all outputs (zip)", elem_id="sg-download", interactive=False)
            run_button.click(
                reconstruct, [upload, use_sample, preset], [progress, log], api_name="reconstruct",
                concurrency_id="heavy", concurrency_limit=1, show_progress="minimal",
            ).success(show_results, None, [splats_view, mesh_view, video, depth, trajectory, stages, table, download],
                      api_name="results", concurrency_limit=None)
            cancel_button.click(cancel, None, None, api_name="cancel", concurrency_limit=None, queue=False)
        with gr.Tab("Inverse rendering"):
            with gr.Row():
                with gr.Column(scale=1):
                    mesh_file = gr.File(label="mesh (OBJ, GLB, PLY; empty: the built-in torus)",
                                        type="filepath", elem_id="sg-fit-mesh")
                    mode = gr.Radio(["turntable", "photos"], value="turntable", elem_id="sg-fit-mode",
                                    label="targets: a turntable of the mesh itself, or photos with known cameras")
                    photos = gr.File(label="photos: zip with transforms.json or COLMAP sparse/0 + images",
                                     type="filepath", elem_id="sg-fit-photos")
                    steps = gr.Slider(10, MAX_FIT_STEPS, value=100, step=10, label="steps")
                    size = gr.Slider(32, MAX_FIT_SIZE, value=96, step=16, label="image size (longest side)")
                    views = gr.Slider(1, MAX_FIT_VIEWS, value=6, step=1, label="views")
                    fit_pose = gr.Checkbox(value=True, label="fit the pose")
                    fit_appearance = gr.Checkbox(value=True, label="fit the texture / colours")
                    with gr.Row():
                        fit_button = gr.Button("Fit", variant="primary", elem_id="sg-fit-run")
                        fit_cancel = gr.Button("Cancel", variant="stop", elem_id="sg-fit-cancel")
                with gr.Column(scale=2):
                    fit_status = gr.Markdown("idle", elem_id="sg-fit-status")
                    with gr.Row():
                        loss_plot = gr.Plot(label="loss", elem_id="sg-fit-loss")
                        preview = gr.Image(label="current render | target (first view)", elem_id="sg-fit-preview")
                    fitted = gr.Model3D(label="fitted mesh (GLB)", elem_id="sg-fit-mesh-view", height=320)
            fit_button.click(inverse, [mesh_file, mode, photos, steps, size, views, fit_pose, fit_appearance],
                             [fit_status, loss_plot, preview], api_name="inverse", concurrency_id="heavy",
                             concurrency_limit=1, show_progress="minimal",
                             ).success(show_fitted, None, fitted, api_name="fitted", concurrency_limit=None)
            fit_cancel.click(cancel, None, None, api_name="cancel_fit", concurrency_limit=None, queue=False)
        app.unload(close_session)
    app.scenegrad_sessions = sessions  # for launch() and tests
    app.scenegrad_work_dir = work_dir
    return app


def launch(config: DemoConfig | None = None, block: bool = True):
    """Build and serve the app on ``config.host:config.port`` (never shared); returns the app.

    ``block=False`` returns once the server is up (the caller closes it with ``app.close()``)."""
    config = config or DemoConfig()
    owned = config.work_dir is None
    work_dir = Path(config.work_dir or tempfile.mkdtemp(prefix="scenegrad-demo-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GRADIO_TEMP_DIR", str(work_dir / "gradio"))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gradio as gr

    app = build_app(dataclasses.replace(config, work_dir=work_dir))

    def cleanup():
        app.scenegrad_sessions.close_all()
        if owned:
            shutil.rmtree(work_dir, ignore_errors=True)

    atexit.register(cleanup)
    system = ["ui-sans-serif", "system-ui", "sans-serif"]  # no web fonts: the page fetches nothing
    theme = gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"])
    # Gradio serves result files from its cache once it has copied them there, which it does for files
    # under the temporary folder or the working directory; only a work_dir elsewhere must be allowed
    # (that also lets Gradio serve any file in it to whoever knows the random session folder's name).
    resolved = work_dir.resolve()
    usual = (Path(tempfile.gettempdir()).resolve(), Path.cwd().resolve())
    allowed = [] if any(resolved == p or p in resolved.parents for p in usual) else [str(work_dir)]
    app.queue(default_concurrency_limit=1, max_size=config.queue_size)
    app.launch(server_name=config.host, server_port=config.port, share=False, inbrowser=False,
               max_file_size=f"{int(config.limits.max_upload_mb * 1e6)}b", allowed_paths=allowed,
               show_error=True, ssr_mode=False, prevent_thread_lock=not block, theme=theme,
               footer_links=[], run_history=False)
    return app
