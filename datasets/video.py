"""Video files: probe, stream-decode, choose frames for reconstruction, write MP4.

Decoding and encoding go through the ``ffmpeg`` binary that imageio-ffmpeg bundles (the environment
variable ``IMAGEIO_FFMPEG_EXE`` picks another; ffmpeg 5.1 or newer). Conventions:

- **Frames** are uint8 RGB ``[H, W, 3]`` (``[H, W]`` grey inside the frame selection) *as displayed*:
  rotation metadata (a phone's display matrix, or the legacy ``rotate`` tag) is applied by ffmpeg
  while decoding, and :class:`VideoInfo` reports that displayed ``width`` x ``height``.
- **Index**: the 0-based position of a frame among the decoded frames, in presentation order.
  Frames are passed through as decoded (``-fps_mode passthrough``): none is duplicated or dropped
  to force a constant rate, so a variable-frame-rate phone video keeps exactly its frames.
- **Timestamp**: seconds from the start of the video: the frame's presentation time stamp minus the
  container's start time, read from the decoder (ffmpeg's ``showinfo``); ``index / fps`` for a frame
  without one.
- **Resizing** (optional) only ever shrinks: ``max_side`` scales the longest side down to at most that
  many pixels, keeping the aspect ratio (``round``-ed sizes); ``size=(W, H)`` forces a size. ffmpeg
  resizes with area averaging (``scale=...:flags=area``).

Every function checks its input first and names the file in its errors: a missing file raises
``FileNotFoundError``; an empty file, a file that is not a video, one without a video stream or
without a decodable frame, or an MP4 whose index (``moov`` atom) is missing (cut off while being
written or copied) raises ``ValueError``. A video truncated or damaged *after* its index decodes
the frames that are intact, with a ``UserWarning`` naming the file.

>>> import shutil, tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(5)]
>>> path = write_video(folder / "ramp.mp4", frames, fps=10)
>>> info = probe_video(path)
>>> info.width, info.height, info.fps, info.frame_count, info.rotation
(64, 48, 10.0, 5, 0)
>>> [(f.index, f.timestamp, f.image.shape) for f in iter_frames(path, max_side=32)][:2]
[(0, 0.0, (24, 32, 3)), (1, 0.1, (24, 32, 3))]
>>> scene = select_frames(path, 3, progress=False)
>>> [f.name for f in scene.frames], scene.frames[0].image().shape
(['frame_000001', 'frame_000002', 'frame_000003'], torch.Size([48, 64, 3]))
>>> shutil.rmtree(folder)
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import threading
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .scene import Frame, Scene

__all__ = [
    "VideoInfo",
    "VideoFrame",
    "FrameSelection",
    "probe_video",
    "iter_frames",
    "select_frames",
    "choose_frames",
    "write_video",
]

#: Containers :func:`write_video` writes (all with H.264 video).
WRITE_FORMATS = (".mp4", ".mov", ".m4v", ".mkv")


# ----------------------------------------------------------------------------------------------
# Probing
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds (see the module docstring for the conventions).

    Fields:
        path: the file.
        width, height: frame size as displayed, i.e. after ``rotation`` is applied.
        rotation: clockwise degrees (0, 90, 180, 270) the stored frames are turned to be displayed:
            the legacy ``rotate`` tag's convention; a phone held upright usually records 90.
        fps: the container's average frame rate (``0.0`` when it states none).
        frame_count: the number of frames, counted (never the container's estimate): see
            ``frame_count_method``.
        frame_count_method: ``"packets"``: video packets read without decoding (fast; one packet is
            one frame in every common codec, so this is the decoded count for an intact file; a
            damaged file may hold packets that do not decode); ``"decoded"``: frames actually decoded.
        duration: the container's duration in seconds (``None`` when it states none).
        codec: ffmpeg's name of the video codec (``"h264"``, ``"hevc"``, ...).
        start_time: the container's start time in seconds (subtracted from frame timestamps).
    """

    path: Path
    width: int
    height: int
    rotation: int
    fps: float
    frame_count: int
    frame_count_method: Literal["packets", "decoded"]
    duration: float | None
    codec: str
    start_time: float = 0.0

    @property
    def stored_size(self) -> tuple[int, int]:
        """``(width, height)`` of the frames as stored in the file, before rotation."""
        return (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)


def probe_video(path: str | Path, *, count: Literal["packets", "decode"] = "packets") -> VideoInfo:
    """Describe a video file: displayed size, rotation, frame rate, frame count, duration, codec.

    ``count="packets"`` (default) counts the video packets without decoding (about a millisecond per
    hundred frames); ``count="decode"`` decodes every frame (as slow as decoding the video) and is exact
    even for a damaged file. Either way the count is made, never taken from the container's header.
    A file that ffmpeg reports damaged gives a ``UserWarning``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: an empty file, not a video, no video stream, no frames, or a missing MP4 index.
    """
    if count not in ("packets", "decode"):
        raise ValueError(f"count must be 'packets' or 'decode', got {count!r}")
    return _probe(path, count, warn=True)


def _probe(path: str | Path, count: str, warn: bool) -> VideoInfo:
    path = _check_file(path)
    args = ["-i", str(path), "-map", "0:V:0", "-fps_mode", "passthrough"]
    args += ["-c", "copy"] if count == "packets" else []
    rc, text = _run_ffmpeg([*args, "-f", "null", "-"])
    header = _parse_header(path, text)
    counts = re.findall(r"frame=\s*(\d+)", text)
    if rc != 0 or not counts:
        raise ValueError(f"{path}: ffmpeg could not read the video stream: {_tail(text)}")
    frames = int(counts[-1])
    if frames == 0:
        raise ValueError(f"{path}: the video stream holds no frames")
    damage = [line for line in text.splitlines() if _is_damage(line)]
    if damage and warn:
        warnings.warn(f"{path}: the video is damaged or truncated ({_clean(damage[0])}); frame_count={frames} "
                      f"counts the {'readable packets' if count == 'packets' else 'decoded frames'}", stacklevel=3)
    return dataclasses.replace(header, frame_count=frames,
                               frame_count_method="packets" if count == "packets" else "decoded")


def _ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _run_ffmpeg(args: list[str]) -> tuple[int, str]:
    """Run ffmpeg to completion; return its exit code and its log (stderr)."""
    cmd = [_ffmpeg_exe(), "-hide_banner", "-nostdin", *args]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc.returncode, proc.stderr.decode(errors="replace")


def _check_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such video file")
    if not path.is_file():
        raise ValueError(f"{path}: not a file (a video file is needed)")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes), not a video")
    return path


def _tail(text: str, lines: int = 3) -> str:
    """The last few meaningful lines of an ffmpeg log, for an error message."""
    keep = [_clean(line) for line in text.splitlines() if line.strip() and not line.startswith(" ")]
    keep = [line for line in keep if not line.startswith(("Input #", "Output #", "Stream mapping", "Press [q]"))]
    return " | ".join(keep[-lines:]) or "(ffmpeg printed nothing)"


_DAMAGE = re.compile(r"error|invalid|corrupt|partial file|missing picture|truncat|concealing", re.IGNORECASE)


def _clean(line: str) -> str:
    """An ffmpeg log line without its ``[component @ 0x...]`` prefixes."""
    return re.sub(r"^(\s*\[[^\]]*\]\s*)+", "", line).strip()


def _is_damage(line: str) -> bool:
    """An ffmpeg log line reporting a damaged or truncated stream (indented lines are metadata)."""
    if not line or line.startswith((" ", "Input #", "Output #")) or "showinfo" in line:  # these may hold the path
        return False
    return bool(_DAMAGE.search(line))


_SIZE = re.compile(r"(?<=[\s,])(\d+)x(\d+)(?=[\s,\[]|$)")


def _parse_header(path: Path, text: str) -> VideoInfo:
    """The first input's description from ffmpeg's log (``ffmpeg -i``); ``frame_count`` is left at 0."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Input #0")), None)
    if start is None:
        if "misdetection possible" in text:
            raise ValueError(f"{path}: not a video file (ffmpeg does not recognise its format)")
        if "moov atom not found" in text:
            raise ValueError(f"{path}: incomplete video: its MP4 index (moov atom) is missing; the file was "
                             "probably cut off while being written or copied")
        if "Invalid data found" in text:
            raise ValueError(f"{path}: not a video file ffmpeg can read ({_tail(text, 1)})")
        raise ValueError(f"{path}: ffmpeg cannot open it: {_tail(text)}")
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))
    section = lines[start:end]

    stream_at = next((i for i, line in enumerate(section)
                      if re.match(r"\s*Stream #\d+:\d+.*: Video: ", line) and "(attached pic)" not in line), None)
    if stream_at is None:
        found = [re.sub(r"^\s*Stream #\d+:\d+\S*: ", "", line).split(",")[0]
                 for line in section if re.match(r"\s*Stream #", line)]
        raise ValueError(f"{path}: no video stream (streams found: {', '.join(found) or 'none'})")
    stream = section[stream_at]
    indent = len(stream) - len(stream.lstrip())
    block = []
    for line in section[stream_at + 1:]:
        if len(line) - len(line.lstrip()) <= indent:
            break
        block.append(line)

    codec = stream.split("Video: ", 1)[1].split()[0].rstrip(",")
    size = _SIZE.search(stream.split("Video: ", 1)[1])
    if size is None:
        raise ValueError(f"{path}: ffmpeg reports no frame size for the video stream: {stream.strip()}")
    width, height = int(size[1]), int(size[2])
    fps = 0.0
    for unit in ("fps", "tbr"):
        m = re.search(rf"([\d.]+)(k?) {unit}\b", stream)
        if m:
            fps = float(m[1]) * (1000 if m[2] else 1)
            break
    rotation = _rotation(path, "\n".join(block))
    if rotation in (90, 270):
        width, height = height, width

    duration, start_time = None, 0.0
    m = re.search(r"Duration: (\d+):(\d+):([\d.]+)", "\n".join(section))
    if m:
        duration = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    m = re.search(r"start: (-?[\d.]+)", "\n".join(section))
    if m:
        start_time = float(m[1])
    return VideoInfo(path=path, width=width, height=height, rotation=rotation, fps=fps, frame_count=0,
                     frame_count_method="packets", duration=duration, codec=codec, start_time=start_time)


def _rotation(path: Path, block: str) -> int:
    """Clockwise display rotation from a stream's metadata / side data, a multiple of 90 degrees."""
    m = re.search(r"display\s*matrix: rotation of (-?[\d.]+) degrees", block, re.IGNORECASE)
    if m:
        degrees = -float(m[1])  # the display matrix angle is counter-clockwise
    else:
        m = re.search(r"^\s*rotate\s*:\s*(-?[\d.]+)", block, re.MULTILINE)  # ffmpeg < 5 showed the tag
        degrees = float(m[1]) if m else 0.0
    quarter = round(degrees / 90.0)
    if abs(degrees - 90.0 * quarter) > 1.0:
        warnings.warn(f"{path}: display rotation of {degrees} degrees is not a multiple of 90; ignored",
                      stacklevel=3)
        return 0
    return int(quarter % 4) * 90


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------


class VideoFrame(NamedTuple):
    """One decoded frame: its index, timestamp in seconds (``None`` when unknown) and pixels
    (uint8 ``[H, W, 3]`` RGB, or ``[H, W]`` grey where stated)."""

    index: int
    timestamp: float | None
    image: np.ndarray


def iter_frames(path: str | Path, *, max_side: int | None = None, size: tuple[int, int] | None = None,
                indices: Sequence[int] | None = None) -> Iterator[VideoFrame]:
    """Stream the frames of a video, one at a time (the video is never held in memory).

    Args:
        path: the video file.
        max_side: shrink frames so their longest side is at most this many pixels (aspect ratio kept).
        size: ``(width, height)`` to resize every frame to (instead of ``max_side``).
        indices: decode only these frames (increasing indices; a ``range`` works for a stride). The
            others are still decoded by ffmpeg (video frames depend on each other) but are neither
            converted nor copied. Indices past the end of the video are ignored (a list of indices
            with some missing gives a warning).

    Yields:
        :class:`VideoFrame` ``(index, timestamp, image)`` with ``image`` uint8 ``[H, W, 3]`` RGB as
        displayed. The file is checked when this function is called (errors as in the module docstring);
        damage found while decoding gives a ``UserWarning`` at the end of the stream.
    """
    path = _check_file(path)
    if indices is not None and not isinstance(indices, range):
        indices = [int(i) for i in indices]
        if any(b <= a for a, b in zip(indices, indices[1:], strict=False)) or (indices and indices[0] < 0):
            raise ValueError(f"indices must be increasing and non-negative, got {indices[:10]}")
    _, text = _run_ffmpeg(["-i", str(path)])
    info = _parse_header(path, text)
    return _decode(info, _output_size(info, max_side, size), indices=indices)


def _output_size(info: VideoInfo, max_side: int | None, size: tuple[int, int] | None) -> tuple[int, int]:
    if size is not None and max_side is not None:
        raise ValueError("give either max_side or size, not both")
    if size is not None:
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise ValueError(f"size must be positive (width, height), got {size}")
        return w, h
    if max_side is None or max(info.width, info.height) <= max_side:
        return info.width, info.height
    if max_side <= 0:
        raise ValueError(f"max_side must be positive, got {max_side}")
    scale = max_side / max(info.width, info.height)
    return max(1, round(info.width * scale)), max(1, round(info.height * scale))


def _select_expression(indices: Sequence[int]) -> str:
    """An ffmpeg ``select`` expression keeping the frames ``indices`` (``n`` counts decoded frames)."""
    if isinstance(indices, range):
        if indices.step <= 0 or indices.start < 0:
            raise ValueError(f"indices must be increasing and non-negative, got {indices}")
        terms = [f"not(mod(n-{indices.start}\\,{indices.step}))", f"gte(n\\,{indices.start})"]
        if indices.stop < 2**53:
            terms.append(f"lt(n\\,{indices.stop})")
        return "*".join(terms)
    return "+".join(f"eq(n\\,{int(i)})" for i in indices) or "0"


class _FfmpegLog:
    """Reads ffmpeg's log in a thread: the ``showinfo`` time stamp of each output frame, and the rest."""

    _SHOWINFO = re.compile(r"\bn:\s*(\d+)\s+pts:\s*(\S+)\s+pts_time:(\S+)")

    def __init__(self, stream: IO[bytes]) -> None:
        self.pts: dict[int, float | None] = {}
        self.damage: list[str] = []
        self.lines: deque[str] = deque(maxlen=50)
        self.done = self.timed_out = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            m = self._SHOWINFO.search(line)
            with self._cond:
                if m:
                    try:
                        self.pts[int(m[1])] = float(m[3])
                    except ValueError:  # "NOPTS"
                        self.pts[int(m[1])] = None
                    self._cond.notify_all()
                elif "Parsed_showinfo" not in line:
                    self.lines.append(line)
                    if _is_damage(line) and len(self.damage) < 100:
                        self.damage.append(_clean(line))
        with self._cond:
            self.done = True
            self._cond.notify_all()

    def pts_of(self, k: int, timeout: float = 5.0) -> float | None:
        """The time stamp of output frame ``k`` (showinfo logs it before the frame reaches the pipe, so
        it comes at once; after one time-out, e.g. an ffmpeg whose log reads differently, never wait again)."""
        with self._cond:
            if not self._cond.wait_for(lambda: k in self.pts or self.done or self.timed_out, timeout):
                self.timed_out = True
            return self.pts.pop(k, None)

    def join(self) -> None:
        self._thread.join(timeout=10.0)


def _read_into(stream: IO[bytes], buffer: np.ndarray) -> int:
    view = memoryview(buffer).cast("B")
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _decode(info: VideoInfo, out_size: tuple[int, int], *, indices: Sequence[int] | None = None,
            grey: bool = False, warn: bool = True, stacklevel: int = 2) -> Iterator[VideoFrame]:
    """The decoding loop behind :func:`iter_frames` (``grey``: ``[H, W]`` luma frames; ``stacklevel``
    of the warnings, counted from the code that iterates)."""
    path = info.path
    w, h = out_size
    filters = []
    if indices is not None:
        filters.append(f"select={_select_expression(indices)}")
    if (w, h) != (info.width, info.height):
        filters.append(f"scale={w}:{h}:flags=area")
    filters.append("showinfo=checksum=0")
    cmd = [_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", "-i", str(path),
           "-map", "0:V:0", "-fps_mode", "passthrough", "-vf", ",".join(filters),
           "-f", "rawvideo", "-pix_fmt", "gray" if grey else "rgb24", "-"]
    shape = (h, w) if grey else (h, w, 3)
    index_of = (lambda k: int(indices[k])) if indices is not None else (lambda k: k)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = _FfmpegLog(proc.stderr)
    k = 0
    partial = complete = False
    try:
        while True:
            if indices is not None and not isinstance(indices, range) and k == len(indices):
                complete = True  # every requested frame is out: no need to decode the rest
                break
            image = np.empty(shape, np.uint8)
            got = _read_into(proc.stdout, image)
            if got < image.nbytes:
                partial = got > 0
                break
            index = index_of(k)
            pts = log.pts_of(k)
            if pts is not None:
                timestamp: float | None = round(pts - info.start_time, 9)
            else:
                timestamp = index / info.fps if info.fps > 0 else None
            yield VideoFrame(index, timestamp, image)
            k += 1
        rc = 0 if complete else proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.join()
        proc.stdout.close()
        proc.stderr.close()
    if k == 0 and indices is None:
        raise ValueError(f"{path}: no frame could be decoded: {_tail(chr(10).join(log.lines))}")
    if warn and (rc != 0 or log.damage or partial):
        expected = ""
        if indices is None and info.duration and info.fps:
            expected = f" of about {round(info.duration * info.fps)}"
        reason = log.damage[0] if log.damage else _tail("\n".join(log.lines), 1)
        warnings.warn(f"{path}: the video is damaged or truncated: decoded {k}{expected} frames, the intact ones "
                      f"(ffmpeg: {reason})", stacklevel=stacklevel)
    if warn and indices is not None and not isinstance(indices, range) and k < len(indices):
        warnings.warn(f"{path}: frames {list(indices[k:])[:10]} do not exist (decoded {k} of the "
                      f"{len(indices)} requested)", stacklevel=stacklevel)


# ----------------------------------------------------------------------------------------------
# Frame selection
# ----------------------------------------------------------------------------------------------


@dataclass
class FrameSelection:
    """How :func:`select_frames` chose: the scores of every candidate frame and the choice.

    Fields:
        candidates: ``[N]`` int frame indices analysed (every ``stride``-th frame).
        timestamps: ``[N]`` float seconds (NaN when unknown).
        sharpness: ``[N]`` variance of the Laplacian of the grey frame at ``analysis_size``.
        motion: ``[N]`` mean optical-flow magnitude from the previous candidate, as a fraction of the
            frame's longest side (``motion[0] = 0``).
        selected: ``[K]`` int frame indices chosen, increasing.
        analysis_size: ``(width, height)`` the scores were computed at.
    """

    candidates: np.ndarray
    timestamps: np.ndarray
    sharpness: np.ndarray
    motion: np.ndarray
    selected: np.ndarray
    analysis_size: tuple[int, int]


#: Longest side of the previews optical flow is computed on.
FLOW_SIDE = 256


def choose_frames(sharpness: np.ndarray, motion: np.ndarray, count: int, time_weight: float = 0.1,
                  centre_weight: float = 0.5) -> np.ndarray:
    """Pick ``count`` of ``N`` candidates: spread by motion, sharpest within each stretch.

    The candidates are placed on a progress axis ``u`` in ``[0, 1]``: cumulative motion (normalised),
    blended with plain time by ``time_weight`` so that a static stretch still gets a few frames and a
    static video is sampled uniformly in time. ``u`` is cut into ``count`` equal segments and each
    segment gives its best candidate: the highest ``sharpness / (segment's best sharpness) -
    centre_weight * |u - segment centre| / segment width``, so the sharpest frame wins unless a frame
    nearly as sharp (by up to ``centre_weight / 2``) lies nearer the centre, which keeps the spacing
    even. A segment with no candidate in it (a jump of the camera larger than a segment) gives the
    free candidate nearest its centre. So fast motion gets more frames, static stretches fewer, and
    blurred frames are avoided.

    Args:
        sharpness: ``[N]`` sharpness score per candidate (larger = sharper), >= 0.
        motion: ``[N]`` motion from the previous candidate (``motion[0]`` ignored), >= 0.
        count: number of frames to choose.
        time_weight: weight of plain time in the progress axis, in ``[0, 1]``.
        centre_weight: preference for frames near a segment's centre (0: sharpest only).

    Returns:
        ``[min(count, N)]`` increasing candidate positions (int64); all of them when ``count >= N``.

    >>> choose_frames(np.array([1.0, 5, 1, 1, 5, 1]), np.ones(6), 2)
    array([1, 4])
    """
    sharpness = np.asarray(sharpness, dtype=np.float64)
    n = len(sharpness)
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    if count >= n:
        return np.arange(n)
    steps = np.clip(np.nan_to_num(np.asarray(motion, dtype=np.float64)[1:]), 0, None)
    travelled = np.concatenate([[0.0], np.cumsum(steps)])
    time = np.linspace(0.0, 1.0, n)
    u = (1 - time_weight) * travelled / travelled[-1] + time_weight * time if travelled[-1] > 0 else time
    segment = np.minimum((u * count).astype(np.int64), count - 1)
    chosen: list[int] = []
    empty: list[int] = []
    for s in range(count):
        members = np.flatnonzero(segment == s)
        if members.size:
            best = sharpness[members].max()
            score = sharpness[members] / best if best > 0 else np.zeros(members.size)
            score = score - centre_weight * np.abs(u[members] * count - (s + 0.5))
            chosen.append(int(members[np.argmax(score)]))
        else:
            empty.append(s)
    taken = set(chosen)
    for s in empty:
        for c in np.argsort(np.abs(u - (s + 0.5) / count), kind="stable"):
            if int(c) not in taken:
                taken.add(int(c))
                chosen.append(int(c))
                break
    return np.array(sorted(chosen), dtype=np.int64)


def select_frames(path: str | Path, count: int, *, max_side: int | None = 1920, analysis_side: int = 640,
                  stride: int = 1, time_weight: float = 0.1, centre_weight: float = 0.5,
                  progress: bool = True) -> Scene:
    """Choose ``count`` sharp frames spread over a video's camera motion, as an unposed :class:`Scene`.

    Two decoding passes, memory bounded by the chosen frames:

    1. Every ``stride``-th frame (a *candidate*) is decoded as grey at ``analysis_side`` (longest side)
       and scored: sharpness (variance of the Laplacian) and motion from the previous candidate (mean
       magnitude of DIS optical flow at :data:`FLOW_SIDE`). Only the scores and one preview are kept.
    2. :func:`choose_frames` picks the frames; they alone are decoded again, as RGB at ``max_side``.

    With ``count`` at least the number of candidates, every candidate is returned.

    Args:
        path: the video file.
        count: the number of frames wanted.
        max_side: longest side of the returned frames (``None``: the video's size).
        analysis_side: longest side the scores are computed at.
        stride: analyse only every ``stride``-th frame (for long videos).
        time_weight, centre_weight: see :func:`choose_frames`.
        progress: show tqdm progress bars.

    Returns:
        ``Scene(frames, cameras=None, root=path.parent)``: ``Frame(name=f"frame_{index:06d}", image_fn=...,
        timestamp=...)`` in increasing time, pixels held in memory (uint8 ``[H, W, 3]``; ``Frame.image()``
        gives float ``[0, 1]``), ``metadata={"index", "sharpness", "motion"}`` per frame.
        ``scene.metadata["video"]`` is the :class:`VideoInfo` (its ``frame_count`` the decoded count when
        ``stride == 1``), ``scene.metadata["selection"]`` the :class:`FrameSelection`.
    """
    import cv2
    from tqdm.auto import tqdm

    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    info = _probe(path, "packets", warn=False)  # damage is reported while decoding
    path = info.path
    analysis = _output_size(info, analysis_side, None)
    flow_size = _output_size(info, FLOW_SIDE, None)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)

    candidates, timestamps, sharpness, motion = [], [], [], []
    previous = None
    sequence = range(0, 2**62, stride) if stride > 1 else None
    bar = tqdm(total=-(-info.frame_count // stride), desc=f"scoring {path.name}", unit="frame",
               disable=not progress, leave=False)
    with bar:
        for frame in _decode(info, analysis, indices=sequence, grey=True, stacklevel=3):
            grey = frame.image
            sharpness.append(float(cv2.Laplacian(grey, cv2.CV_32F, ksize=3).var()))
            small = grey if flow_size == analysis else cv2.resize(grey, flow_size, interpolation=cv2.INTER_AREA)
            if previous is None:
                motion.append(0.0)
            else:
                flow = dis.calc(previous, small, None)
                motion.append(float(np.linalg.norm(flow, axis=-1).mean()) / max(flow_size))
            previous = small
            candidates.append(frame.index)
            timestamps.append(np.nan if frame.timestamp is None else frame.timestamp)
            bar.update()
    if not candidates:
        raise ValueError(f"{path}: no frame could be decoded")
    if stride == 1:
        info = dataclasses.replace(info, frame_count=len(candidates), frame_count_method="decoded")

    positions = choose_frames(np.array(sharpness), np.array(motion), count, time_weight, centre_weight)
    selected = [candidates[p] for p in positions]
    size = _output_size(info, max_side, None)
    frames = []
    with tqdm(total=len(selected), desc=f"decoding {len(selected)} frames", unit="frame", disable=not progress,
              leave=False) as bar:
        for frame, p in zip(_decode(info, size, indices=selected, warn=False), positions, strict=False):
            if frame.index != candidates[p]:  # pragma: no cover - guards against a decoder that is not deterministic
                raise RuntimeError(f"{path}: decoding is not repeatable (frame {frame.index} != {candidates[p]})")
            frames.append(Frame(name=f"frame_{frame.index:06d}", image_fn=_constant(frame.image),
                                timestamp=frame.timestamp,
                                metadata={"index": frame.index, "sharpness": sharpness[p], "motion": motion[p]}))
            bar.update()
    if len(frames) != len(selected):
        warnings.warn(f"{path}: only {len(frames)} of the {len(selected)} chosen frames decoded again", stacklevel=2)
    selection = FrameSelection(candidates=np.array(candidates, dtype=np.int64),
                               timestamps=np.array(timestamps, dtype=np.float64),
                               sharpness=np.array(sharpness), motion=np.array(motion),
                               selected=np.array([f.metadata["index"] for f in frames], dtype=np.int64),
                               analysis_size=analysis)
    return Scene(frames=frames, cameras=None, root=path.parent, metadata={"video": info, "selection": selection})


def _constant(image: np.ndarray):
    """``image_fn`` for in-memory pixels."""
    return lambda: image


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def write_video(path: str | Path, frames: Iterable[np.ndarray | Tensor], fps: float = 30.0, *, crf: int = 18,
                overwrite: bool = False) -> Path:
    """Write frames as an H.264 video (libx264, yuv420p: what every player reads); return ``path``.

    Args:
        path: ``.mp4`` (also ``.mov``, ``.m4v``, ``.mkv``). MP4/MOV files get their index first
            (``+faststart``), so a truncated file still plays up to the cut.
        frames: ``[H, W, 3]`` RGB, ``[H, W, 4]`` RGBA (alpha dropped), ``[H, W, 1]`` or ``[H, W]`` grey;
            uint8, or float in ``[0, 1]`` (clipped); numpy arrays or tensors (any device). Consumed
            one at a time (a generator is fine). All frames must have the first one's size.
        fps: frames per second.
        crf: x264 quality, 0 (lossless) to 51; 18 is visually lossless.
        overwrite: replace an existing file.

    Odd widths or heights (yuv420p needs even ones) are padded by repeating the last column / row,
    so nothing is cropped. The file is removed again if writing fails.

    Raises:
        ValueError: no frames, frames of different sizes or of an unsupported layout, bad ``fps``
            or ``crf``, unknown extension.
        FileExistsError: the file exists and ``overwrite`` is False.
        FileNotFoundError: the target folder does not exist.
    """
    import imageio_ffmpeg

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in WRITE_FORMATS:
        raise ValueError(f"{path}: cannot write video format {ext!r}; supported: {', '.join(WRITE_FORMATS)}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise FileExistsError(f"refusing to overwrite {path} (pass overwrite=True)")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in [0, 51], got {crf}")

    writer = None
    size = None
    try:
        for i, frame in enumerate(frames):
            image = _to_rgb8(frame, i)
            if size is None:
                size = image.shape[:2]
                params = ["-crf", str(int(crf)), "-preset", "medium"]
                params += ["-movflags", "+faststart"] if ext != ".mkv" else []
                even = (size[1] + size[1] % 2, size[0] + size[0] % 2)
                writer = imageio_ffmpeg.write_frames(str(path), even, fps=float(fps), codec="libx264", quality=None,
                                                     macro_block_size=1, ffmpeg_log_level="error",
                                                     output_params=params)
                writer.send(None)
            elif image.shape[:2] != size:
                raise ValueError(f"frame {i} is {image.shape[1]}x{image.shape[0]}, the video is {size[1]}x{size[0]}")
            if image.shape[0] % 2 or image.shape[1] % 2:
                image = np.pad(image, ((0, image.shape[0] % 2), (0, image.shape[1] % 2), (0, 0)), mode="edge")
            writer.send(np.ascontiguousarray(image))
        if writer is None:
            raise ValueError(f"{path}: no frames to write")
        writer.close()
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            finally:
                path.unlink(missing_ok=True)
        raise
    return path


def _to_rgb8(frame: np.ndarray | Tensor, i: int) -> np.ndarray:
    """A frame as uint8 ``[H, W, 3]``."""
    a = frame.detach().cpu().numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"frame {i} has shape {list(a.shape)}; expected [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]")
    if a.dtype == np.uint8:
        pass
    elif a.dtype.kind == "f":
        a = (np.clip(np.nan_to_num(a, nan=0.0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    else:
        raise ValueError(f"frame {i} has dtype {a.dtype}; expected uint8 or float in [0, 1]")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a[..., :3]
