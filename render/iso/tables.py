"""The marching-cubes case tables, derived here from first principles (no copied table).

Cube corners ``c = 0..7`` sit at offsets ``(c & 1, c >> 1 & 1, c >> 2 & 1)`` along the grid's
``(i, j, k)`` axes; edge ``e`` joins corners ``EDGE_CORNERS[e]`` along axis ``EDGE_AXIS[e]``
(edges 0-3 along i, 4-7 along j, 8-11 along k). A corner is *inside* when its value is below the
iso level; case ``sum(inside[c] << c)`` indexes the tables.

Each face of the cube is walked counter-clockwise as seen from outside the cube. Every maximal run
of inside corners along that walk is cut off by one segment, from the crossing where the walk
leaves the run to the crossing where it entered it. On an ambiguous face (two diagonal inside
corners) that gives two segments and keeps the inside corners apart; the rule depends only on
the face's four signs, so the two cubes sharing a face cut it alike and the surface is closed
(watertight). Segments chain into loops through the 12 edges (each crossed edge ends a segment on
one of its faces and starts one on the other). Each loop is triangulated with no diagonal between
two vertices on one face of the cube: the cube across that face could pick the same diagonal, and
the edge would then belong to four triangles; with this rule every mesh edge belongs to exactly two
(2-manifold). Triangles are wound so that their right-hand normal points from inside to outside,
i.e. towards increasing values (outward for a signed distance field that is negative inside).
"""

from __future__ import annotations

import functools

import numpy as np

CORNER_OFFSETS = np.array([(c & 1, (c >> 1) & 1, (c >> 2) & 1) for c in range(8)], dtype=np.int64)
EDGE_AXIS = np.array([0] * 4 + [1] * 4 + [2] * 4, dtype=np.int64)
EDGE_CORNERS = np.array(
    [(c, c | 1) for c in (0, 2, 4, 6)] + [(c, c | 2) for c in (0, 1, 4, 5)] + [(c, c | 4) for c in (0, 1, 2, 3)],
    dtype=np.int64,
)
_EDGE_OF = {frozenset(map(int, pair)): e for e, pair in enumerate(EDGE_CORNERS)}


def _face_cycles() -> list[list[int]]:
    """The 6 faces as corner cycles, counter-clockwise seen from outside (right-hand normal outward)."""
    cycles = []
    for axis in range(3):
        for side in (0, 1):
            corners = [c for c in range(8) if CORNER_OFFSETS[c, axis] == side]
            centre = CORNER_OFFSETS[corners].mean(0)
            u, v = [a for a in range(3) if a != axis]
            corners.sort(key=lambda c: np.arctan2(CORNER_OFFSETS[c, v] - centre[v], CORNER_OFFSETS[c, u] - centre[u]))
            p = CORNER_OFFSETS[corners].astype(float)
            normal = np.cross(p[1] - p[0], p[2] - p[1])
            outward = np.zeros(3)
            outward[axis] = 1.0 if side == 1 else -1.0
            if normal @ outward < 0:
                corners.reverse()
            cycles.append(corners)
    return cycles


def _case_loops(case: int, cycles: list[list[int]]) -> list[list[int]]:
    inside = [(case >> c) & 1 == 1 for c in range(8)]
    nxt: dict[int, int] = {}
    for cyc in cycles:
        for m in range(4):
            if inside[cyc[m]] and not inside[cyc[m - 1]]:  # a run of inside corners starts at m
                enter = _EDGE_OF[frozenset((cyc[m - 1], cyc[m]))]
                last = m
                while inside[cyc[(last + 1) % 4]]:
                    last += 1
                leave = _EDGE_OF[frozenset((cyc[last % 4], cyc[(last + 1) % 4]))]
                assert leave not in nxt
                nxt[leave] = enter
    loops = []
    while nxt:
        start = min(nxt)
        loop = [start]
        e = nxt.pop(start)
        while e != start:
            loop.append(e)
            e = nxt.pop(e)
        loops.append(loop)
    return loops


def _orientation_sign(cycles: list[list[int]]) -> int:
    """+1 if loops as built have right-hand normals pointing from inside to outside, else -1."""
    mid = CORNER_OFFSETS[EDGE_CORNERS].mean(1)  # [12, 3] edge midpoints
    (loop,) = _case_loops(1, cycles)  # corner 0 alone inside
    p = mid[loop]
    normal = np.cross(p[1] - p[0], p[2] - p[0])
    return 1 if normal @ (np.full(3, 0.5) - CORNER_OFFSETS[0]) > 0 else -1


def _triangulations(poly: list[int]):
    """Every triangulation of a polygon (vertices in order), each triangle in the polygon's order."""
    if len(poly) == 3:
        yield [tuple(poly)]
        return
    a, b = poly[0], poly[-1]
    for k in range(1, len(poly) - 1):
        left = [[]] if k == 1 else list(_triangulations(poly[: k + 1]))
        right = [[]] if k == len(poly) - 2 else list(_triangulations(poly[k:]))
        for lt in left:
            for rt in right:
                yield lt + rt + [(a, poly[k], b)]


def _triangulate(loop: list[int], faces_of: list[set[int]]) -> list[tuple[int, int, int]]:
    """The first triangulation of ``loop`` whose diagonals join no two vertices on one cube face."""
    n = len(loop)
    pos = {e: m for m, e in enumerate(loop)}
    for tris in _triangulations(loop):
        diagonals = [(u, v) for t in tris for u, v in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))
                     if (pos[u] - pos[v]) % n not in (1, n - 1)]
        if not any(faces_of[u] & faces_of[v] for u, v in diagonals):
            return tris
    raise AssertionError(f"no face-safe triangulation of loop {loop}")  # never: checked for all 256 cases


@functools.lru_cache(maxsize=1)
def triangle_table() -> tuple[np.ndarray, np.ndarray]:
    """``(tris [256, M, 3] int8 edge indices padded with -1, counts [256] int8)``; ``M`` is the
    largest number of triangles of any case."""
    cycles = _face_cycles()
    sign = _orientation_sign(cycles)
    faces_of: list[set[int]] = [set() for _ in range(12)]
    for f, cyc in enumerate(cycles):
        for m in range(4):
            faces_of[_EDGE_OF[frozenset((cyc[m - 1], cyc[m]))]].add(f)
    per_case = []
    for case in range(256):
        tris = []
        for loop in _case_loops(case, cycles):
            tris += _triangulate(loop[::-1] if sign < 0 else loop, faces_of)
        per_case.append(tris)
    width = max(len(t) for t in per_case)
    table = np.full((256, width, 3), -1, dtype=np.int8)
    counts = np.zeros(256, dtype=np.int8)
    for case, tris in enumerate(per_case):
        counts[case] = len(tris)
        if tris:
            table[case, : len(tris)] = tris
    return table, counts
