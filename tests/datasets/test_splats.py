"""Splats: 3DGS PLY (exact round trips, the standard header, hand-written files, errors), .splat, init from points."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch

from scenegrad.datasets.scene import Points
from scenegrad.datasets.splats import (
    SPLAT_RECORD,
    Splats,
    load_splat,
    load_splats_ply,
    save_splat,
    save_splats_ply,
    splat_ply_properties,
    splats_from_points,
)
from scenegrad.render.gaussians.sh import SH_C0

STANDARD_DEGREE3 = (
    "x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 " + " ".join(f"f_rest_{i}" for i in range(45))
    + " opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3"
).split()


def _random(n=7, degree=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    return Splats(
        means=torch.randn(n, 3, generator=g), quats=torch.randn(n, 4, generator=g),
        log_scales=torch.randn(n, 3, generator=g) - 2, opacity_logits=2 * torch.randn(n, generator=g),
        sh0=torch.randn(n, 1, 3, generator=g), shN=0.1 * torch.randn(n, k - 1, 3, generator=g),
    )


def _fields(s):
    return {f: getattr(s, f) for f in ("means", "quats", "log_scales", "opacity_logits", "sh0", "shN")}


# ---------------------------------------------------------------------------------------------
# 3DGS PLY
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_ply_round_trip_is_exact(tmp_path, degree):
    s = _random(degree=degree)
    path = save_splats_ply(s, tmp_path / "s.ply")
    back = load_splats_ply(path)
    assert back.sh_degree == degree and len(back) == len(s)
    for name, value in _fields(s).items():
        assert torch.equal(getattr(back, name), value), name
    # And the bytes are stable through a second write.
    save_splats_ply(back, tmp_path / "t.ply")
    assert (tmp_path / "t.ply").read_bytes() == path.read_bytes()


def test_ply_header_is_the_standard_one_byte_for_byte(tmp_path):
    assert splat_ply_properties(3) == STANDARD_DEGREE3
    path = save_splats_ply(_random(n=5, degree=3), tmp_path / "s.ply")
    expected = ("ply\nformat binary_little_endian 1.0\nelement vertex 5\n"
                + "".join(f"property float {p}\n" for p in STANDARD_DEGREE3) + "end_header\n").encode("ascii")
    data = path.read_bytes()
    assert data[: len(expected)] == expected
    assert len(data) == len(expected) + 5 * 62 * 4
    assert splat_ply_properties(1)[9:18] == [f"f_rest_{i}" for i in range(9)]


def _hand_written_ply(path, rows, names, fmt="binary_little_endian", types=None, extra_header=""):
    types = types or ["float"] * len(names)
    header = f"ply\nformat {fmt} 1.0\n{extra_header}element vertex {len(rows)}\n"
    header += "".join(f"property {t} {p}\n" for t, p in zip(types, names, strict=True)) + "end_header\n"
    codes = {"float": "f", "double": "d", "uchar": "B"}
    if fmt == "ascii":
        body = "".join(" ".join(repr(v) for v in row) + "\n" for row in rows).encode()
    else:
        order = "<" if fmt == "binary_little_endian" else ">"
        body = b"".join(struct.pack(order + "".join(codes[t] for t in types), *row) for row in rows)
    path.write_bytes(header.encode("ascii") + body)
    return path


def test_hand_written_standard_ply_loads_with_the_right_values(tmp_path):
    names = splat_ply_properties(1)  # 9 f_rest: R coefficients of bands 1..3, then G, then B
    row = [1.0, 2.0, 3.0, 0, 0, 0, 0.1, 0.2, 0.3] + [10.0 + i for i in range(9)] + [-1.5, -2.0, -3.0, -4.0,
                                                                                     0.5, 0.1, 0.2, 0.3]
    path = _hand_written_ply(tmp_path / "hand.ply", [row, [v * 2 for v in row]], names)
    s = load_splats_ply(path)
    assert s.sh_degree == 1 and len(s) == 2
    torch.testing.assert_close(s.means[0], torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(s.sh0[0, 0], torch.tensor([0.1, 0.2, 0.3]))
    # channel-major: shN[:, k, c] = f_rest[c * 3 + k]
    torch.testing.assert_close(s.shN[0], torch.tensor([[10.0, 13.0, 16.0], [11.0, 14.0, 17.0], [12.0, 15.0, 18.0]]))
    assert float(s.opacity_logits[0]) == -1.5
    torch.testing.assert_close(s.log_scales[0], torch.tensor([-2.0, -3.0, -4.0]))
    torch.testing.assert_close(s.quats[0], torch.tensor([0.5, 0.1, 0.2, 0.3]))  # rot_0 is w
    torch.testing.assert_close(s.opacities[0], torch.sigmoid(torch.tensor(-1.5)))
    torch.testing.assert_close(s.scales[0], torch.exp(torch.tensor([-2.0, -3.0, -4.0])))
    torch.testing.assert_close(s.unit_quats.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(s.rgb[0], 0.5 + SH_C0 * torch.tensor([0.1, 0.2, 0.3]))
    assert s.sh_coeffs.shape == (2, 4, 3)
    torch.testing.assert_close(s.means[1], torch.tensor([2.0, 4.0, 6.0]))


def test_other_ply_variants_load(tmp_path):
    names = splat_ply_properties(0)
    row = [1.0, 2.0, 3.0, 0, 0, 0, 0.1, 0.2, 0.3, -1.5, -2.0, -3.0, -4.0, 0.5, 0.1, 0.2, 0.3]
    ref = load_splats_ply(_hand_written_ply(tmp_path / "le.ply", [row], names))
    variants = {
        "be.ply": dict(fmt="binary_big_endian"),
        "ascii.ply": dict(fmt="ascii"),
        "double.ply": dict(types=["double"] * len(names)),
        "comment.ply": dict(extra_header="comment made by hand\n"),
    }
    for fname, kwargs in variants.items():
        s = load_splats_ply(_hand_written_ply(tmp_path / fname, [row], names, **kwargs))
        for name, value in _fields(ref).items():
            torch.testing.assert_close(getattr(s, name), value, msg=f"{fname} {name}")
    # Shuffled order and an extra uchar property (e.g. colours some exporters add).
    perm = list(reversed(range(len(names))))
    s = load_splats_ply(_hand_written_ply(tmp_path / "shuffled.ply", [[row[i] for i in perm] + [7]],
                                          [names[i] for i in perm] + ["red"],
                                          types=["float"] * len(names) + ["uchar"]))
    for name, value in _fields(ref).items():
        torch.testing.assert_close(getattr(s, name), value)
    assert load_splats_ply(tmp_path / "le.ply", dtype=torch.float64).means.dtype == torch.float64


def test_degree_inference_and_bad_f_rest_count(tmp_path):
    for degree, count in ((0, 0), (1, 9), (2, 24), (3, 45)):
        path = save_splats_ply(_random(n=2, degree=degree), tmp_path / f"d{degree}.ply")
        assert load_splats_ply(path).sh_degree == degree
        assert path.read_bytes().count(b"property float f_rest_") == count
    names = splat_ply_properties(0)
    names = names[:9] + [f"f_rest_{i}" for i in range(10)] + names[9:]
    path = _hand_written_ply(tmp_path / "ten.ply", [[0.0] * len(names)], names)
    with pytest.raises(ValueError, match=r"ten\.ply.*10 f_rest"):
        load_splats_ply(path)


@pytest.mark.parametrize("case", ["not_ply", "no_end", "missing", "truncated", "format", "list", "bad_line",
                                  "ascii_short", "gap"])
def test_malformed_ply_errors_name_the_file(tmp_path, case):
    path = save_splats_ply(_random(n=3, degree=1), tmp_path / "good.ply")
    data = path.read_bytes()
    head, body = data.split(b"end_header\n", 1)
    bad = tmp_path / f"{case}.ply"
    if case == "not_ply":
        bad.write_bytes(b"PK\x03\x04" + data[4:])
    elif case == "no_end":
        bad.write_bytes(head)
    elif case == "missing":
        head = head.replace(b"property float opacity\n", b"property float opacityx\n")
        bad.write_bytes(head + b"end_header\n" + body)
    elif case == "truncated":
        bad.write_bytes(data[:-5])
    elif case == "format":
        bad.write_bytes(data.replace(b"binary_little_endian", b"binary_middle_endian", 1))
    elif case == "list":
        bad.write_bytes(head + b"property list uchar int vertex_indices\nend_header\n" + body)
    elif case == "bad_line":
        bad.write_bytes(head + b"what is this\nend_header\n" + body)
    elif case == "ascii_short":
        _hand_written_ply(bad, [[0.0] * 17], splat_ply_properties(0), fmt="ascii")
        bad.write_bytes(bad.read_bytes().replace(b"element vertex 1", b"element vertex 2"))
    elif case == "gap":
        bad.write_bytes(data.replace(b"f_rest_0\n", b"f_rest_99\n", 1))
    with pytest.raises(ValueError, match=f"{case}.ply"):
        load_splats_ply(bad)
    with pytest.raises(FileNotFoundError, match="nowhere.ply"):
        load_splats_ply(tmp_path / "nowhere.ply")


def test_no_overwrite_without_permission(tmp_path):
    s = _random(n=2, degree=0)
    path = save_splats_ply(s, tmp_path / "sub" / "s.ply")
    with pytest.raises(FileExistsError, match="s.ply"):
        save_splats_ply(s, path)
    save_splats_ply(_random(n=3, degree=0), path, overwrite=True)
    assert len(load_splats_ply(path)) == 3
    splat = save_splat(s, tmp_path / "s.splat")
    with pytest.raises(FileExistsError, match="s.splat"):
        save_splat(s, splat)


def test_splats_validation():
    s = _random(n=2, degree=1)
    with pytest.raises(ValueError, match="shN"):
        Splats(**{**_fields(s), "shN": torch.zeros(2, 5, 3)})
    with pytest.raises(ValueError, match="opacity_logits"):
        Splats(**{**_fields(s), "opacity_logits": torch.zeros(2, 1)})


# ---------------------------------------------------------------------------------------------
# .splat
# ---------------------------------------------------------------------------------------------


def test_splat_record_layout_by_hand(tmp_path):
    s = Splats(
        means=torch.tensor([[1.0, 2.0, 3.0]]), quats=torch.tensor([[2.0, 0.0, 0.0, 0.0]]),
        log_scales=torch.log(torch.tensor([[0.5, 1.0, 2.0]])), opacity_logits=torch.tensor([0.0]),
        sh0=torch.tensor([[[0.0, 1.0, -1.0]]]), shN=torch.zeros(1, 3, 3),
    )
    data = save_splat(s, tmp_path / "one.splat").read_bytes()
    assert SPLAT_RECORD.itemsize == 32 and len(data) == 32
    g, b = int((0.5 + SH_C0) * 255), int((0.5 - SH_C0) * 255)
    expected = struct.pack("<3f3f4B4B", 1.0, 2.0, 3.0, 0.5, 1.0, 2.0, 127, g, b, 127, 255, 128, 128, 128)
    assert data == expected


def test_splat_order_is_descending_volume_times_opacity(tmp_path):
    log_scales = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    logits = torch.tensor([0.0, -3.0, 5.0, 3.0])
    key = torch.exp(log_scales.sum(1)) * torch.sigmoid(logits)
    s = Splats(means=torch.arange(12.0).reshape(4, 3), quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(4, 1),
               log_scales=log_scales, opacity_logits=logits, sh0=torch.zeros(4, 1, 3), shN=torch.zeros(4, 0, 3))
    table = np.fromfile(save_splat(s, tmp_path / "o.splat"), dtype=SPLAT_RECORD)
    order = torch.argsort(-key).tolist()
    np.testing.assert_array_equal(table["position"][:, 0], s.means[order, 0].numpy())


def test_splat_colour_and_alpha_bytes_round_trip(tmp_path):
    # Every possible colour and alpha byte comes back unchanged through load_splat -> save_splat.
    n = 256
    rgba = np.stack([np.arange(n), np.arange(n)[::-1], (np.arange(n) * 7) % 256, np.arange(n)], 1).astype(np.uint8)
    table = np.zeros(n, dtype=SPLAT_RECORD)
    table["position"] = np.arange(3 * n, dtype=np.float32).reshape(n, 3)  # distinct, to match records
    table["scale"] = 0.1
    table["rgba"] = rgba
    table["rot"] = [255, 128, 128, 128]
    path = tmp_path / "all.splat"
    path.write_bytes(table.tobytes())
    loaded = load_splat(path)
    assert loaded.sh_degree == 0 and torch.isfinite(loaded.opacity_logits).all()
    again = np.fromfile(save_splat(loaded, tmp_path / "again.splat"), dtype=SPLAT_RECORD)
    again = again[np.argsort(again["position"][:, 0])]
    np.testing.assert_array_equal(again["rgba"], rgba)
    np.testing.assert_array_equal(again["rot"], table["rot"])
    np.testing.assert_allclose(again["scale"], table["scale"], rtol=1e-6)  # float32 log / exp


def test_splat_round_trip_is_close(tmp_path):
    s = _random(n=50, degree=2, seed=3)
    back = load_splat(save_splat(s, tmp_path / "r.splat"))
    order = torch.argsort(back.means[:, 0])
    ref = torch.argsort(s.means[:, 0])
    assert torch.equal(back.means[order], s.means[ref])
    torch.testing.assert_close(back.scales[order], s.scales[ref], rtol=1e-6, atol=0)
    torch.testing.assert_close(back.rgb[order], s.rgb[ref], atol=1 / 255, rtol=0)
    torch.testing.assert_close(back.opacities[order], s.opacities[ref], atol=1 / 255, rtol=0)
    dot = (back.unit_quats[order] * s.unit_quats[ref]).sum(1).abs()
    assert (dot > math.cos(math.radians(3) / 2)).all()  # within 3 degrees
    assert back.shN.shape == (50, 0, 3)


def test_splat_bad_size(tmp_path):
    path = tmp_path / "bad.splat"
    path.write_bytes(b"\x00" * 33)
    with pytest.raises(ValueError, match="bad.splat"):
        load_splat(path)
    with pytest.raises(FileNotFoundError, match="none.splat"):
        load_splat(tmp_path / "none.splat")


# ---------------------------------------------------------------------------------------------
# Initialisation from points
# ---------------------------------------------------------------------------------------------


def test_splats_from_points_like_3dgs():
    grid = torch.stack(torch.meshgrid(*[torch.arange(5.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    rgb = torch.rand(len(grid), 3, dtype=torch.float64)
    s = splats_from_points(Points(xyz=grid.double(), rgb=rgb), sh_degree=2, init_opacity=0.1)
    assert len(s) == 125 and s.sh_degree == 2 and s.shN.shape == (125, 8, 3) and (s.shN == 0).all()
    assert s.means.dtype == torch.float32
    # Every lattice point has its 3 nearest neighbours at distance 1: log scale 0.
    torch.testing.assert_close(s.log_scales, torch.zeros(125, 3))
    torch.testing.assert_close(s.opacities, torch.full((125,), 0.1))
    assert (s.quats == torch.tensor([1.0, 0, 0, 0])).all()
    torch.testing.assert_close(s.rgb, rgb.float())
    # Neighbours at 1, 2 and 3: sqrt(mean of squares).
    line = Points(xyz=torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0], [6.0, 0, 0]]))
    s = splats_from_points(line, sh_degree=0)
    assert float(s.scales[0, 0]) == pytest.approx(math.sqrt((1 + 9 + 36) / 3))
    torch.testing.assert_close(s.sh0, torch.zeros(4, 1, 3))  # no colours: grey
    single = splats_from_points(Points(xyz=torch.zeros(1, 3)))
    assert float(single.scales[0, 0]) == pytest.approx(math.sqrt(1e-7))
    dup = splats_from_points(Points(xyz=torch.zeros(2, 3)))
    assert torch.isfinite(dup.log_scales).all()
    with pytest.raises(ValueError, match="empty"):
        splats_from_points(Points(xyz=torch.zeros(0, 3)))


def test_loaded_splats_render():
    from scenegrad.render.gaussians import rasterize_gaussians

    s = splats_from_points(Points(xyz=torch.tensor([[0.0, 0.0, 3.0], [0.2, 0.1, 3.5]]),
                                  rgb=torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])), sh_degree=1,
                           init_opacity=0.5)
    s.log_scales = s.log_scales + 1.0
    K = torch.tensor([[[40.0, 0, 16], [0, 40.0, 12], [0, 0, 1]]])
    out = rasterize_gaussians(s.means, s.quats, s.scales, s.opacities, s.sh_coeffs, torch.eye(4)[None], K, 32, 24,
                              sh_degree=s.sh_degree, backend="reference")
    assert out.visible.all() and out.colors[0, 12, 16, 0] > out.colors[0, 12, 16, 1]
