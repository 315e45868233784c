"""Uploads for ``scenegrad demo``: limits, per-session folders and safe zip extraction.

Nothing here imports gradio, so the checks run (and are tested) without it. The rules:

- every session gets its own folder under the app's work folder; all its uploads and results live
  there and the folder is removed when the session ends (or the app stops);
- a file from the browser is copied under a name chosen here (``input.mp4``, ``upload.zip``): the
  browser's file name only contributes a checked suffix and is never joined into a path;
- a zip is read member by member: absolute paths, ``..``, symlinks or other special files, too many
  members or too many bytes (counted while writing, not taken from the header) reject the whole
  archive with a message that names the member, and whatever was written is removed.

>>> check_member_name("scans/../../etc/passwd")
Traceback (most recent call last):
...
ValueError: the zip holds 'scans/../../etc/passwd', a path that climbs out of its folder ('..'); refusing it
"""

from __future__ import annotations

import re
import shutil
import stat
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from scenegrad.datasets.images import IMAGE_EXTENSIONS, natural_key

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm")
MESH_EXTENSIONS = (".obj", ".glb", ".gltf", ".ply")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What one upload may be.

    max_upload_mb: size of the uploaded file (the video or the zip itself).
    max_frames: frames a reconstruction uses (a video is sampled, a folder thinned to this many).
    max_zip_members: entries in a zip (files and folders).
    max_unzipped_mb: bytes a zip may expand to.
    max_iterations: splat training iterations a reconstruction may ask for.
    max_resolution: longest side of the frames a reconstruction uses (pixels).
    """

    max_upload_mb: float = 200.0
    max_frames: int = 60
    max_zip_members: int = 2000
    max_unzipped_mb: float = 1000.0
    max_iterations: int = 3000
    max_resolution: int = 640

    def __post_init__(self):
        for name in ("max_upload_mb", "max_frames", "max_zip_members", "max_unzipped_mb", "max_iterations",
                     "max_resolution"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass
class Session:
    """One browser session's folder (``root/session-*``) and its running job, if any."""

    folder: Path
    job: object | None = None
    touched: float = field(default_factory=time.monotonic)

    def fresh(self, name: str) -> Path:
        """An empty sub-folder ``name`` (a fixed name chosen by the app), replacing an earlier one."""
        if not re.fullmatch(r"[a-z_]+", name):
            raise ValueError(f"bad folder name {name!r}")
        path = self.folder / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        self.touched = time.monotonic()
        return path

    def close(self) -> None:
        """Stop the job and remove the folder."""
        cancel = getattr(self.job, "cancel", None)
        if cancel is not None:
            cancel()
        shutil.rmtree(self.folder, ignore_errors=True)


class Sessions:
    """Session folders under ``root``, by session id (the id is a key only, never part of a path)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._open: dict[str, Session] = {}

    def get(self, key: str | None) -> Session:
        key = key or "anonymous"
        session = self._open.get(key)
        if session is None or not session.folder.is_dir():
            session = Session(Path(tempfile.mkdtemp(prefix="session-", dir=self.root)))
            self._open[key] = session
        session.touched = time.monotonic()
        return session

    def close(self, key: str | None) -> None:
        session = self._open.pop(key or "anonymous", None)
        if session is not None:
            session.close()

    def close_idle(self, seconds: float) -> None:
        """Close sessions untouched for ``seconds`` whose job (if any) has finished."""
        now = time.monotonic()
        for key, session in list(self._open.items()):
            running = session.job is not None and getattr(session.job, "running", False)
            if now - session.touched > seconds and not running:
                self.close(key)

    def close_all(self) -> None:
        for key in list(self._open):
            self.close(key)


def suffix_of(browser_name: str) -> str:
    """The lower-case suffix of a browser-given file name (``""`` when there is no plain one)."""
    suffix = PurePosixPath(browser_name.replace("\\", "/")).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


def check_size(path: Path, limits: Limits, what: str = "the upload") -> int:
    """The file's size in bytes; ``ValueError`` when it is over ``limits.max_upload_mb``."""
    size = Path(path).stat().st_size
    if size > limits.max_upload_mb * 1e6:
        raise ValueError(f"{what} is {size / 1e6:.1f} MB, over this demo's limit of {limits.max_upload_mb:g} MB")
    if size == 0:
        raise ValueError(f"{what} is empty")
    return size


def copy_upload(source: Path, folder: Path, stem: str, suffix: str, limits: Limits) -> Path:
    """Copy an uploaded file to ``folder/stem+suffix`` (names chosen by the caller) after the size check."""
    if not re.fullmatch(r"[a-z_]+", stem) or not re.fullmatch(r"\.[a-z0-9]{1,8}", suffix):
        raise ValueError(f"bad target name {stem!r}{suffix!r}")
    check_size(source, limits)
    target = folder / f"{stem}{suffix}"
    shutil.copyfile(source, target)
    return target


def check_member_name(name: str) -> PurePosixPath:
    """A zip member name as a safe relative path, or ``ValueError`` naming the problem."""
    if "\x00" in name:
        raise ValueError(f"the zip holds a member name with a NUL byte ({name!r}); refusing it")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise ValueError(f"the zip holds {name!r}, an absolute path; refusing it")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        raise ValueError(f"the zip holds {name!r}, a path that climbs out of its folder ('..'); refusing it")
    if not parts:
        raise ValueError("the zip holds a member with an empty name; refusing it")
    return PurePosixPath(*[p for p in parts if p != "."])


def _kind(info: zipfile.ZipInfo) -> str:
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix type recorded (a plain entry)
    if kind == stat.S_IFLNK:
        return "symlink"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "special file"
    return "dir" if info.is_dir() else "file"


def safe_extract(archive: Path, dest: Path, limits: Limits, keep: tuple[str, ...] | None = None) -> list[Path]:
    """Extract the files of ``archive`` under ``dest`` (their relative paths kept) and return them.

    ``keep``: lower-case suffixes to extract (others are skipped; ``None``: all). macOS resource
    forks (``__MACOSX/``, ``._*``) are skipped. The whole archive is checked before anything is
    written; on any error ``dest`` is removed and ``ValueError`` says why.
    """
    dest = Path(dest)
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > limits.max_zip_members:
                raise ValueError(f"the zip has {len(infos)} entries, over this demo's limit of "
                                 f"{limits.max_zip_members}")
            plan = []
            for info in infos:
                rel = check_member_name(info.filename)
                kind = _kind(info)
                if kind in ("symlink", "special file"):
                    raise ValueError(f"the zip holds {info.filename!r}, a {kind}; only plain files are accepted")
                if kind == "dir" or rel.parts[0] == "__MACOSX" or rel.name.startswith("._"):
                    continue
                if keep is not None and rel.suffix.lower() not in keep:
                    continue
                plan.append((info, rel))
            declared = sum(info.file_size for info, _ in plan)
            budget = limits.max_unzipped_mb * 1e6
            if declared > budget:
                raise ValueError(f"the zip expands to {declared / 1e6:.1f} MB, over this demo's limit of "
                                 f"{limits.max_unzipped_mb:g} MB")
            dest.mkdir(parents=True, exist_ok=True)
            root = dest.resolve()
            written, total = [], 0
            for info, rel in plan:
                target = dest.joinpath(*rel.parts)
                if root not in target.resolve().parents:
                    raise ValueError(f"the zip member {info.filename!r} would land outside its folder; refusing it")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "xb") as out:
                    while chunk := src.read(_CHUNK):
                        total += len(chunk)
                        if total > budget:  # a header that lies about the size
                            raise ValueError(f"the zip expands to more than this demo's limit of "
                                             f"{limits.max_unzipped_mb:g} MB")
                        out.write(chunk)
                written.append(target)
            return written
    except zipfile.BadZipFile as error:
        shutil.rmtree(dest, ignore_errors=True)
        raise ValueError(f"not a readable zip file ({error})") from error
    except FileExistsError as error:
        shutil.rmtree(dest, ignore_errors=True)
        raise ValueError(f"the zip holds the same file twice ({Path(error.filename).name}); refusing it") from error
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def image_folder_from_zip(archive: Path, dest: Path, limits: Limits) -> Path:
    """The images of a zip (any folder depth, in natural name order) as ``dest/00000.<ext>``, ...

    ``ValueError`` when there are fewer than 3; when there are more than ``limits.max_frames`` the
    reconstruction thins them evenly."""
    staging = dest.with_name(dest.name + "_unzipped")
    try:
        files = safe_extract(archive, staging, limits, keep=IMAGE_EXTENSIONS)
        if len(files) < 3:
            raise ValueError(f"the zip holds {len(files)} image(s) ({', '.join(IMAGE_EXTENSIONS)}); "
                             "reconstruction needs at least 3")
        files.sort(key=lambda p: natural_key(str(p.relative_to(staging))))
        dest.mkdir(parents=True, exist_ok=True)
        for i, path in enumerate(files):
            path.rename(dest / f"{i:05d}{path.suffix.lower()}")
        return dest
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def prepare_input(upload: Path, browser_name: str, folder: Path, limits: Limits) -> Path:
    """An uploaded video or zip of images, checked and copied into ``folder`` (emptied on failure).

    Returns the video file or the image folder to reconstruct. ``ValueError`` with a message meant
    for the page: a wrong type, too large, an unreadable video, a bad zip."""
    suffix = suffix_of(browser_name)
    try:
        if suffix in VIDEO_EXTENSIONS:
            video = copy_upload(upload, folder, "input", suffix, limits)
            from scenegrad.datasets.video import probe_video

            try:
                info = probe_video(video)
            except ValueError as error:
                raise ValueError(f"the video could not be read: {error}".replace(str(video), "the upload")) from error
            if info.frame_count < 3:
                raise ValueError(f"the video has {info.frame_count} frame(s); reconstruction needs at least 3")
            return video
        if suffix == ".zip":
            archive = copy_upload(upload, folder, "upload", ".zip", limits)
            try:
                return image_folder_from_zip(archive, folder / "images", limits)
            finally:
                archive.unlink(missing_ok=True)
        raise ValueError(f"'{suffix or 'no extension'}' files are not accepted: upload a video "
                         f"({', '.join(VIDEO_EXTENSIONS)}) or a .zip of images ({', '.join(IMAGE_EXTENSIONS)})")
    except BaseException:
        for child in Path(folder).iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
