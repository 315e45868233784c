"""Video probing, decoding, frame selection and writing: synthetic videos written with write_video
(panning textures, blurred frames, a static then fast stretch, rotation metadata set with the bundled
ffmpeg), damaged files, and the real phone video of ../shared/data/video/apple."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from scenegrad.datasets.video import choose_frames, iter_frames, probe_video, select_frames, write_video

from ..conftest import SHARED_DATA

APPLE = SHARED_DATA / "video" / "apple" / "apple.mp4"
H, W = 96, 128


def ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True, stdin=subprocess.DEVNULL)


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth colour texture with detail at several scales (uint8 [height, width, 3])."""
    rng = np.random.default_rng(seed)
    out = np.zeros((height, width, 3), np.float32)
    for sigma, weight in ((12, 1.0), (4, 0.6), (1.5, 0.4)):
        noise = cv2.GaussianBlur(rng.standard_normal((height, width, 3)).astype(np.float32), (0, 0), sigma)
        out += weight * noise / noise.std()
    out = (out - out.min()) / (out.max() - out.min())
    return (out * 255).astype(np.uint8)


def pan(shifts: list[int], seed: int = 0) -> list[np.ndarray]:
    """Frames of a window sliding over a texture by the given horizontal offsets."""
    big = texture(H, W + max(shifts) + 1, seed)
    return [big[:, s:s + W].copy() for s in shifts]


def blur(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), 2.5)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    out = {}
    # 40 frames panning 3 px per frame; every odd frame blurred.
    frames = [blur(f) if i % 2 else f for i, f in enumerate(pan([3 * i for i in range(40)]))]
    out["blur"] = write_video(d / "blur.mp4", frames, fps=20)
    # 30 frames standing still, then 30 frames panning 4 px per frame.
    out["static_fast"] = write_video(d / "static_fast.mp4", pan([0] * 30 + [4 * i for i in range(1, 31)], 1), fps=30)
    # 12 plain frames.
    out["plain"] = write_video(d / "plain.mp4", pan([2 * i for i in range(12)], 2), fps=12)
    return out


# ----------------------------------------------------------------------------------------------
# Writing, probing, decoding
# ----------------------------------------------------------------------------------------------


def test_write_probe_decode_round_trip(tmp_path):
    frames = pan([2 * i for i in range(12)], 3)
    tensors = [torch.from_numpy(f).float() / 255 for f in frames]  # float tensors in [0, 1]
    path = write_video(tmp_path / "a.mp4", iter(tensors), fps=12)
    info = probe_video(path)
    assert (info.width, info.height, info.rotation, info.fps, info.codec) == (W, H, 0, 12.0, "h264")
    assert (info.frame_count, info.frame_count_method) == (12, "packets")
    assert probe_video(path, count="decode").frame_count == 12
    assert info.duration == pytest.approx(1.0, abs=0.05)
    decoded = list(iter_frames(path))
    assert [f.index for f in decoded] == list(range(12))
    assert [f.timestamp for f in decoded] == pytest.approx([i / 12 for i in range(12)], abs=1e-3)
    for f, original in zip(decoded, frames, strict=True):
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
        # H.264 at crf 18: luma is near-exact; colour loses detail to 4:2:0 chroma subsampling.
        luma = cv2.cvtColor(f.image, cv2.COLOR_RGB2GRAY).astype(int) - cv2.cvtColor(original, cv2.COLOR_RGB2GRAY)
        assert np.abs(luma).mean() < 2.5 and np.abs(f.image.astype(int) - original).mean() < 6


def test_write_video_pads_odd_sizes_and_takes_grey_and_rgba(tmp_path):
    frame = texture(47, 63)
    path = write_video(tmp_path / "odd.mp4", [frame, frame], fps=5)
    assert (probe_video(path).width, probe_video(path).height) == (64, 48)
    image = next(iter_frames(path)).image
    assert np.abs(image[:47, :63].astype(int) - frame).mean() < 6
    assert np.abs(image[:47, 63].astype(int) - frame[:, 62]).mean() < 10  # the padding repeats the last column
    grey = write_video(tmp_path / "grey.mp4", [frame[..., 0], frame[..., :1]], fps=5)
    assert probe_video(grey).frame_count == 2
    rgba = np.concatenate([frame, np.zeros_like(frame[..., :1])], -1)
    assert probe_video(write_video(tmp_path / "rgba.mp4", [rgba], fps=5)).frame_count == 1


def test_write_video_bad_input(tmp_path):
    frame = texture(H, W)
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [], fps=10)
    assert not (tmp_path / "empty.mp4").exists()
    with pytest.raises(ValueError, match="frame 1 is 64x48, the video is 128x96"):
        write_video(tmp_path / "mixed.mp4", [frame, frame[:48, :64]], fps=10)
    assert not (tmp_path / "mixed.mp4").exists()  # a failed write leaves no file behind
    with pytest.raises(ValueError, match=r"shape \[96, 128, 2\]"):
        write_video(tmp_path / "bad.mp4", [frame[..., :2]], fps=10)
    with pytest.raises(ValueError, match="dtype int64"):
        write_video(tmp_path / "bad.mp4", [frame.astype(np.int64)], fps=10)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "bad.mp4", [frame], fps=0)
    with pytest.raises(ValueError, match="'.gif'"):
        write_video(tmp_path / "bad.gif", [frame], fps=10)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_video(tmp_path / "nope" / "a.mp4", [frame], fps=10)
    path = write_video(tmp_path / "once.mp4", [frame], fps=10)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_video(path, [frame], fps=10)
    write_video(path, [frame, frame], fps=10, overwrite=True)
    assert probe_video(path).frame_count == 2


def test_iter_frames_indices_and_sizes(videos):
    path = videos["plain"]
    assert [f.index for f in iter_frames(path, indices=[1, 5, 6])] == [1, 5, 6]
    stride = list(iter_frames(path, indices=range(0, 10**9, 4)))
    assert [f.index for f in stride] == [0, 4, 8]
    assert [f.timestamp for f in stride] == pytest.approx([0, 4 / 12, 8 / 12], abs=1e-3)
    full = {f.index: f.image for f in iter_frames(path)}
    for f in iter_frames(path, indices=[3, 7]):
        np.testing.assert_array_equal(f.image, full[f.index])  # the same pixels as a full decode
    assert next(iter_frames(path, max_side=64)).image.shape == (48, 64, 3)
    assert next(iter_frames(path, max_side=1000)).image.shape == (H, W, 3)  # never enlarged
    assert next(iter_frames(path, size=(50, 30))).image.shape == (30, 50, 3)
    with pytest.raises(ValueError, match="either max_side or size"):
        iter_frames(path, max_side=64, size=(50, 30))
    for bad in ([3, 1], [-1, 2], range(5, 0, -1)):
        with pytest.raises(ValueError, match="indices must be increasing and non-negative"):
            list(iter_frames(path, indices=bad))
    with pytest.warns(UserWarning, match=r"frames \[40\] do not exist"):
        assert [f.index for f in iter_frames(path, indices=[2, 40])] == [2]
    # Stopping early ends ffmpeg (no hang, no warning).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for f in iter_frames(path):
            if f.index == 2:
                break


@pytest.mark.parametrize("display_rotation", [90, -90, 180])
def test_rotation_metadata_is_applied(tmp_path, display_rotation):
    stored = np.zeros((48, 64, 3), np.uint8)  # four coloured quadrants
    stored[:24, :32] = (255, 0, 0)
    stored[:24, 32:] = (0, 255, 0)
    stored[24:, :32] = (0, 0, 255)
    stored[24:, 32:] = (255, 255, 255)
    plain = write_video(tmp_path / "plain.mp4", [stored] * 3, fps=10)
    rotated = tmp_path / "rotated.mp4"
    # ffmpeg >= 6 sets the display matrix (counter-clockwise degrees) with -display_rotation; the old
    # `-metadata:s:v rotate=90` is silently ignored by the bundled ffmpeg 9.
    ffmpeg("-display_rotation", str(display_rotation), "-i", str(plain), "-c", "copy", str(rotated))
    info = probe_video(rotated)
    clockwise = (-display_rotation) % 360
    assert info.rotation == clockwise
    expected = np.rot90(stored, k=display_rotation // 90)  # np.rot90 turns counter-clockwise
    assert (info.width, info.height) == (expected.shape[1], expected.shape[0])
    assert info.stored_size == (64, 48)
    frames = list(iter_frames(rotated))
    assert len(frames) == 3
    assert frames[0].image.shape == expected.shape
    assert np.abs(frames[0].image.astype(int) - expected).mean() < 8
    scene = select_frames(rotated, 2, progress=False)
    assert scene.frames[0].image().shape == (*expected.shape[:2], 3)


# ----------------------------------------------------------------------------------------------
# Frame selection
# ----------------------------------------------------------------------------------------------


def test_select_frames_avoids_blurred_frames(videos):
    scene = select_frames(videos["blur"], 5, progress=False)
    indices = [f.metadata["index"] for f in scene.frames]
    assert len(indices) == 5 and indices == sorted(indices)
    assert all(i % 2 == 0 for i in indices), f"a blurred (odd) frame was chosen: {indices}"
    assert max(np.diff(indices)) <= 14  # still spread over the whole video
    selection = scene.metadata["selection"]
    sharp = selection.sharpness
    assert sharp[0::2].min() > 1.5 * sharp[1::2].max()  # the score separates blurred frames
    assert list(selection.selected) == indices
    assert [f.name for f in scene.frames] == [f"frame_{i:06d}" for i in indices]
    assert [f.timestamp for f in scene.frames] == pytest.approx([i / 20 for i in indices], abs=1e-3)
    image = scene.frames[0].image()
    assert image.shape == (H, W, 3) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert scene.cameras is None and scene.metadata["video"].frame_count == 40


def test_select_frames_follows_motion(videos):
    scene = select_frames(videos["static_fast"], 6, progress=False)
    indices = [f.metadata["index"] for f in scene.frames]
    assert len(indices) == 6 and indices == sorted(indices)
    motion = scene.metadata["selection"].motion
    assert motion[1:30].max() < 0.2 * motion[31:].min()  # static stretch vs 4 px per frame
    # A fixed stride would put 3 of 6 frames in the static half; motion-aware spacing puts at most one.
    assert sum(i < 30 for i in indices) <= 1, indices
    fast = [i for i in indices if i >= 30]
    assert max(np.diff(fast)) <= 2 * min(np.diff(fast)) + 2, fast  # evenly spread over the motion


def test_select_frames_count_and_options(videos):
    path = videos["plain"]
    everything = select_frames(path, 100, progress=False)
    assert [f.metadata["index"] for f in everything.frames] == list(range(12))
    strided = select_frames(path, 100, stride=5, progress=False)
    assert [f.metadata["index"] for f in strided.frames] == [0, 5, 10]
    small = select_frames(path, 3, max_side=64, analysis_side=32, progress=False)
    assert len(small) == 3 and small.frames[0].image().shape == (48, 64, 3)
    with pytest.raises(ValueError, match="count must be positive"):
        select_frames(path, 0)


def test_choose_frames():
    rng = np.random.default_rng(0)
    sharp, motion = rng.uniform(1, 2, 50), rng.uniform(0, 1, 50)
    for count in (1, 7, 49):
        chosen = choose_frames(sharp, motion, count)
        assert len(chosen) == count and np.all(np.diff(chosen) > 0)
    assert list(choose_frames(sharp, motion, 50)) == list(range(50))
    assert list(choose_frames(sharp[:5], motion[:5], 9)) == list(range(5))
    # No motion at all: uniform in time.
    assert set(np.diff(choose_frames(np.ones(40), np.zeros(40), 4))) <= {9, 10, 11}
    # One huge jump leaves segments empty: still exactly `count` frames.
    jump = np.zeros(20)
    jump[10] = 100.0
    chosen = choose_frames(np.ones(20), jump, 6)
    assert len(chosen) == 6 and len(set(chosen.tolist())) == 6


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp4: no such video file"):
        probe_video(tmp_path / "missing.mp4")
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        select_frames(tmp_path / "missing.mp4", 3)
    text = tmp_path / "text.mp4"
    text.write_text("this is not a video\n" * 20)
    for call in (probe_video, iter_frames, lambda p: select_frames(p, 2)):
        with pytest.raises(ValueError, match="text.mp4: not a video file"):
            call(text)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.mp4: empty file"):
        iter_frames(empty)
    with pytest.raises(ValueError, match="not a file"):
        probe_video(tmp_path)
    audio = tmp_path / "audio.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=d=0.3", str(audio))
    with pytest.raises(ValueError, match=r"audio.mp4: no video stream \(streams found: Audio: aac"):
        probe_video(audio)
    no_frames = tmp_path / "no_frames.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-frames:v", "0", "-c:v", "libx264", str(no_frames))
    with pytest.raises(ValueError, match="no_frames.mp4: no video stream"):
        iter_frames(no_frames)


def test_truncated_videos(tmp_path):
    # Unrelated frames, so that each takes a similar share of the file.
    path = write_video(tmp_path / "full.mp4", [texture(H, W, seed) for seed in range(30)], fps=10)
    data = path.read_bytes()
    # Index first (write_video's +faststart), then cut in the middle of the frames: intact frames decode.
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    with pytest.warns(UserWarning, match="cut.mp4: the video is damaged or truncated"):
        frames = list(iter_frames(cut))
    assert 5 <= len(frames) < 30
    assert [f.index for f in frames] == list(range(len(frames)))
    with pytest.warns(UserWarning, match="cut.mp4"):
        scene = select_frames(cut, 3, progress=False)
    assert len(scene) == 3
    # Cut right after the index: a video stream with no frame.
    mdat = data.index(b"mdat") + 4
    headless = tmp_path / "headless.mp4"
    headless.write_bytes(data[:mdat + 16])
    with pytest.raises(ValueError, match="headless.mp4: the video stream holds no frames"):
        probe_video(headless)
    with pytest.raises(ValueError, match="headless.mp4: no frame could be decoded"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        list(iter_frames(headless))
    # Index last (ffmpeg's default), cut before it: nothing can be read.
    late = tmp_path / "late.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-frames:v", "20", "-c:v", "libx264", str(late))
    late_data = late.read_bytes()
    assert late_data.index(b"moov") > late_data.index(b"mdat")
    late.write_bytes(late_data[: len(late_data) // 2])
    with pytest.raises(ValueError, match=r"late.mp4: incomplete video: its MP4 index \(moov atom\) is missing"):
        probe_video(late)


# ----------------------------------------------------------------------------------------------
# The real phone video
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def apple() -> Path:
    if not APPLE.is_file():
        pytest.skip(f"{APPLE} not found (the shared real-data folder is absent)")
    return APPLE


def test_apple_probe_and_decode(apple):
    info = probe_video(apple)
    assert (info.width, info.height, info.rotation, info.fps, info.codec) == (1296, 720, 0, 10.0, "h264")
    assert info.frame_count == 50 and info.duration == pytest.approx(5.0)
    assert probe_video(apple, count="decode").frame_count == 50
    frames = [(f.index, f.timestamp, f.image.shape) for f in iter_frames(apple, max_side=320)]
    assert [f[0] for f in frames] == list(range(50))
    assert [f[1] for f in frames] == pytest.approx([i / 10 for i in range(50)], abs=1e-6)
    assert {f[2] for f in frames} == {(178, 320, 3)}
    first = next(iter_frames(apple)).image
    assert first.shape == (720, 1296, 3) and 40 < first.mean() < 220


@pytest.mark.parametrize("count", [1, 8, 20])
def test_apple_select_frames(apple, count):
    scene = select_frames(apple, count, max_side=480, analysis_side=320, progress=False)
    assert len(scene) == count
    times = [f.timestamp for f in scene.frames]
    assert times == sorted(times) and len(set(times)) == count
    assert all(0 <= t < 5 for t in times)
    assert scene.frames[-1].image().shape == (267, 480, 3)
    assert scene.metadata["video"].frame_count == 50
    if count > 1:
        gaps = np.diff([f.metadata["index"] for f in scene.frames])
        assert gaps.max() <= 4 * 50 / count  # spread over the whole video
