"""The demo's upload checks (no Gradio needed): zip extraction that refuses absolute paths, ``..``,
symlinks, too many members and too many bytes and leaves nothing behind; uploads copied under names
of the app's own; a failed reconstruct job reports the pipeline's message."""

from __future__ import annotations

import stat
import zipfile

import numpy as np
import pytest

from scenegrad.apps.demo_uploads import (
    Limits,
    Sessions,
    check_member_name,
    image_folder_from_zip,
    prepare_input,
    safe_extract,
    suffix_of,
)

LIMITS = Limits(max_upload_mb=1, max_zip_members=20, max_unzipped_mb=0.5)


def make_zip(path, members: dict[str, bytes], symlinks: dict[str, str] | None = None):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def png_bytes(value: int) -> bytes:
    import io

    import imageio.v2 as imageio

    buffer = io.BytesIO()
    imageio.imwrite(buffer, np.full((8, 8, 3), value, np.uint8), format="png")
    return buffer.getvalue()


@pytest.mark.parametrize(("members", "symlinks", "message"), [
    ({"ok.png": b"x", "../evil.png": b"y"}, None, r"'\.\./evil\.png', a path that climbs out"),
    ({"a/../../evil.png": b"y"}, None, "climbs out"),
    ({"/etc/evil.png": b"y"}, None, "an absolute path"),
    ({"C:/evil.png": b"y"}, None, "an absolute path"),
    ({"ok.png": b"x"}, {"link.png": "/etc/passwd"}, "'link.png', a symlink"),
    ({f"{i}.png": b"x" for i in range(21)}, None, "21 entries, over this demo's limit of 20"),
    ({"big.png": b"\0" * 600_000}, None, "expands to 0.6 MB, over this demo's limit of 0.5 MB"),
])
def test_bad_zips_are_refused_and_leave_nothing(tmp_path, members, symlinks, message):
    archive = make_zip(tmp_path / "in.zip", members, symlinks)
    dest = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        safe_extract(archive, dest, LIMITS)
    assert not dest.exists()
    assert not (tmp_path.parent / "evil.png").exists()


def test_not_a_zip(tmp_path):
    (tmp_path / "fake.zip").write_text("hello")
    with pytest.raises(ValueError, match="not a readable zip"):
        safe_extract(tmp_path / "fake.zip", tmp_path / "out", LIMITS)


def test_member_names():
    assert str(check_member_name("./a/./b.png")) == "a/b.png"
    with pytest.raises(ValueError, match="climbs out"):
        check_member_name("a\\..\\..\\b.png")
    assert suffix_of("Holiday Clip.MP4") == ".mp4"
    assert suffix_of("../../etc/passwd") == ""
    assert suffix_of("x.tar.gz") == ".gz"


def test_images_from_a_zip_in_natural_order(tmp_path):
    members = {f"scan/img{i}.png": png_bytes(20 * i) for i in (10, 2, 1)}
    members |= {"__MACOSX/scan/._img1.png": b"junk", "scan/notes.txt": b"hi", "scan/sub/": b""}
    archive = make_zip(tmp_path / "in.zip", members)
    folder = image_folder_from_zip(archive, tmp_path / "images", LIMITS)
    import imageio.v2 as imageio

    names = sorted(p.name for p in folder.iterdir())
    assert names == ["00000.png", "00001.png", "00002.png"]
    assert [int(imageio.imread(folder / n)[0, 0, 0]) for n in names] == [20, 40, 200]
    assert not (tmp_path / "images_unzipped").exists()
    few = make_zip(tmp_path / "few.zip", {"a.png": png_bytes(1), "b.txt": b"x"})
    with pytest.raises(ValueError, match="1 image"):
        image_folder_from_zip(few, tmp_path / "few", LIMITS)
    assert not (tmp_path / "few").exists()


def test_prepare_input_names_the_problem_and_cleans_up(tmp_path):
    folder = tmp_path / "session"
    folder.mkdir()
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"'\.txt' files are not accepted"):
        prepare_input(text, "notes.txt", folder, LIMITS)
    fake = tmp_path / "clip.mp4"
    fake.write_text("not a video")
    with pytest.raises(ValueError, match="the video could not be read") as error:
        prepare_input(fake, "clip.mp4", folder, LIMITS)
    assert str(folder) not in str(error.value)
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * 1_100_000)
    with pytest.raises(ValueError, match="1.1 MB, over this demo's limit of 1 MB"):
        prepare_input(big, "big.mp4", folder, LIMITS)
    evil = make_zip(tmp_path / "evil.zip", {"../evil.png": png_bytes(1)})
    with pytest.raises(ValueError, match="climbs out"):
        prepare_input(evil, "evil.zip", folder, LIMITS)
    assert list(folder.iterdir()) == []
    good = make_zip(tmp_path / "good.zip", {f"{i}.png": png_bytes(i) for i in range(3)})
    images = prepare_input(good, "../../My Photos.zip", folder, LIMITS)
    assert images == folder / "images" and len(list(images.iterdir())) == 3
    assert sorted(p.name for p in folder.iterdir()) == ["images"]


def test_sessions_are_separate_and_removed(tmp_path):
    sessions = Sessions(tmp_path)
    a, b = sessions.get("a"), sessions.get("b")
    assert a.folder != b.folder and a.folder.parent == tmp_path and sessions.get("a") is a
    (a.fresh("reconstruct") / "x").write_text("1")
    assert a.fresh("reconstruct").is_dir() and not (a.folder / "reconstruct" / "x").exists()
    with pytest.raises(ValueError):
        a.fresh("../up")
    sessions.close("a")
    assert not a.folder.exists() and b.folder.exists()
    sessions.close_idle(0.0)
    assert not b.folder.exists()


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_frames"):
        Limits(max_frames=0)


def test_a_failed_job_reports_the_pipelines_message(tmp_path):
    from scenegrad.apps.demo_jobs import ReconstructJob

    (tmp_path / "in").mkdir()
    bad = tmp_path / "in" / "clip.mp4"
    bad.write_text("not a video")
    job = ReconstructJob(bad, tmp_path / "session" / "run", preset="tiny").start()
    status = job.wait(120)
    assert status.state == "failed" and not job.running
    assert "clip.mp4" in status.error and str(tmp_path) not in status.error
    assert status.summary().startswith("failed: ")
    assert (tmp_path / "session" / "log.txt").is_file()


def test_demo_command_help(capsys):
    from scenegrad.apps.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--max-upload-mb", "--max-frames", "--max-iterations", "--work-dir"):
        assert flag in out
    assert "--share" not in out
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--max-frames", "0"])
    assert exit_info.value.code == 2 and "max_frames must be positive" in capsys.readouterr().err
