"""scenegrad reconstruct, end to end on a short synthetic clip (tiny preset): every output exists, loads
in its format's reader and agrees with the generator; resume, overwrite protection, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from scenegrad.datasets.generate import synthetic_scene
from scenegrad.datasets.video import write_video
from scenegrad.recon.reconstruct import OUTPUTS, ReconstructConfig, run

FRAMES = 12


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    scene = synthetic_scene("room", path="walk", count=FRAMES, size=(128, 96))
    path = write_video(folder / "walk.mp4", (f.image() for f in scene.frames), fps=10)
    return path, scene


@pytest.fixture(scope="module")
def result(clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    report = run(clip[0], out, ReconstructConfig(preset="tiny", device="cpu", progress=False))
    return out, report


def test_every_output_exists_and_loads(result, clip):
    from scenegrad.datasets.colmap import load_colmap
    from scenegrad.datasets.meshes import load_mesh
    from scenegrad.datasets.splats import load_splats_ply
    from scenegrad.datasets.transforms import load_transforms
    from scenegrad.datasets.video import probe_video

    out, report = result
    assert set(report["stages"]) == {"frames", "poses", "splats", "mesh", "render"}
    assert all(stage["done"] for stage in report["stages"].values())
    assert json.loads((out / "report.json").read_text())["stages"].keys() == report["stages"].keys()
    assert len(list((out / "images").glob("frame_*.png"))) == FRAMES
    assert len(list((out / "depth").glob("*.npy"))) == FRAMES
    scene = load_colmap(out / "sparse" / "0")
    assert len(scene.frames) == FRAMES and scene.points is not None and len(scene.points) > 100
    ns = load_transforms(out)
    torch.testing.assert_close(ns.cameras.R.double(), scene.cameras.R.double(), atol=1e-5, rtol=0)
    splats = load_splats_ply(out / "splats.ply")
    assert splats.means.shape[0] == report["stages"]["splats"]["gaussians"]
    for name in ("mesh.ply", "mesh.glb"):
        mesh = load_mesh(out / name)
        assert mesh.faces.shape[0] > 500 and mesh.vertex_colors is not None
    assert probe_video(out / "renders" / "orbit.mp4").frame_count == report["stages"]["render"]["frames"]
    assert report["stages"]["splats"]["heldout_psnr"] > 20.0


def test_report_html_shows_the_run(result):
    out, report = result
    page = (out / "report.html").read_text()
    assert page.count("<svg") == 1 and page.count("<polygon") == FRAMES  # one frustum per posed camera
    images = page.count("data:image/jpeg;base64,")
    assert images >= 6 + 6 + 1, images  # frames, their depth, render frames
    assert f"{report['stages']['splats']['heldout_psnr']:.2f} dB" in page
    for stage in report["stages"]:
        assert f"<td>{stage}</td>" in page


def test_trajectory_svg_places_cameras_in_the_plane_of_motion():
    from scenegrad.datasets.synthetic import orbit_cameras
    from scenegrad.recon.report_html import trajectory_svg

    cams = orbit_cameras(8, 3.0, 64, 48, 50.0)
    svg = trajectory_svg(cams.R.numpy(), cams.t.numpy(), size=200)
    xy = np.array([[float(v) for v in pair.split(",")] for pair in
                   svg.split('points="')[1].split('"')[0].split()])
    # the orbit's centres form a circle in the picture: equal distances from their mean
    r = np.linalg.norm(xy - xy.mean(0), axis=1)
    assert r.std() < 0.02 * r.mean() and r.mean() > 50


def test_spiral_circles_the_mean_camera_and_looks_at_the_focus():
    from scenegrad.datasets.synthetic import look_at
    from scenegrad.recon.reconstruct import spiral_cameras
    from scenegrad.render.cameras import Cameras

    # forward-facing captures: cameras spread on the plane z = 0, all looking down +Z (OpenCV world)
    g = torch.Generator().manual_seed(0)
    eyes = torch.cat([torch.rand(20, 2, generator=g, dtype=torch.float64) - 0.5, torch.zeros(20, 1)], 1)
    R, t = look_at(eyes, eyes + torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    cams = Cameras(fx=50.0, fy=50.0, cx=32.0, cy=24.0, R=R, t=t, width=64, height=48)
    points = torch.randn(500, 3, generator=g, dtype=torch.float64) * 0.3 + torch.tensor([0.0, 0.0, 3.0])
    spiral = spiral_cameras(cams, points, 40)
    centres = spiral.centers.double()
    assert len(spiral) == 40
    assert centres[:, :2].mean(0).abs().max() < 0.05  # around the mean camera
    assert 0.3 < centres[:, 0].abs().max() < 0.6 and 0.3 < centres[:, 1].abs().max() < 0.6
    focus = torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64) + eyes.mean(0)
    to_focus = torch.nn.functional.normalize(focus - centres, dim=1)
    assert torch.allclose(spiral.R.double()[:, 2, :], to_focus, atol=0.05)  # every view looks at the focus
    assert (spiral.R.double()[:, 1, 1] > 0.9).all()  # image down stays world +Y


def test_pycolmap_reads_the_model(result):
    pycolmap = pytest.importorskip("pycolmap", reason="pycolmap is not installed")
    out, _ = result
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert model.num_reg_images() == FRAMES


def test_poses_agree_with_the_generator(result, clip):
    from scenegrad.datasets.colmap import load_colmap
    from scenegrad.recon.evaluate import pose_errors

    out, _ = result
    truth = clip[1].cameras
    got = load_colmap(out / "sparse" / "0").cameras
    errors = pose_errors(got, truth)
    print(errors)
    assert errors.ate_rel < 0.05 and errors.rot_mean_deg < 3.0


def test_resume_redoes_only_missing_stages(result, clip, tmp_path):
    out, report = result
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    data = json.loads((copy / "report.json").read_text())
    del data["stages"]["mesh"], data["stages"]["render"]
    (copy / "report.json").write_text(json.dumps(data))
    (copy / "mesh.ply").unlink()
    again = run(clip[0], copy, ReconstructConfig(preset="tiny", progress=False, resume=True))
    assert (copy / "mesh.ply").is_file()
    for stage in ("frames", "poses", "splats"):
        assert again["stages"][stage]["seconds"] == report["stages"][stage]["seconds"]
    with pytest.raises(FileExistsError, match="--resume"):
        run(clip[0], copy, ReconstructConfig(preset="tiny", progress=False))
    (copy / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="at least 3"):  # overwrite clears our outputs, then the input fails
        folder = tmp_path / "two"
        folder.mkdir()
        for i in range(2):
            write_image = __import__("imageio").v2.imwrite
            write_image(folder / f"{i}.png", np.full((8, 8, 3), 100, np.uint8))
        run(folder, copy, ReconstructConfig(preset="tiny", progress=False, overwrite=True))
    assert (copy / "notes.txt").read_text() == "mine"  # not ours: left alone
    assert not any((copy / name).exists() for name in OUTPUTS if name != "report.json")


def test_bad_inputs_are_named(tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    with pytest.raises(ValueError, match="fake.mp4"):
        run(fake, tmp_path / "out1", ReconstructConfig(preset="tiny", progress=False))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a video"):
        run(text, tmp_path / "out2", ReconstructConfig(preset="tiny", progress=False))
    with pytest.raises(FileNotFoundError):
        run(tmp_path / "missing.mp4", tmp_path / "out3", ReconstructConfig(preset="tiny", progress=False))
    black = tmp_path / "black"
    black.mkdir()
    for i in range(4):
        __import__("imageio").v2.imwrite(black / f"{i}.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="black"):
        run(black, tmp_path / "out4", ReconstructConfig(preset="tiny", progress=False))
    with pytest.raises(ValueError, match="must not be"):
        run(black, black / "out", ReconstructConfig(preset="tiny", progress=False))
    import cv2

    from scenegrad.datasets.generate import synthetic_scene

    blurred = tmp_path / "blurred"
    blurred.mkdir()
    for i, frame in enumerate(synthetic_scene("room", path="walk", count=4, size=(160, 120)).frames):
        image = (frame.image()[..., :3].numpy() * 255).astype(np.uint8)
        __import__("imageio").v2.imwrite(blurred / f"{i}.png", cv2.GaussianBlur(image, (0, 0), 6))
    with pytest.raises(ValueError, match="blurred"):
        run(blurred, tmp_path / "out5", ReconstructConfig(preset="tiny", progress=False))


def test_cli_reports_errors(tmp_path, capsys):
    from scenegrad.apps.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["reconstruct", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o"), "--preset", "tiny"])
    assert exit_info.value.code == 2
    assert "missing.mp4" in capsys.readouterr().err


def test_export_and_render(result, tmp_path):
    from scenegrad.apps.cli import main
    from scenegrad.apps.export import export
    from scenegrad.datasets.colmap import load_colmap
    from scenegrad.datasets.meshes import load_mesh
    from scenegrad.datasets.splats import load_splat, load_splats_ply
    from scenegrad.datasets.transforms import load_transforms
    from scenegrad.datasets.video import probe_video

    out, _ = result
    colmap = export(out, "colmap", tmp_path / "colmap")
    assert (colmap / "sparse" / "0" / "images.txt").is_file()
    assert len(load_colmap(colmap / "sparse" / "0").frames) == FRAMES
    ns = export(out, "nerfstudio", tmp_path / "ns")
    assert len(load_transforms(ns).frames) == FRAMES
    splats = load_splats_ply(out / "splats.ply")
    assert load_splat(export(out, "splat", tmp_path / "scene.splat")).means.shape == splats.means.shape
    assert load_splats_ply(export(out, "ply", tmp_path / "s.ply")).means.shape == splats.means.shape
    assert load_mesh(export(out, "glb", tmp_path / "m.glb")).faces.shape[0] > 500
    with pytest.raises(FileExistsError, match="--overwrite"):
        export(out, "glb", tmp_path / "m.glb")
    main(["render", str(out), "--path", "dataset", "--out", str(tmp_path / "d.mp4")])
    assert probe_video(tmp_path / "d.mp4").frame_count == FRAMES
    main(["render", str(out), "--frames", "6", "--out", str(tmp_path / "o.mp4"), "--device", "cpu"])
    assert probe_video(tmp_path / "o.mp4").frame_count == 6
    main(["render", str(out), "--path", "spiral", "--frames", "5", "--out", str(tmp_path / "s.mp4")])
    assert probe_video(tmp_path / "s.mp4").frame_count == 5
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path / "nothing"), "--format", "ply"])


def test_sfm_pose_path(tmp_path):
    """``--poses sfm`` on 8 photos of a noise-textured torus (SIFT-friendly): every stage runs on the
    cameras of scenegrad's structure from motion, and they agree with the generator's."""
    import dataclasses

    import torch.nn.functional as F

    from scenegrad.datasets.colmap import load_colmap
    from scenegrad.datasets.generate import synthetic_scene
    from scenegrad.datasets.synthetic import torus_mesh
    from scenegrad.recon.evaluate import pose_errors

    g = torch.Generator().manual_seed(0)
    noise = torch.rand(1, 3, 96, 384, generator=g)
    texture = F.interpolate(noise, size=(768, 3072), mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
    mesh = dataclasses.replace(torus_mesh(), texture=texture.clamp(0, 1).contiguous())
    scene = synthetic_scene(mesh, path="arc", count=8, size=(480, 360), points=0, shading="none")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, frame in enumerate(scene.frames):
        image = (frame.image()[..., :3].numpy() * 255).astype(np.uint8)
        __import__("imageio").v2.imwrite(photos / f"{i:02d}.png", image)
    out = tmp_path / "out"
    report = run(photos, out, ReconstructConfig(preset="tiny", poses="sfm", resolution=480, iterations=20,
                                                progress=False))
    assert report["stages"]["poses"]["method"] == "sfm" and report["stages"]["poses"]["frames_posed"] == 8
    assert report["stages"]["frames"]["sources"] == [f"{i:02d}.png" for i in range(8)]
    got = load_colmap(out / "sparse" / "0")
    errors = pose_errors(got.cameras, scene.cameras)
    assert errors.rot_mean_deg < 0.5 and errors.ate_rel < 0.02, errors
    assert (out / "mesh.glb").is_file() and (out / "report.html").is_file()
