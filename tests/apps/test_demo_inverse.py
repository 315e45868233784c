"""The demo's inverse-rendering fit (no Gradio needed): a turntable of the torus brings the moved pose
and the grey texture back; photos with known cameras (a nerfstudio folder) are read and fitted."""

from __future__ import annotations

import imageio.v2 as imageio
import pytest
import torch

from scenegrad.apps.demo_inverse import FitConfig, fit, loss_figure, photo_targets, turntable_targets
from scenegrad.datasets.synthetic import torus_mesh


@pytest.fixture(scope="module")
def torus():
    return torus_mesh(rings=24, sides=12, texture_size=32)


def test_turntable_fit_recovers_pose_and_texture(torus, one_thread):
    cams, targets, alphas = turntable_targets(torus, views=4, size=48)
    steps = list(fit(torus, cams, targets, alphas, FitConfig(steps=40, every=20, lr_appearance=0.1)))
    assert [s.step for s in steps] == [20, 40]
    first, last = steps[0], steps[-1]
    assert last.losses[-1] < 0.2 * last.losses[0]
    assert last.pose_error[0] < first.pose_error[0] and last.pose_error[0] < 10.0  # started at 10 degrees
    assert last.preview.shape == (48, 96, 3) and last.preview.dtype.name == "uint8"
    assert last.mesh.texture.shape == torus.texture.shape and not last.mesh.texture.requires_grad
    assert loss_figure(last.losses) is not None
    with pytest.raises(ValueError, match="nothing to fit"):
        next(fit(torus, cams, targets, alphas, FitConfig(fit_pose=False, fit_appearance=False)))


def test_photos_with_a_transforms_json(torus, tmp_path, one_thread):
    from scenegrad.datasets.scene import Frame, Scene
    from scenegrad.datasets.transforms import save_transforms

    cams, targets, _ = turntable_targets(torus, views=3, size=40)
    (tmp_path / "images").mkdir()
    frames = []
    for i, image in enumerate(targets):
        path = tmp_path / "images" / f"view{i}.png"
        imageio.imwrite(path, (image * 255).round().byte().numpy())
        frames.append(Frame(name=path.name, image_path=path))
    save_transforms(Scene(frames=frames, cameras=cams), tmp_path / "scan", image_dir="../images")
    got_cams, images = photo_targets(tmp_path, size=20)
    assert images.shape == (3, 20, 20, 3) and int(got_cams.width[0]) == 20
    torch.testing.assert_close(got_cams.fx, cams.fx / 2, rtol=1e-5, atol=1e-5)
    steps = list(fit(torus, got_cams, images, None, FitConfig(steps=6, every=3)))
    assert steps[-1].pose_error is None and steps[-1].losses[-1] < steps[-1].losses[0]
    with pytest.raises(ValueError, match="no cameras found"):
        photo_targets(tmp_path / "images")
