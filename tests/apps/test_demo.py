"""``scenegrad demo`` end to end: the app runs in a child process on 127.0.0.1 and is driven by
``gradio_client`` (bad uploads, the sample clip with the tiny preset and every output read back,
cancel, an inverse-rendering fit) and by headless Chromium through Playwright (pick the sample, wait
for the result, the 3D viewers and the video are on the page, a screenshot)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="gradio is not installed (pip install 'scenegrad[app]')")
pytest.importorskip("gradio_client", reason="gradio_client is not installed (pip install 'scenegrad[app]')")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MAX_UPLOAD_MB = 2
#: Small enough to keep a run of the sample near 20 s on two cores.
FRAMES, ITERATIONS, RESOLUTION = 5, 40, 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_TEMP_DIR": str(work / "gradio")}
    process = subprocess.Popen(
        [sys.executable, "-m", "scenegrad.apps", "demo", "--port", str(port), "--work-dir", str(work),
         "--max-frames", str(FRAMES), "--max-iterations", str(ITERATIONS),
         "--max-resolution", str(RESOLUTION), "--max-upload-mb", str(MAX_UPLOAD_MB)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while not any("Running on local URL" in line for line in lines):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("the demo did not start:\n" + "".join(lines))
        time.sleep(0.2)
    yield url, work
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    from gradio_client import Client

    return Client(server[0], verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def test_bad_uploads_give_a_clear_message_and_leave_nothing(server, client, tmp_path):
    import httpx
    from gradio_client import handle_file

    url, work = server
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("ok.png", b"x")
        zf.writestr("../evil.png", b"y")
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(int(MAX_UPLOAD_MB * 1e6) + 1000))
    for path, message in ((text, "'.txt' files are not accepted"), (evil, "climbs out of its folder")):
        with pytest.raises(Exception, match=message):
            client.predict(handle_file(str(path)), False, "tiny", api_name="/reconstruct")
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # the client checks first
        client.predict(handle_file(str(big)), False, "tiny", api_name="/reconstruct")
    with open(big, "rb") as f:  # and so does the server
        response = httpx.post(url + "gradio_api/upload", files={"files": ("big.mp4", f)}, timeout=30)
    assert response.status_code == 413, response.text
    with pytest.raises(Exception, match="upload a video or a zip of images"):
        client.predict(None, False, "tiny", api_name="/reconstruct")
    time.sleep(0.5)  # Gradio moves an upload into its cache after answering
    names = {"notes.txt", "evil.zip", "big.mp4", "evil.png", "ok.png", "upload.zip", "input.txt", "images_unzipped"}
    assert [p for p in work.rglob("*") if p.name in names] == []
    assert not (work.parent / "evil.png").exists()
    assert [p for p in (work / "sessions").rglob("*") if p.is_file()] == []


def test_reconstruct_the_sample_and_read_every_output(server, client):
    from scenegrad.datasets.meshes import load_mesh
    from scenegrad.datasets.splats import load_splats_ply
    from scenegrad.datasets.video import probe_video

    start = time.perf_counter()
    job = client.submit(None, True, "tiny", api_name="/reconstruct")
    progress, log = job.result(timeout=240)
    seconds = time.perf_counter() - start
    print(f"\nsample clip, tiny preset, {FRAMES} frames, {ITERATIONS} iterations: {seconds:.1f} s")
    updates = job.outputs()
    assert len(updates) >= 3 and any("%" in update[0] for update in updates[:-1]), updates
    assert "done in" in progress and "<session>" in log and str(server[1]) not in log
    splats, mesh, video, depth, _trajectory, _stages, table, archive = client.predict(api_name="/results")
    assert load_splats_ply(splats).means.shape[0] > 100
    assert load_mesh(mesh).faces.shape[0] > 100
    assert probe_video(video).frame_count > 0
    assert len(depth) == FRAMES and all(Path(item["image"]).is_file() for item in depth)
    assert [row[0] for row in table["data"]] == ["frames", "poses", "splats", "mesh", "render"]
    names = set(zipfile.ZipFile(archive).namelist())
    assert {"splats.ply", "mesh.glb", "renders/orbit.mp4", "report.json", "transforms.json"} <= names
    assert not any(name.startswith("splat/") for name in names)


def test_cancel_stops_the_job(server, client):
    job = client.submit(None, True, "tiny", api_name="/reconstruct")
    deadline = time.monotonic() + 60
    while not any("poses" in update[0] for update in job.outputs()):
        assert time.monotonic() < deadline, job.outputs()
        time.sleep(0.2)
    start = time.monotonic()
    client.predict(api_name="/cancel")
    progress, _ = job.result(timeout=30)
    assert "cancelled" in progress and time.monotonic() - start < 10
    children = subprocess.run(["pgrep", "-f", f"{server[1]}/sessions"], capture_output=True, text=True)
    assert children.stdout == "", "the reconstruct process outlived its cancel"


def test_inverse_rendering_turntable(client):
    from scenegrad.datasets.meshes import load_mesh

    job = client.submit(None, "turntable", None, 10, 32, 3, True, True, api_name="/inverse")
    status, _loss, preview = job.result(timeout=120)
    assert status.startswith("step 10/10") and "pose error" in status
    losses = [float(update[0].split("loss ")[1].split(" ")[0]) for update in job.outputs()]
    assert len(losses) >= 2 and losses[-1] < losses[0]
    assert Path(preview).is_file()
    assert load_mesh(client.predict(api_name="/fitted")).faces.shape[0] > 100
    with pytest.raises(Exception, match="not a mesh file"):
        from gradio_client import handle_file

        client.predict(handle_file(preview), "turntable", None, 10, 32, 3, True, True, api_name="/inverse")


def test_browser_reconstructs_the_sample(server, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    url, _ = server
    shot = tmp_path / "demo.png"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url, wait_until="load")
            page.wait_for_selector("#sg-run", timeout=60_000)
            page.locator("#sg-sample input[type=checkbox]").check()
            page.locator("#sg-preset").get_by_label("tiny").check()
            page.locator("#sg-run").click()
            page.wait_for_selector("#sg-video video", timeout=180_000)
            page.wait_for_selector("#sg-mesh canvas", state="attached", timeout=60_000)
            page.wait_for_selector("#sg-splats canvas", state="attached", timeout=60_000)
            assert "done in" in page.locator("#sg-status").inner_text()
            assert page.locator("#sg-depth img").count() == FRAMES
            assert page.locator("#sg-download a").count() >= 1
            page.wait_for_timeout(1000)
            page.screenshot(path=str(shot), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("SCENEGRAD_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "demo.png")
    print(f"\nscreenshot: {shot}")
