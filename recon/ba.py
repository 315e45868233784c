"""Bundle adjustment in torch: Levenberg-Marquardt with a Schur complement, and a differentiable layer.

:func:`bundle_adjust` refines cameras (pose, optionally focal lengths, principal point and the OpenCV
distortion ``k1, k2, p1, p2, k3``) and 3D points so that the points reproject onto their 2D observations.
Cameras follow :mod:`scenegrad.render.cameras` (OpenCV world-to-camera ``x_c = R X + t``, pixels with
centres at ``i + 0.5``); models ``"pinhole"`` and ``"opencv"`` (COLMAP's SIMPLE_RADIAL is ``"opencv"``
with ``dist = (k1, 0, 0, 0, 0)``, RADIAL ``(k1, k2, 0, 0, 0)``, OPENCV ``(k1, k2, p1, p2, 0)``; every
distortion coefficient is honoured by the projection, each can be refined or held).

**Cost.** For observation ``i`` of point ``p`` in camera ``j`` with pixel ``y_i`` and weight ``c_i >= 0``,
the residual is ``r_i = pi_j(R_j X_p + t_j) - y_i`` (2 pixels) and the cost
``E = 1/2 sum_i c_i rho(|r_i|^2)`` with the robust loss ``rho`` of scale ``s`` (pixels):
``"linear"`` ``rho(q) = q``; ``"huber"`` ``rho(q) = q`` if ``q <= s^2`` else ``2 s sqrt(q) - s^2``;
``"cauchy"`` ``rho(q) = s^2 log(1 + q / s^2)``. The robust loss is minimised by iteratively
reweighted least squares: each linearisation uses the weights ``w_i = c_i rho'(|r_i|^2)``, so the
gradient ``g = sum_i w_i J_i^T r_i`` is exact and ``H = sum_i w_i J_i^T J_i`` is the Gauss-Newton matrix.

**Parameters and Jacobians (analytic).** Each update ``delta`` acts on the current values:
``t <- t + dt``, ``R <- exp([dphi]_x) R`` (so3 increment on the left, camera frame), ``X <- X + dX``,
``(fx, fy) <- (fx, fy) exp(df)`` (``"focal"``: the aspect ratio is kept) or ``fx <- fx exp(dfx)``,
``fy <- fy exp(dfy)`` (``"focal_xy"``), ``(cx, cy) <- (cx, cy) + dc``, ``k <- k + dk`` for each refined
distortion coefficient. With ``x_c = R X + t``, ``n = x_c[:2] / z``, ``d = distort(n)``, ``u = f d + c``:
``du/dx_c = diag(f) (dd/dn) [[1/z, 0, -n_x/z], [0, 1/z, -n_y/z]] =: A``,
``du/ddt = A``, ``du/ddphi = -A [R X]_x``, ``du/dX = A R``, ``du/ddf = f * d``, ``du/ddfx = (fx d_x, 0)``,
``du/ddfy = (0, fy d_y)``, ``du/ddc = I``, and with ``r2 = |n|^2``: ``du/ddk1 = f * n r2``,
``du/ddk2 = f * n r2^2``, ``du/ddk3 = f * n r2^3``, ``du/ddp1 = f * (2 n_x n_y, r2 + 2 n_y^2)``,
``du/ddp2 = f * (r2 + 2 n_x^2, 2 n_x n_y)``.

**Solver.** Levenberg-Marquardt with Marquardt's scaling: ``(H + lambda diag(H)) delta = -g``,
the gain ratio updating ``lambda`` (Nielsen's rule). ``H`` has the block structure
``[[U, W], [W^T, V]]`` (cameras, points) with ``V`` block-diagonal (3x3 per point): the points are
eliminated, ``S = U - W V^-1 W^T``, ``S delta_c = -g_c + W V^-1 g_p``, then
``delta_p = V^-1 (-g_p - W^T delta_c)``. ``V^-1`` is a batched 3x3 inverse; ``W V^-1 W^T`` is a
sum over pairs of observations of the same point. Points seen by a few neighbouring cameras (tracks
along a video) are summed in chunks by one dense product each: a chunk's ``W V^-1`` and ``W`` laid
out as ``[cameras x C, points x 3]`` matrices, whose product sums every pair of the chunk at once;
the other points pair by pair, reduced per camera pair with ``index_add_``;
``S`` (``6 N + k G`` unknowns for ``N`` cameras and ``G`` intrinsic groups with ``k`` refined
intrinsics each) is solved densely by Cholesky. Work is float64 internally, whatever the input dtype.
Once a step's predicted decrease falls below the cost's float resolution (the rounding of ``uv - y``),
steps are accepted without a measurable decrease, the damping is lowered towards Newton steps and
the robust loss's exact curvature is used (below): this resolves the optimum to the precision of the
parameters, not only of the cost, which the implicit gradients rely on. It stops when an accepted
step decreases the cost by less than ``ftol`` (relative), when the step is below ``xtol``, after ten
such unresolvable steps, or when no damping gives a decrease.

**Gauge.** Without fixed cameras or points, the problem is invariant to a similarity transform of
the world. ``gauge="auto"`` fixes the pose of the first camera and, to fix the scale, one
translation coordinate of the free camera farthest from it (the coordinate along which the scale
moves it most); with one fixed camera only the scale is fixed that way; with two or more fixed
cameras, or any fixed point, nothing is added. ``gauge="none"`` adds nothing (the LM damping keeps
the steps finite; the differentiable layer then needs the user's masks to fix the gauge).

**Differentiable layer (implicit function theorem).** At the optimum ``theta*`` the gradient
vanishes: ``g(theta*, y, c, kappa) = 0`` (``y`` observations, ``c`` weights, ``kappa`` fixed
intrinsics). Differentiating, ``H dtheta* = -(dg/dy) dy - ...`` with ``H = dg/dtheta``, so for a
loss ``L`` with ``v = dL/dtheta*`` the backward solves ``H u = v`` once and returns
``dL/dy = -(dg/dy)^T u`` (and the same for ``c`` and ``kappa``). ``H`` is approximated by the
normal matrix of the solve (same Schur structure, no damping) with the robust loss's exact curvature,
``sum_i J_i^T c_i (rho' I + 2 rho'' r_i r_i^T) J_i`` (Triggs' correction; plain Gauss-Newton for
``"linear"``); ``(dg/dy)^T u`` is a vector-Jacobian product of the closed-form gradient, taken by
autograd. ``backward_refinements`` steps of iterative refinement ``u <- u + H_GN^-1 (v - H u)`` with
exact Hessian-vector products (autograd, double backward) add the residual-curvature terms
``sum_i c_i rho' r_i . d^2 r_i`` that the normal matrix drops, so the gradient is the exact
derivative of the optimum (it matches central finite differences of the full solve to ~1e-6).
Gradients flow to ``observations.uv``, ``observations.weights``
and the cameras' ``fx, fy, cx, cy, dist`` (those not refined; a refined intrinsic's optimum does
not depend on its starting value, except that a refined ``"focal"`` keeps the input ``fy / fx``, whose
gradient is not propagated). The starting ``R, t`` and points receive no gradient (the optimum does
not depend on the start). Fixed (gauge) parameters have zero gradient.

>>> import torch
>>> from scenegrad.render.cameras import Cameras, project
>>> g = torch.Generator().manual_seed(0)
>>> pts = torch.randn(50, 3, generator=g, dtype=torch.float64)
>>> ang = torch.linspace(-0.3, 0.3, 4, dtype=torch.float64)
>>> R = torch.stack([torch.tensor([[c, 0, -s], [0, 1, 0], [s, 0, c]]) for c, s in zip(ang.cos(), ang.sin())])
>>> t = torch.tensor([0.0, 0.0, 6.0], dtype=torch.float64).expand(4, 3)
>>> cams = Cameras(300.0, 300.0, 160.0, 120.0, R, t, 320, 240)
>>> uv, _ = project(cams, pts)
>>> obs = Observations(torch.arange(4).repeat_interleave(50), torch.arange(50).repeat(4), uv.reshape(-1, 2))
>>> res = bundle_adjust(cams, pts + 0.05 * torch.randn(50, 3, generator=g, dtype=torch.float64), obs)
>>> res.rmse_initial > 1.0, res.rmse_final < 1e-6
(True, True)

As a layer: gradients of the optimised points with respect to the observations.

>>> y = obs.uv.clone().requires_grad_()
>>> res = bundle_adjust(cams, pts, Observations(obs.camera_idx, obs.point_idx, y))
>>> res.points[:, 2].sum().backward()
>>> y.grad.shape, bool(y.grad.abs().max() > 0)
(torch.Size([200, 2]), True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from scenegrad.render import backend as _backend
from scenegrad.render.cameras import Cameras, _distort_opencv, _opencv_jacobian
from scenegrad.render.rotations import so3_exp

__all__ = ["LOSSES", "INTRINSICS", "Observations", "BAOptions", "BAResult", "bundle_adjust", "reprojection_residuals"]

LOSSES = ("linear", "huber", "cauchy")
INTRINSICS = ("focal", "principal_point", "k1", "focal_xy", "k2", "p1", "p2", "k3")
# refined intrinsic -> its columns (``"focal"``: one log-scale of fx and fy; ``"focal_xy"``: one each)
_COLUMNS = {"focal": ("f",), "focal_xy": ("fx", "fy"), "principal_point": ("cx", "cy"), "k1": ("k1",),
            "k2": ("k2",), "p1": ("p1",), "p2": ("p2",), "k3": ("k3",)}
# the native kernel's codes of the intrinsic columns and losses (cuda/ba/linearise.h)
_COLUMN_CODES = {"f": 0, "fx": 1, "fy": 2, "cx": 3, "cy": 4, "k1": 5, "k2": 6, "k3": 7, "p1": 8, "p2": 9}
_LOSS_CODES = {"linear": 0, "huber": 1, "cauchy": 2}
_DIST_INDEX = {"k1": 0, "k2": 1, "p1": 2, "p2": 3, "k3": 4}  # position in the OpenCV ``dist [N, 5]``
_COST_RESOLUTION = 1e-13  # relative change of the cost below which float64 cannot tell a decrease
_PAIR_CHUNK = 1 << 14  # pairs of observations per Schur chunk: its [C, C] blocks stay in cache (2x faster than 1 << 18)
_DENSE_POINTS = 256  # points per dense Schur chunk
# a chunk is summed densely when its product costs at most this many times the pair products it
# replaces (one matrix product does the work of many small scattered ones: about 20x faster per term)
_DENSE_WASTE = 8.0


# ----------------------------------------------------------------------------------------------
# Public types
# ----------------------------------------------------------------------------------------------


@dataclass
class Observations:
    """``O`` 2D observations of points in cameras.

    Fields:
        camera_idx: ``[O]`` int64 camera of each observation (``0 <= camera_idx < N``).
        point_idx: ``[O]`` int64 point of each observation (``0 <= point_idx < M``).
        uv: ``[O, 2]`` float observed pixels (differentiable through :func:`bundle_adjust`).
        weights: optional ``[O]`` float confidences ``c_i >= 0`` (1 when ``None``; differentiable).
    """

    camera_idx: Tensor
    point_idx: Tensor
    uv: Tensor
    weights: Tensor | None = None


@dataclass
class BAOptions:
    """Solver options.

    loss / loss_scale: robust loss (``"linear"``, ``"huber"``, ``"cauchy"``) and its scale in pixels.
    max_iterations: LM iterations (linearisations). ftol: stop when an accepted step lowers the cost
    by less than ``ftol * cost``. xtol: stop when the step is below ``xtol * (|params| + xtol)``.
    initial_damping: starting ``lambda``. backward_refinements: exact-Hessian refinement steps of the
    implicit gradient (0: plain Gauss-Newton). backend: who linearises (the Jacobians and the blocks of the
    normal equations) and sums the points' terms of the reduced camera system, ``"auto"`` / ``"native"`` /
    ``"reference"`` as :mod:`scenegrad.render.backend` (area ``"ba"``; ``None``: ``$SCENEGRAD_BACKEND`` or
    ``"auto"``); the results agree to rounding.
    """

    loss: str = "huber"
    loss_scale: float = 1.0
    max_iterations: int = 50
    ftol: float = 1e-10
    xtol: float = 1e-12
    initial_damping: float = 1e-4
    backward_refinements: int = 2
    backend: str | None = None


@dataclass
class BAResult:
    """Output of :func:`bundle_adjust`.

    cameras: the refined cameras (input dtype and device). points: ``[M, 3]`` refined points.
    cost_initial / cost_final: robust cost ``E``. rmse_initial / rmse_final: root mean square of
    the residual norms (pixels) over observations in front of their camera, unweighted.
    residuals: ``[O, 2]`` final residuals (pixels). weights: ``[O]`` final IRLS weights
    ``c_i rho'(|r_i|^2)`` (0 behind the camera). iterations: linearisations done. converged: a
    tolerance was met (``False``: out of iterations or the damping blew up). reason: why it stopped.
    """

    cameras: Cameras
    points: Tensor
    cost_initial: float
    cost_final: float
    rmse_initial: float
    rmse_final: float
    residuals: Tensor
    weights: Tensor
    iterations: int
    converged: bool
    reason: str


# ----------------------------------------------------------------------------------------------
# Problem structure (constant during a solve) and state
# ----------------------------------------------------------------------------------------------


@dataclass
class _Structure:
    cam: Tensor  # [O] camera of each observation
    pt: Tensor  # [O] point of each observation
    group: Tensor  # [N] intrinsic group of each camera
    n_cams: int
    n_points: int
    n_groups: int
    intr_cols: tuple[str, ...]  # refined intrinsic columns among ("f", "fx", "fy", "cx", "cy", "k1", "k2", ...)
    pose_free: Tensor  # [N, 6] bool (dt, dphi)
    point_free: Tensor  # [M] bool
    intr_free: Tensor  # [G, k] bool
    model: str
    loss: str
    scale: float
    min_depth: float
    # the reference's plan of the Schur sums (built by reference_plan(), when the reference first needs it):
    dense: _DensePlan | None = None  # points whose W V^-1 W^T terms are summed by dense products
    pair_obs: Tensor | None = None  # [Q] observations of the other points
    pair_a: Tensor | None = None  # [P] pairs of observations of the same point, as positions in pair_obs
    pair_b: Tensor | None = None  # [P]
    _pair_chunks: list | None = None
    _cache: dict = field(default_factory=dict)  # per-solve index tensors (scatter_rows, per_camera_gram)
    backend: str = "reference"  # of the Schur complement's point terms: "native" (scenegrad.cuda) or "reference"

    @property
    def n_cam_params(self) -> int:
        return 6 + len(self.intr_cols)

    @property
    def size(self) -> int:
        return 6 * self.n_cams + len(self.intr_cols) * self.n_groups

    def cam_map(self) -> Tensor:
        """``[N, C]`` positions of each camera's parameters in the reduced camera vector."""
        n, k = self.n_cams, len(self.intr_cols)
        pose = torch.arange(6 * n, device=self.cam.device).view(n, 6)
        intr = 6 * n + k * self.group[:, None] + torch.arange(k, device=self.cam.device)
        return torch.cat([pose, intr], dim=1)

    def reference_plan(self) -> None:
        """Build ``dense``, ``pair_obs``, ``pair_a`` and ``pair_b`` (once): only the torch reference of the
        Schur sums reads them, so a solve by the native kernel never builds them."""
        if self.dense is not None:
            return
        cam, pt = self.cam, self.pt
        self.dense = _dense_plan(cam, pt, self.n_cams, self.n_points, self.cam_map(), self.size)
        in_dense = torch.zeros(len(cam), dtype=torch.bool, device=cam.device)
        in_dense[self.dense.obs] = True
        self.pair_obs = torch.nonzero(~in_dense)[:, 0]
        self.pair_a, self.pair_b = _observation_pairs(pt[self.pair_obs], self.n_points)

    def pair_chunks(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Chunks of ``(pair_a, pair_b, flat)`` with ``flat`` the positions in the flattened ``[S, S]``
        reduced matrix of the chunk's ``[C, C, n]`` blocks (entry ``(i, j)`` of pair ``k`` at ``[i, j, k]``;
        computed once per solve)."""
        if self._pair_chunks is None:
            self.reference_plan()
            cmap, S, self._pair_chunks = self.cam_map(), self.size, []
            for s in range(0, len(self.pair_a), _PAIR_CHUNK):
                a, b = self.pair_a[s:s + _PAIR_CHUNK], self.pair_b[s:s + _PAIR_CHUNK]
                ca, cb = self.cam[self.pair_obs[a]], self.cam[self.pair_obs[b]]
                flat = (cmap[ca].T[:, None, :] * S + cmap[cb].T[None, :, :]).reshape(-1)
                self._pair_chunks.append((a, b, flat))
        return self._pair_chunks

    def scatter_rows(self, by: str, x: Tensor) -> Tensor:
        """``out[k] = sum of x[i]`` over the observations ``i`` of camera (``by="cam"``) or point
        (``"pt"``) ``k``, for ``x [O, ...]``: one flat ``index_add_`` (faster than adding rows on the
        CPU), its index built once per solve."""
        idx, n = (self.cam, self.n_cams) if by == "cam" else (self.pt, self.n_points)
        width = x[0].numel()
        flat = self._cache.get((by, width))
        if flat is None:
            flat = (idx[:, None] * width + torch.arange(width, device=idx.device)).reshape(-1)
            self._cache[(by, width)] = flat
        return x.new_zeros(n * width).index_add_(0, flat, x.reshape(-1)).view(n, *x.shape[1:])

    def per_camera_gram(self, a: Tensor, b: Tensor) -> Tensor:
        """``[N, C, C]``: ``sum a_i^T b_i`` over each camera's observations ``i``, for ``a, b [O, q, C]``:
        one matrix product per camera (a batched product per observation, then a scatter, is several
        times slower on the CPU)."""
        key = "cameras in order"
        if key not in self._cache:
            order = torch.argsort(self.cam, stable=True)
            self._cache[key] = (order, torch.bincount(self.cam, minlength=self.n_cams).tolist())
        order, counts = self._cache[key]
        C = a.shape[2]
        out = a.new_zeros(self.n_cams, C, C)
        for i, (x, y) in enumerate(zip(a[order].split(counts), b[order].split(counts), strict=True)):
            if len(x):
                out[i] = x.reshape(-1, C).T @ y.reshape(-1, C)
        return out

    def schur_index(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(pos [O, C], order [O], starts [M + 1])`` of the native Schur kernel: each observation's camera
        parameters' positions in the reduced system, the observations grouped by point and where each
        point's group starts (computed once per solve)."""
        key = "schur index"
        if key not in self._cache:
            order = torch.argsort(self.pt, stable=True)
            counts = torch.bincount(self.pt, minlength=self.n_points)
            starts = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
            self._cache[key] = (self.cam_map()[self.cam].contiguous(), order, starts)
        return self._cache[key]

    def cam_free(self) -> Tensor:
        """``[N, C]`` free mask of each camera's parameters."""
        return torch.cat([self.pose_free, self.intr_free[self.group]], dim=1)

    def native_masks(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(cols [k], cam_free [N, C], point_free [M])`` as the native linearisation takes them: the refined
        intrinsics' codes (int64) and the free masks as float64 (computed once per solve)."""
        key = "native masks"
        if key not in self._cache:
            dev = self.cam.device
            cols = torch.tensor([_COLUMN_CODES[name] for name in self.intr_cols], dtype=torch.long, device=dev)
            self._cache[key] = (cols, self.cam_free().double().contiguous(), self.point_free.double().contiguous())
        return self._cache[key]


@dataclass
class _State:
    R: Tensor  # [N, 3, 3]
    t: Tensor  # [N, 3]
    X: Tensor  # [M, 3]
    fx: Tensor  # [N]
    fy: Tensor
    cx: Tensor
    cy: Tensor
    dist: Tensor | None  # [N, 5] for "opencv"


@dataclass
class _DensePlan:
    """Chunks of points whose Schur terms ``sum_(a, b) F_a W_b^T`` (``F = W V^-1``, pairs ``a, b`` of
    observations of one point, ``a == b`` included) are summed by one matrix product per chunk: chunk
    ``i`` lays its observations out as ``[r_i C, 3 n_i]`` matrices (row: the observation's camera among
    the chunk's ``r_i`` cameras, times the ``C`` camera parameters; column: its point among the chunk's
    ``n_i`` points, times 3), stored one after the other in a flat buffer. No point has two
    observations in one camera (those points are left to the pair sums), so every entry has one source."""

    obs: Tensor  # [Od] observations of the dense chunks
    pos: Tensor  # [Od * C * 3] flat buffer position of each one's [C, 3] entries
    shapes: list[tuple[int, int, int]]  # (offset, r_i C, 3 n_i) per chunk
    size: int  # buffer length
    target: Tensor  # flat positions in the [S, S] reduced matrix of every chunk's [r_i C, r_i C] product
    _buffers: dict = field(default_factory=dict)

    def layout(self, x: Tensor, slot: int) -> Tensor:
        """The chunks' matrices of per-observation ``x [O, C, 3]``, in one flat buffer. Outside autograd
        the buffer (``slot`` 0 or 1) is kept between calls: the same entries are written every time and
        the others stay zero, so it needs no zeroing (a fresh one costs page faults)."""
        values = x[self.obs].reshape(-1)
        if x.requires_grad:
            return x.new_zeros(self.size).index_put((self.pos,), values)
        key = (slot, x.dtype, x.device)
        if key not in self._buffers:
            self._buffers[key] = x.new_zeros(self.size)
        return self._buffers[key].index_put_((self.pos,), values)

    def products(self, F: Tensor, W: Tensor) -> Tensor:
        """``[T]`` every chunk's ``F W^T`` (flattened, in the order of ``target``)."""
        if not self.shapes:
            return F.new_zeros(0)
        bf, bw = self.layout(F, 0), self.layout(W, 1)
        out = [bf[o:o + rc * c3].view(rc, c3) @ bw[o:o + rc * c3].view(rc, c3).T for o, rc, c3 in self.shapes]
        return torch.cat([b.reshape(-1) for b in out])


def _dense_plan(cam: Tensor, pt: Tensor, n_cams: int, n_points: int, cmap: Tensor, S: int) -> _DensePlan:
    """Chunks of ``_DENSE_POINTS`` points sorted by the span of cameras that see them (in powers of two)
    then by their first camera, so a chunk's points share most of their cameras; a chunk is kept when
    its dense product costs at most ``_DENSE_WASTE`` times its pair products (``r^2 n <= waste sum k^2``
    for ``r`` cameras, ``n`` points seen ``k`` times each), else its points are left to the pair sums."""
    dev, C = cam.device, cmap.shape[1]
    k = torch.bincount(pt, minlength=n_points)
    # points with two observations in one camera: left to the pair sums
    repeated = torch.zeros(n_points, dtype=torch.bool, device=dev)
    keys, counts = torch.unique(pt * n_cams + cam, return_counts=True)
    repeated[keys[counts > 1] // n_cams] = True
    lo = torch.full((n_points,), n_cams, device=dev).scatter_reduce(0, pt, cam, "amin")
    hi = torch.full((n_points,), -1, device=dev).scatter_reduce(0, pt, cam, "amax")
    seen = torch.nonzero((k > 0) & ~repeated)[:, 0]
    span_class = torch.ceil(torch.log2((hi - lo + 1)[seen].double())).long()
    order = torch.argsort(span_class * (n_cams + 1) + lo[seen], stable=True)
    seen, span_class = seen[order], span_class[order]
    # chunk of each seen point: runs of _DENSE_POINTS within each span class
    first_of_class = torch.ones(len(seen), dtype=torch.bool, device=dev)
    first_of_class[1:] = span_class[1:] != span_class[:-1]
    class_start = torch.cummax(torch.where(first_of_class, torch.arange(len(seen), device=dev), 0), 0)[0]
    new_chunk = first_of_class | ((torch.arange(len(seen), device=dev) - class_start) % _DENSE_POINTS == 0)
    chunk_of_seen = torch.cumsum(new_chunk.long(), 0) - 1
    n_chunks = int(chunk_of_seen[-1]) + 1 if len(seen) else 0
    chunk = torch.full((n_points,), -1, device=dev)
    chunk[seen] = chunk_of_seen
    col = torch.zeros(n_points, dtype=torch.long, device=dev)
    col[seen] = torch.arange(len(seen), device=dev) - torch.nonzero(new_chunk)[:, 0][chunk_of_seen]
    # each chunk's cameras: distinct (chunk, camera) keys of its observations
    obs_chunk = chunk[pt]
    keys, row_key = torch.unique(torch.where(obs_chunk >= 0, obs_chunk * n_cams + cam, -1), return_inverse=True)
    if len(keys) and int(keys[0]) < 0:  # observations of points outside the chunks
        keys, row_key = keys[1:], row_key - 1
    key_chunk = keys // n_cams
    r = torch.bincount(key_chunk, minlength=n_chunks)
    n = torch.bincount(chunk_of_seen, minlength=n_chunks)
    k2 = torch.zeros(n_chunks, dtype=torch.float64, device=dev).index_add_(0, chunk_of_seen, k[seen].double() ** 2)
    dense = r.double() ** 2 * n <= _DENSE_WASTE * k2
    first_key = torch.cumsum(r, 0) - r
    obs = torch.nonzero(obs_chunk >= 0)[:, 0]
    obs = obs[dense[obs_chunk[obs]]]
    shapes, offsets, targets, offset = [], torch.zeros(n_chunks, dtype=torch.long, device=dev), [], 0
    for i in torch.nonzero(dense)[:, 0].tolist():
        ri, ni = int(r[i]), int(n[i])
        offsets[i] = offset
        shapes.append((offset, ri * C, 3 * ni))
        rows = cmap[keys[int(first_key[i]):int(first_key[i]) + ri] % n_cams].reshape(-1)  # [r C] positions in S
        targets.append((rows[:, None] * S + rows[None, :]).reshape(-1))
        offset += ri * C * 3 * ni
    oc = obs_chunk[obs]
    stride = 3 * n[oc]
    row = row_key[obs] - first_key[oc]
    base = offsets[oc] + row * C * stride + 3 * col[pt[obs]]
    pos = (base[:, None, None] + torch.arange(C, device=dev)[None, :, None] * stride[:, None, None]
           + torch.arange(3, device=dev)[None, None, :]).reshape(-1)
    target = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long, device=dev)
    return _DensePlan(obs, pos, shapes, offset, target)


def _observation_pairs(pt: Tensor, n_points: int) -> tuple[Tensor, Tensor]:
    """All pairs ``(a, b)``, ``a != b``, of observations of the same point, each unordered pair once."""
    order = torch.argsort(pt, stable=True)
    counts = torch.bincount(pt, minlength=n_points)
    starts = torch.cumsum(counts, 0) - counts
    sorted_pt = pt[order]
    # sorted observation s pairs with the later observations of its point: s+1 .. end of the point
    rank = torch.arange(len(order), device=pt.device) - starts[sorted_pt]
    n_after = counts[sorted_pt] - 1 - rank
    a = torch.repeat_interleave(torch.arange(len(order), device=pt.device), n_after)
    ends = torch.cumsum(n_after, 0)
    offset = torch.arange(len(a), device=pt.device) - torch.repeat_interleave(ends - n_after, n_after)
    return order[a], order[a + 1 + offset]


# ----------------------------------------------------------------------------------------------
# Projection, residuals and Jacobians
# ----------------------------------------------------------------------------------------------


def _sq(r: Tensor) -> Tensor:
    """``[O]`` squared norms of residuals ``r [O, 2]`` (torch's sum over a dimension of 2 is several times
    slower on the CPU than the two products)."""
    return r[:, 0] * r[:, 0] + r[:, 1] * r[:, 1]


def _rtJ(r: Tensor, J: Tensor) -> Tensor:
    """``[O, k]`` products ``r^T J`` of residuals ``r [O, 2]`` and Jacobians ``J [O, 2, k]`` (as :func:`_sq`)."""
    return r[:, 0, None] * J[:, 0] + r[:, 1, None] * J[:, 1]


def _rho(q: Tensor, loss: str, s: float) -> tuple[Tensor, Tensor, Tensor]:
    """Robust loss ``rho(q)``, ``rho'(q)`` and ``rho''(q)`` of squared residual norms ``q``."""
    if loss == "linear":
        return q, torch.ones_like(q), torch.zeros_like(q)
    if loss == "huber":
        inlier = q <= s * s
        root = q.clamp_min(s * s).sqrt()
        zero = torch.zeros_like(q)
        return (torch.where(inlier, q, 2 * s * root - s * s), torch.where(inlier, torch.ones_like(q), s / root),
                torch.where(inlier, zero, -0.5 * s / root**3))
    a = 1 / (1 + q / (s * s))
    return s * s * torch.log1p(q / (s * s)), a, -a * a / (s * s)


def _project(st: _State, struct: _Structure, with_jacobians: bool):
    """Residual-free projection of every observation: ``uv [O, 2]``, ``valid [O]`` and optionally
    ``J_cam [O, 2, C]`` (pose then refined intrinsics) and ``J_pt [O, 2, 3]``. Without Jacobians by the native
    kernel ``ba_project`` where :func:`_use_native` allows."""
    cam, pt = struct.cam, struct.pt
    if not with_jacobians and _use_native(struct, st.R, st.t, st.X, st.fx):
        return tuple(_backend.native_module().ba_project(*_native_state(st, struct), cam, pt, struct.min_depth))
    R = st.R[cam]
    xr = (R @ st.X[pt][:, :, None])[:, :, 0]
    xc = xr + st.t[cam]
    z = xc[:, 2]
    valid = z > struct.min_depth
    inv_z = 1 / torch.where(valid, z, torch.ones_like(z))
    n = xc[:, :2] * inv_z[:, None]
    dist = st.dist[cam] if st.dist is not None else None
    d = _distort_opencv(dist, n[:, None])[:, 0] if dist is not None else n
    f = torch.stack([st.fx[cam], st.fy[cam]], dim=1)
    uv = f * d + torch.stack([st.cx[cam], st.cy[cam]], dim=1)
    if not with_jacobians:
        return uv, valid
    O = len(cam)
    dn = xc.new_zeros(O, 2, 3)
    dn[:, 0, 0] = inv_z
    dn[:, 1, 1] = inv_z
    dn[:, 0, 2] = -n[:, 0] * inv_z
    dn[:, 1, 2] = -n[:, 1] * inv_z
    if dist is not None:
        j00, j01, j11 = (j[:, 0] for j in _opencv_jacobian(dist, n[:, None]))
        D = torch.stack([j00, j01, j01, j11], dim=1).view(O, 2, 2)
        dn = D @ dn
    A = f[:, :, None] * dn  # d uv / d x_c  [O, 2, 3]
    xr_hat = torch.zeros(O, 3, 3, dtype=xc.dtype, device=xc.device)
    xr_hat[:, 0, 1], xr_hat[:, 0, 2], xr_hat[:, 1, 2] = -xr[:, 2], xr[:, 1], -xr[:, 0]
    xr_hat = xr_hat - xr_hat.transpose(1, 2)
    cols = [A, -A @ xr_hat]
    zero = xc.new_zeros(O)
    r2 = _sq(n)[:, None]
    xy2 = 2 * n[:, 0] * n[:, 1]
    for name in struct.intr_cols:
        if name == "f":
            col = f * d
        elif name == "fx":
            col = torch.stack([f[:, 0] * d[:, 0], zero], dim=1)
        elif name == "fy":
            col = torch.stack([zero, f[:, 1] * d[:, 1]], dim=1)
        elif name == "cx":
            col = torch.stack([zero + 1, zero], dim=1)
        elif name == "cy":
            col = torch.stack([zero, zero + 1], dim=1)
        elif name in ("k1", "k2", "k3"):  # d distort / d k_j = n r2^j
            col = f * n * r2 ** int(name[1])
        elif name == "p1":
            col = f * torch.stack([xy2, r2[:, 0] + 2 * n[:, 1] ** 2], dim=1)
        else:  # p2
            col = f * torch.stack([r2[:, 0] + 2 * n[:, 0] ** 2, xy2], dim=1)
        cols.append(col[:, :, None])
    J_cam = torch.cat(cols, dim=2)
    J_pt = A @ R
    return uv, valid, J_cam, J_pt


def _cost(uv: Tensor, valid: Tensor, y: Tensor, c: Tensor, struct: _Structure) -> tuple[float, Tensor]:
    r = uv - y
    q = _sq(r)
    rho = _rho(torch.where(valid, q, torch.zeros_like(q)), struct.loss, struct.scale)[0]
    return float(0.5 * (c * rho * valid).sum()), r


# ----------------------------------------------------------------------------------------------
# Normal equations and the Schur complement
# ----------------------------------------------------------------------------------------------


@dataclass
class _Normal:
    """Gauss-Newton system: camera blocks ``U [N, C, C]``, point blocks ``V [M, 3, 3]``, per-observation
    coupling ``W [O, C, 3]``, gradients ``g_c [N, C]`` and ``g_p [M, 3]``, at fixed parameters zeroed."""

    U: Tensor
    V: Tensor
    W: Tensor
    g_c: Tensor
    g_p: Tensor


def _normal_equations(J_cam: Tensor, J_pt: Tensor, r: Tensor, w: Tensor, struct: _Structure,
                      curvature: Tensor | None = None) -> _Normal:
    """``H = sum_i J_i^T (w_i I + k_i r_i r_i^T) J_i`` and ``g = sum_i w_i J_i^T r_i`` in blocks. ``w [O]``: IRLS
    weights ``c rho'``; ``curvature = k [O]``: ``2 c rho''`` for the exact curvature of the robust loss
    (Triggs' correction; ``None`` is plain IRLS Gauss-Newton)."""
    cam, pt = struct.cam, struct.pt
    J_cam = J_cam * struct.cam_free()[cam][:, None, :]
    J_pt = J_pt * struct.point_free[pt][:, None, None]
    wJc = w[:, None, None] * J_cam
    wJp = w[:, None, None] * J_pt
    Vi, Wi = wJp.transpose(1, 2) @ J_pt, wJc.transpose(1, 2) @ J_pt
    if curvature is not None:
        rJc, rJp = _rtJ(r, J_cam), _rtJ(r, J_pt)  # r^T J
        k = curvature[:, None, None]
        U = struct.per_camera_gram(torch.cat([J_cam, rJc[:, None]], 1), torch.cat([wJc, k * rJc[:, None]], 1))
        Vi = Vi + k * rJp[:, :, None] * rJp[:, None, :]
        Wi = Wi + k * rJc[:, :, None] * rJp[:, None, :]
    else:
        U = struct.per_camera_gram(J_cam, wJc)
    g_c = struct.scatter_rows("cam", _rtJ(r, wJc))
    g_p = struct.scatter_rows("pt", _rtJ(r, wJp))
    return _Normal(U, struct.scatter_rows("pt", Vi), Wi, g_c, g_p)


def _linearise(st: _State, struct: _Structure, y: Tensor, c: Tensor, exact: bool) -> tuple[_Normal, Tensor, Tensor]:
    """Normal equations at ``st`` (``exact``: with the robust loss's curvature), the residuals and IRLS weights:
    by the native kernel ``ba_linearise`` (one pass over the observations, point by point, in C++ or CUDA) or
    in torch (:func:`_linearise_reference`; also where autograd records)."""
    if _use_native(struct, st.R, st.t, st.X, st.fx, y, c):
        return _linearise_native(st, struct, y, c, exact)
    return _linearise_reference(st, struct, y, c, exact)


def _use_native(struct: _Structure, *tensors: Tensor) -> bool:
    """The native kernels take the step: float64 tensors no graph records, and the native backend."""
    return struct.backend == "native" and all(x.dtype == torch.float64 and not x.requires_grad for x in tensors)


def _linearise_reference(st: _State, struct: _Structure, y: Tensor, c: Tensor,
                         exact: bool) -> tuple[_Normal, Tensor, Tensor]:
    uv, valid, J_cam, J_pt = _project(st, struct, True)
    r = uv - y
    _, drho, d2rho = _rho(_sq(r), struct.loss, struct.scale)
    w = c * drho * valid
    curvature = 2 * c * d2rho * valid if exact and struct.loss != "linear" else None
    return _normal_equations(J_cam, J_pt, r, w, struct, curvature), r, w


def _linearise_native(st: _State, struct: _Structure, y: Tensor, c: Tensor,
                      exact: bool) -> tuple[_Normal, Tensor, Tensor]:
    _, order, starts = struct.schur_index()
    cols, cam_free, point_free = struct.native_masks()
    U, V, W, g_c, g_p, r, w = _backend.native_module().ba_linearise(
        *_native_state(st, struct), y.contiguous(), c.contiguous(), struct.cam, struct.pt, order, starts, cols,
        cam_free, point_free, _LOSS_CODES[struct.loss], struct.scale, struct.min_depth, exact)
    return _Normal(U, V, W, g_c, g_p), r, w


def _native_state(st: _State, struct: _Structure) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(R, t, X, intr [N, 4] = (fx, fy, cx, cy), dist [N, 5] or [N, 0])``, contiguous, as the native
    kernels ``ba_project`` and ``ba_linearise`` take the state."""
    dist = st.dist if st.dist is not None else st.R.new_zeros(struct.n_cams, 0)
    return (st.R.contiguous(), st.t.contiguous(), st.X.contiguous(), torch.stack([st.fx, st.fy, st.cx, st.cy], 1),
            dist.contiguous())


def _dense_cameras(blocks: Tensor, struct: _Structure) -> tuple[Tensor, Tensor]:
    """Per-camera ``[N, C, C]`` blocks scattered into the dense ``[S, S]`` reduced matrix (plus the map)."""
    S = struct.size
    cmap = struct.cam_map()
    flat = (cmap[:, :, None] * S + cmap[:, None, :]).reshape(-1)
    H = blocks.new_zeros(S * S).index_add_(0, flat, blocks.reshape(-1)).view(S, S)
    return H, cmap


def _schur_reference(F: Tensor, nq: _Normal, struct: _Structure) -> Tensor:
    """The points' terms ``sum F_a W_b^T`` of the reduced camera matrix (dense ``[S, S]``), in torch: what
    the native kernel ``ba_schur`` sums point by point.

    The dense chunks' points by one product per chunk (_DensePlan); for the others the pairs a == b reduced
    per camera, the pairs a < b scattered straight into S (and mirrored). Each of those F_a W_b^T is summed as
    3 outer products with the observations in the last axis: torch's batched matmul of many [C, 3] @ [3, C]
    products is several times slower on the CPU."""
    struct.reference_plan()
    cam, S = struct.cam, struct.size
    own_obs = struct.pair_obs
    Fs, Ws = F[own_obs].permute(1, 2, 0).contiguous(), nq.W[own_obs].permute(1, 2, 0).contiguous()  # [C, 3, Q]

    def products(a: Tensor | slice, b: Tensor | slice) -> Tensor:
        Fa, Wb = Fs[:, :, a], Ws[:, :, b]
        out = Fa[:, None, 0] * Wb[None, :, 0]  # [C, C, n]
        for k in (1, 2):
            out.addcmul_(Fa[:, None, k], Wb[None, :, k])
        return out

    C = F.shape[1]
    own = F.new_zeros(C, C, struct.n_cams).index_add_(2, cam[own_obs], products(slice(None), slice(None)))
    own = own.permute(2, 0, 1).contiguous()
    cross = F.new_zeros(S * S)
    for a, b, flat in struct.pair_chunks():
        cross.index_add_(0, flat, products(a, b).reshape(-1))
    cross = cross.view(S, S)
    dense = F.new_zeros(S * S).index_add_(0, struct.dense.target, struct.dense.products(F, nq.W)).view(S, S)
    return _dense_cameras(own, struct)[0] + cross + cross.T + dense


def _solve(nq: _Normal, struct: _Structure, lam: float, rhs_c: Tensor, rhs_p: Tensor) -> tuple[Tensor, Tensor] | None:
    """Solve ``(H + lam diag(H)) [dc; dp] = [rhs_c; rhs_p]`` by the Schur complement on the points.

    ``rhs_c [N, C]`` per camera (summed into shared intrinsics), ``rhs_p [M, 3]``. Returns per-camera
    ``[N, C]`` (shared intrinsics repeated) and ``[M, 3]`` steps, or ``None`` if ``S`` is not positive definite.
    """
    cam, pt = struct.cam, struct.pt
    S = struct.size
    eye3 = torch.eye(3, dtype=nq.V.dtype, device=nq.V.device)
    V = nq.V + lam * torch.diag_embed(nq.V.diagonal(dim1=1, dim2=2))
    # fixed or unobserved points: identity blocks (their W rows and gradients are zero)
    empty = ~struct.point_free | (nq.V.diagonal(dim1=1, dim2=2).sum(1) <= 0)
    V = torch.where(empty[:, None, None], eye3, V)
    V_inv, info = torch.linalg.inv_ex(V)
    if bool((info != 0).any()):
        V_inv = torch.linalg.pinv(V, hermitian=True)
    # S = U - sum over pairs (a, b) of observations of one point of F_a W_b^T (F = W V^-1): by the native
    # kernel (point by point, in C++ or CUDA), or in torch (_schur_reference; also where autograd records)
    if _use_native(struct, nq.W, V_inv):
        pos, order, starts = struct.schur_index()
        terms = _backend.native_module().ba_schur(nq.W.contiguous(), V_inv.contiguous(), pt, pos, order, starts, S)
        Fp = (nq.W @ (V_inv @ rhs_p[:, :, None])[pt])[:, :, 0]  # W V^-1 rhs_p per observation
    else:
        F = nq.W @ V_inv[pt]  # [O, C, 3]: W V^-1 per observation
        terms = _schur_reference(F, nq, struct)
        Fp = (F @ rhs_p[pt][:, :, None])[:, :, 0]
    H, cmap = _dense_cameras(nq.U, struct)
    diag = H.diagonal().clone()  # Marquardt scaling: the diagonal of U, before the elimination
    H = H - terms
    H.diagonal().add_(lam * diag)
    b = H.new_zeros(S).index_add_(0, cmap.reshape(-1), rhs_c.reshape(-1))
    b = b.index_add_(0, cmap[cam].reshape(-1), -Fp.reshape(-1))
    # fixed parameters and parameters no observation touches: unit diagonal, zero right-hand side (their rows
    # and columns set in place: the [S, S] matrix is written once, not masked whole)
    free = H.new_zeros(S, dtype=torch.bool).index_fill_(0, cmap[struct.cam_free()], True)
    dead = torch.nonzero(~free | (diag <= 0))[:, 0]
    H.index_fill_(0, dead, 0.0).index_fill_(1, dead, 0.0)
    H[dead, dead] = 1.0
    b = b.index_fill(0, dead, 0.0)
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0:
        return None
    dc_flat = torch.cholesky_solve(b[:, None], L)[:, 0]
    dc = dc_flat[cmap]  # [N, C]
    Wt_dc = (nq.W.transpose(1, 2) @ dc[cam][:, :, None])[:, :, 0]
    rp = rhs_p - torch.zeros_like(rhs_p).index_add_(0, pt, Wt_dc)
    dp = (V_inv @ rp[:, :, None])[:, :, 0] * struct.point_free[:, None]
    return dc * struct.cam_free(), dp


def _apply(st: _State, struct: _Structure, dc: Tensor, dp: Tensor) -> _State:
    """Parameters after the step (``dc`` per camera: dt, dphi, refined intrinsics)."""
    R = so3_exp(dc[:, 3:6]) @ st.R
    t = st.t + dc[:, :3]
    fx, fy, cx, cy, dist = st.fx, st.fy, st.cx, st.cy, st.dist
    for i, name in enumerate(struct.intr_cols):
        d = dc[:, 6 + i]
        if name == "f":
            fx, fy = fx * torch.exp(d), fy * torch.exp(d)
        elif name == "fx":
            fx = fx * torch.exp(d)
        elif name == "fy":
            fy = fy * torch.exp(d)
        elif name == "cx":
            cx = cx + d
        elif name == "cy":
            cy = cy + d
        else:
            j = _DIST_INDEX[name]
            dist = torch.cat([dist[:, :j], dist[:, j:j + 1] + d[:, None], dist[:, j + 1:]], dim=1)
    return _State(R, t, st.X + dp, fx, fy, cx, cy, dist)


# ----------------------------------------------------------------------------------------------
# Levenberg-Marquardt
# ----------------------------------------------------------------------------------------------


def _levenberg_marquardt(st: _State, struct: _Structure, y: Tensor, c: Tensor, opt: BAOptions):
    uv, valid = _project(st, struct, False)
    cost, _ = _cost(uv, valid, y, c, struct)
    cost0, lam, nu, floor_steps, polish = cost, opt.initial_damping, 2.0, 0, False
    converged, reason, iterations = False, "maximum iterations reached", 0
    while iterations < opt.max_iterations:
        iterations += 1
        nq, r, w = _linearise(st, struct, y, c, exact=polish)
        # rounding of r = uv - y (absolute error ~ eps |y|) makes the cost uncertain by ~ sum w |r| eps |y|
        resolution = 4 * torch.finfo(r.dtype).eps * float((w * r.norm(dim=1) * (y.norm(dim=1) + 1)).sum())
        g_norm = max(float(nq.g_c.abs().max()) if nq.g_c.numel() else 0.0,
                     float(nq.g_p.abs().max()) if nq.g_p.numel() else 0.0)
        if g_norm == 0.0:
            converged, reason = True, "zero gradient"
            break
        accepted = False
        while lam < 1e16:
            step = _solve(nq, struct, lam, -nq.g_c, -nq.g_p)
            if step is None:
                lam, nu = lam * nu, nu * 2
                continue
            dc, dp = step
            new = _apply(st, struct, dc, dp)
            uv_new, valid_new = _project(new, struct, False)
            new_cost, _ = _cost(uv_new, valid_new, y, c, struct)
            # predicted decrease of the Gauss-Newton model: 1/2 (-g.d + lam d^T diag(H) d)
            # (shared intrinsics: per-camera gradients and diagonals sum to the group's, the step is shared)
            gd = float((nq.g_c * dc).sum() + (nq.g_p * dp).sum())
            dDd = float((nq.U.diagonal(dim1=1, dim2=2) * dc * dc).sum()
                        + (nq.V.diagonal(dim1=1, dim2=2) * dp * dp).sum())
            predicted = 0.5 * (-gd + lam * dDd)
            fewer_valid = bool((valid & ~valid_new).any())
            # below the cost's float resolution a decrease cannot be measured: a Gauss-Newton step whose
            # predicted decrease is that small is accepted unless the cost visibly rises (the optimum is
            # then resolved to the parameters' precision, not only the cost's, which the gradients need)
            floor = _COST_RESOLUTION * cost + resolution
            at_floor = predicted <= floor and new_cost <= cost + floor
            if (new_cost < cost or at_floor) and not fewer_valid and math.isfinite(new_cost):
                if at_floor:  # no gain ratio to measure: undamp towards Newton steps
                    lam = max(lam / 10, 1e-12)
                else:
                    rho = (cost - new_cost) / max(predicted, 1e-300)
                    lam *= max(1 / 3, 1 - (2 * rho - 1) ** 3)
                nu = 2.0
                floor_steps = floor_steps + 1 if at_floor else 0
                # once the cost is resolved, Newton steps with the robust loss's exact curvature converge
                # faster than IRLS (which is only linear): they polish the optimum the gradients rely on
                polish = polish or at_floor
                decrease = cost - new_cost
                params = torch.cat([st.t.reshape(-1), st.X.reshape(-1)]).abs().sum()
                small_step = float(dc.abs().sum() + dp.abs().sum()) <= opt.xtol * (float(params) + opt.xtol)
                st, cost, accepted = new, new_cost, True
                if small_step:
                    converged, reason = True, "step below xtol"
                elif not at_floor and decrease <= opt.ftol * (cost + decrease):
                    converged, reason = True, "cost decrease below ftol"
                elif floor_steps >= 10:
                    converged, reason = True, "cost at its float resolution"
                break
            lam, nu = lam * nu, nu * 2
        if not accepted:
            converged, reason = True, "no decrease possible (damping limit): at a minimum to machine precision"
            break
        if converged:
            break
    return st, cost0, cost, iterations, converged, reason


def _first_of_group(struct: _Structure) -> Tensor:
    """``[N]`` bool: the camera is the first (lowest index) of its intrinsic group."""
    n = struct.n_cams
    idx = torch.full((struct.n_groups,), n, dtype=torch.long, device=struct.group.device)
    idx = idx.scatter_reduce(0, struct.group, torch.arange(n, device=idx.device), "amin")
    return torch.zeros(n, dtype=torch.bool, device=idx.device).index_fill_(0, idx, True)


# ----------------------------------------------------------------------------------------------
# Differentiable residuals (for the implicit backward) and the autograd Function
# ----------------------------------------------------------------------------------------------


def _chart(st: _State, struct: _Structure, d_pose: Tensor, d_pt: Tensor, d_intr: Tensor,
           kappa: tuple[Tensor, ...]) -> _State:
    """Parameters at the increment ``(d_pose [N, 6], d_pt [M, 3], d_intr [G, k])`` from ``st``, with the
    fixed intrinsics taken from ``kappa = (fx, fy, cx, cy, dist)`` (so their gradient flows there)."""
    d_pose = d_pose * struct.pose_free
    R = so3_exp(d_pose[:, 3:]) @ st.R
    t = st.t + d_pose[:, :3]
    X = st.X + d_pt * struct.point_free[:, None]
    kfx, kfy, kcx, kcy, kdist = kappa
    fx, fy, cx, cy, dist = kfx, kfy, kcx, kcy, (kdist if st.dist is not None else None)
    for i, name in enumerate(struct.intr_cols):
        free = struct.intr_free[struct.group, i]
        d = d_intr[struct.group, i]
        if name == "f":
            fx = torch.where(free, st.fx * torch.exp(d), fx)
            fy = torch.where(free, st.fy * torch.exp(d), fy)
        elif name == "fx":
            fx = torch.where(free, st.fx * torch.exp(d), fx)
        elif name == "fy":
            fy = torch.where(free, st.fy * torch.exp(d), fy)
        elif name == "cx":
            cx = torch.where(free, st.cx + d, cx)
        elif name == "cy":
            cy = torch.where(free, st.cy + d, cy)
        else:
            j = _DIST_INDEX[name]
            kj = torch.where(free, st.dist[:, j] + d, dist[:, j])
            dist = torch.cat([dist[:, :j], kj[:, None], dist[:, j + 1:]], dim=1)
    return _State(R, t, X, fx, fy, cx, cy, dist)


def _robust_cost(st: _State, struct: _Structure, y: Tensor, c: Tensor) -> Tensor:
    uv, valid = _project(st, struct, False)
    r = uv - y
    q = _sq(r)
    rho = _rho(torch.where(valid, q, torch.zeros_like(q)), struct.loss, struct.scale)[0]
    return 0.5 * (c * rho * valid).sum()


class _BundleAdjust(torch.autograd.Function):
    """Forward: the LM solve (no graph). Backward: implicit function theorem at the optimum."""

    @staticmethod
    def forward(ctx, y, c, fx, fy, cx, cy, dist, start, struct, opt, info):  # noqa: PLR0913
        st0 = _State(start.R, start.t, start.X, fx.detach(), fy.detach(), cx.detach(), cy.detach(),
                     dist.detach() if struct.model == "opencv" else None)
        st, cost0, cost, it, converged, reason = _levenberg_marquardt(st0, struct, y.detach(), c.detach(), opt)
        info.update(state=st, cost0=cost0, cost=cost, iterations=it, converged=converged, reason=reason)
        ctx.struct, ctx.opt, ctx.state = struct, opt, st
        ctx.save_for_backward(y, c, fx, fy, cx, cy, dist)
        dist_out = st.dist if st.dist is not None else dist.detach()
        return tuple(x.clone() for x in (st.R, st.t, st.X, st.fx, st.fy, st.cx, st.cy, dist_out))

    @staticmethod
    def backward(ctx, gR, gt, gX, gfx, gfy, gcx, gcy, gdist):  # noqa: PLR0913
        struct, opt, st = ctx.struct, ctx.opt, ctx.state
        y, c, *kappa = ctx.saved_tensors
        with torch.enable_grad():
            y = y.detach().requires_grad_()
            c = c.detach().requires_grad_()
            kappa = [k.detach().requires_grad_() for k in kappa]
            if struct.model != "opencv":
                kappa[4] = None
            N, M, G, k = struct.n_cams, struct.n_points, struct.n_groups, len(struct.intr_cols)
            d_pose = st.R.new_zeros(N, 6, requires_grad=True)
            d_pt = st.R.new_zeros(M, 3, requires_grad=True)
            d_intr = st.R.new_zeros(G, k, requires_grad=True)
            deltas = (d_pose, d_pt, d_intr)
            kap = tuple(kappa)
            moved = _chart(st, struct, *deltas, kap)
            outs = [moved.R, moved.t, moved.X, moved.fx, moved.fy, moved.cx, moved.cy]
            grads = [gR, gt, gX, gfx, gfy, gcx, gcy]
            if moved.dist is not None:
                outs.append(moved.dist)
                grads.append(gdist)
            pairs = [(o, g) for o, g in zip(outs, grads, strict=True) if g is not None]
            inputs = [*deltas, *[x for x in kap if x is not None]]
            direct = _grad([o for o, _ in pairs], inputs, [g for _, g in pairs])
            v = direct[:3]
            direct_kappa = direct[3:]
            # Gauss-Newton matrix at the optimum, for H u = v
            nq = _linearise(st, struct, y.detach(), c.detach(), exact=True)[0]
            u = _solve_gn(nq, struct, v)
            cost = _robust_cost(_chart(st, struct, *deltas, kap), struct, y, c)
            g = torch.autograd.grad(cost, deltas, create_graph=True, allow_unused=True)
            g = [gi if gi is not None else torch.zeros_like(d) for gi, d in zip(g, deltas, strict=True)]
            for _ in range(opt.backward_refinements):
                Hu = _grad(g, deltas, u, retain_graph=True)
                du = _solve_gn(nq, struct, [vi - hi for vi, hi in zip(v, Hu, strict=True)])
                u = [ui + di for ui, di in zip(u, du, strict=True)]
            implicit = _grad(g, [y, c, *[x for x in kap if x is not None]], [-ui for ui in u])
        gy, gc = implicit[0], implicit[1]
        gk = [a + b for a, b in zip(implicit[2:], direct_kappa, strict=True)]
        if struct.model != "opencv":
            gk.append(None)
        return (gy, gc, *gk, None, None, None, None)


def _grad(outputs, inputs, grad_outputs, retain_graph: bool = False) -> list[Tensor]:
    """``torch.autograd.grad`` with zeros for inputs that do not influence the outputs."""
    kept = [(o, g) for o, g in zip(outputs, grad_outputs, strict=True) if o.requires_grad]
    outputs, grad_outputs = [o for o, _ in kept], [g for _, g in kept]
    if not outputs:
        return [torch.zeros_like(x) for x in inputs]
    gs = torch.autograd.grad(outputs, inputs, grad_outputs, retain_graph=retain_graph, allow_unused=True)
    return [g if g is not None else torch.zeros_like(x) for g, x in zip(gs, inputs, strict=True)]


def _solve_gn(nq: _Normal, struct: _Structure, v: list[Tensor]) -> list[Tensor]:
    """``H_GN^-1 v`` for ``v = (pose [N, 6], points [M, 3], intrinsics [G, k])``, zero on fixed entries."""
    v_pose, v_pt, v_intr = v
    k = len(struct.intr_cols)
    # per-camera right-hand side: each group's intrinsic entries on its first camera only (summed in _solve)
    rhs_c = torch.cat([v_pose, v_pose.new_zeros(struct.n_cams, k)], dim=1)
    if k:
        rhs_c[:, 6:] = v_intr[struct.group] * _first_of_group(struct)[:, None]
    for lam in (0.0, 1e-12, 1e-9, 1e-6):
        step = _solve(nq, struct, lam, rhs_c, v_pt)
        if step is not None:
            break
    else:
        raise RuntimeError("bundle_adjust backward: the Gauss-Newton matrix at the optimum is singular "
                           "(fix the gauge with fixed cameras/points)")
    dc, dp = step
    u_intr = v_intr.new_zeros(struct.n_groups, k)
    if k:
        u_intr[struct.group] = dc[:, 6:]
    return [dc[:, :6], dp, u_intr]


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def reprojection_residuals(cameras: Cameras, points: Tensor, observations: Observations) -> Tensor:
    """``[O, 2]`` residuals ``project(point) - uv`` in pixels (differentiable, any camera model of
    :mod:`scenegrad.render.cameras` except fisheye; NaN behind the camera)."""
    cam, pt = observations.camera_idx.long(), observations.point_idx.long()
    xc = (cameras.R[cam] @ points[pt][:, :, None])[:, :, 0] + cameras.t[cam]
    n = xc[:, :2] / xc[:, 2:]
    if cameras.model == "opencv":
        n = _distort_opencv(cameras.dist[cam], n[:, None])[:, 0]
    elif cameras.model != "pinhole":
        raise ValueError(f"reprojection_residuals supports 'pinhole' and 'opencv', got {cameras.model!r}")
    uv = torch.stack([cameras.fx[cam], cameras.fy[cam]], 1) * n + torch.stack([cameras.cx[cam], cameras.cy[cam]], 1)
    return torch.where((xc[:, 2:] > 0), uv - observations.uv, torch.full_like(uv, math.nan))


def _mask(x: Tensor | None, n: int, name: str, device: torch.device) -> Tensor:
    if x is None:
        return torch.zeros(n, dtype=torch.bool, device=device)
    x = torch.as_tensor(x, device=device)
    if x.dtype != torch.bool or tuple(x.shape) != (n,):
        raise ValueError(f"{name} must be a [{n}] bool tensor, got {x.dtype} {list(x.shape)}")
    return x


def _validate(cameras: Cameras, points: Tensor, obs: Observations, opt: BAOptions,
              refine: tuple[str, ...]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if not isinstance(cameras, Cameras):
        raise ValueError(f"cameras must be scenegrad Cameras, got {type(cameras).__name__}")
    if cameras.model not in ("pinhole", "opencv"):
        raise ValueError(f"bundle_adjust supports camera models 'pinhole' and 'opencv', got {cameras.model!r}")
    if not isinstance(points, Tensor) or points.dim() != 2 or points.shape[1] != 3 or not points.is_floating_point():
        raise ValueError(f"points must be a float [M, 3] tensor, got {getattr(points, 'shape', type(points))}")
    if not bool(torch.isfinite(points).all()):
        raise ValueError("points must be finite (found NaN or inf)")
    cam, pt, uv = obs.camera_idx, obs.point_idx, obs.uv
    for name, idx in (("camera_idx", cam), ("point_idx", pt)):
        if not isinstance(idx, Tensor) or idx.dim() != 1 or idx.is_floating_point() or idx.dtype == torch.bool:
            raise ValueError(f"observations.{name} must be a 1-D integer tensor")
    if not isinstance(uv, Tensor) or uv.dim() != 2 or uv.shape[1] != 2 or not uv.is_floating_point():
        raise ValueError(f"observations.uv must be a float [O, 2] tensor, got {getattr(uv, 'shape', type(uv))}")
    O = len(uv)
    if len(cam) != O or len(pt) != O:
        raise ValueError(f"observations: camera_idx {len(cam)}, point_idx {len(pt)} and uv {O} must have the "
                         "same length")
    if O == 0:
        raise ValueError("observations is empty")
    if not bool(torch.isfinite(uv).all()):
        raise ValueError("observations.uv must be finite (found NaN or inf)")
    N, M = len(cameras), len(points)
    if int(cam.min()) < 0 or int(cam.max()) >= N:
        raise ValueError(f"observations.camera_idx out of range [0, {N}): min {int(cam.min())}, max {int(cam.max())}")
    if int(pt.min()) < 0 or int(pt.max()) >= M:
        raise ValueError(f"observations.point_idx out of range [0, {M}): min {int(pt.min())}, max {int(pt.max())}")
    c = obs.weights if obs.weights is not None else uv.new_ones(O)
    if not isinstance(c, Tensor) or tuple(c.shape) != (O,):
        raise ValueError(f"observations.weights must be a [{O}] tensor")
    if not bool((torch.isfinite(c) & (c >= 0)).all()):
        raise ValueError("observations.weights must be finite and >= 0")
    if opt.loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {opt.loss!r}")
    if not opt.loss_scale > 0:
        raise ValueError(f"loss_scale must be > 0, got {opt.loss_scale}")
    for name in refine:
        if name not in INTRINSICS:
            raise ValueError(f"refine_intrinsics entries must be among {INTRINSICS}, got {name!r}")
    if "focal" in refine and "focal_xy" in refine:
        raise ValueError("refine_intrinsics: 'focal' (fx, fy scaled together) and 'focal_xy' (each) exclude each other")
    distortion = [name for name in refine if name in _DIST_INDEX]
    if distortion and cameras.model != "opencv":
        raise ValueError(f"refining {distortion} needs model='opencv' (SIMPLE_RADIAL is opencv with "
                         "dist=(k1, 0, 0, 0, 0))")
    return cam.long().contiguous(), pt.long().contiguous(), uv, c


def bundle_adjust(
    cameras: Cameras,
    points: Tensor,
    observations: Observations,
    *,
    refine_intrinsics: tuple[str, ...] = (),
    intrinsic_groups: Tensor | None = None,
    fixed_cameras: Tensor | None = None,
    fixed_points: Tensor | None = None,
    fixed_intrinsics: Tensor | None = None,
    gauge: str = "auto",
    options: BAOptions | None = None,
) -> BAResult:
    """Refine ``cameras`` and ``points`` to minimise the robust reprojection error (see the module docstring).

    Args:
        cameras: ``N`` cameras, model ``"pinhole"`` or ``"opencv"``; their poses (and refined
            intrinsics) are the starting point.
        points: ``[M, 3]`` starting world points.
        observations: :class:`Observations` (``O`` of them; every index in range, ``uv`` finite).
        refine_intrinsics: subset of :data:`INTRINSICS` ``("focal", "principal_point", "k1", "focal_xy",
            "k2", "p1", "p2", "k3")`` to refine (default: none). ``"focal"`` scales ``fx`` and ``fy`` together
            (the aspect ratio is kept), ``"focal_xy"`` refines them separately (not both); the distortion
            coefficients (``dist[:, 0..4]``) need ``"opencv"``. COLMAP's models: SIMPLE_PINHOLE ``("focal",)``,
            PINHOLE ``("focal_xy",)``, SIMPLE_RADIAL ``("focal", "k1")``, RADIAL ``("focal", "k1", "k2")``,
            OPENCV ``("focal_xy", "k1", "k2", "p1", "p2")`` (with ``"principal_point"`` when it is refined).
        intrinsic_groups: ``[N]`` int64 group of each camera's refined intrinsics (``None``: one group
            per camera; ``torch.zeros(N, dtype=torch.long)``: shared by all). A group's refined
            intrinsics start from its first camera's values.
        fixed_cameras: ``[N]`` bool, ``True`` = pose held fixed. fixed_points: ``[M]`` bool.
        fixed_intrinsics: ``[G]`` bool per intrinsic group, ``True`` = its intrinsics held fixed.
        gauge: ``"auto"`` (fix the first pose and the scale where the masks leave them free) or ``"none"``.
        options: :class:`BAOptions` (robust loss, tolerances).

    Returns:
        :class:`BAResult`. Its ``cameras`` (R, t, intrinsics) and ``points`` are differentiable with
        respect to ``observations.uv``, ``observations.weights`` and the cameras' intrinsics when those
        require grad (implicit function theorem; see the module docstring). Raises ``ValueError`` on
        invalid input (NaN observations, indices out of range, shape mismatches, unknown options).
    """
    opt = options or BAOptions()
    refine = tuple(refine_intrinsics)
    cam, pt, y, c = _validate(cameras, points, observations, opt, refine)
    N, M = len(cameras), len(points)
    dev, dtype = cameras.device, cameras.dtype
    f64 = dict(dtype=torch.float64, device=dev)
    if gauge not in ("auto", "none"):
        raise ValueError(f"gauge must be 'auto' or 'none', got {gauge!r}")
    if intrinsic_groups is None:
        group = torch.arange(N, device=dev)
    else:
        group = torch.as_tensor(intrinsic_groups, device=dev)
        if group.dtype in (torch.bool,) or group.is_floating_point() or tuple(group.shape) != (N,):
            raise ValueError(f"intrinsic_groups must be a [{N}] integer tensor")
        group = torch.unique(group.long(), return_inverse=True)[1]
    G = int(group.max()) + 1
    cols = tuple(name for key, names in _COLUMNS.items() if key in refine for name in names)
    fixed_cam = _mask(fixed_cameras, N, "fixed_cameras", dev)
    fixed_pt = _mask(fixed_points, M, "fixed_points", dev)
    fixed_in = _mask(fixed_intrinsics, G, "fixed_intrinsics", dev)

    R0, t0, X0 = cameras.R.detach().to(**f64), cameras.t.detach().to(**f64), points.detach().to(**f64)
    pose_free = (~fixed_cam)[:, None].repeat(1, 6)
    if gauge == "auto" and not bool(fixed_pt.any()):
        pose_free = _fix_gauge(pose_free, fixed_cam, R0, t0)
    xc_z = ((R0[cam] @ X0[pt][:, :, None])[:, 2, 0] + t0[cam, 2])
    front = xc_z[xc_z > 0]
    min_depth = 1e-6 * float(front.median()) if len(front) else 1e-12
    struct = _Structure(cam, pt, group, N, M, G, cols, pose_free, ~fixed_pt,
                        (~fixed_in)[:, None].expand(G, len(cols)).clone(), cameras.model, opt.loss,
                        float(opt.loss_scale), min_depth)
    struct.backend = _backend.resolve("ba", opt.backend, dev)
    # a group's refined intrinsics start from its first camera's values
    first = torch.full((G,), N, dtype=torch.long, device=dev).scatter_reduce(
        0, group, torch.arange(N, device=dev), "amin")[group]
    intr = [cameras.fx, cameras.fy, cameras.cx, cameras.cy]
    dist = cameras.dist if cameras.dist is not None else cameras.fx.new_zeros(N, 0)
    if "focal" in refine or "focal_xy" in refine:
        intr[0], intr[1] = intr[0][first], intr[1][first]
    if "principal_point" in refine:
        intr[2], intr[3] = intr[2][first], intr[3][first]
    refined_dist = [_DIST_INDEX[name] for name in refine if name in _DIST_INDEX]
    if refined_dist:
        dist = dist.clone()
        dist[:, refined_dist] = dist[first][:, refined_dist]
    intr = [x.to(torch.float64) for x in intr]
    info: dict = {}
    start = _State(R0, t0, X0, *intr, None)
    outs = _BundleAdjust.apply(y.to(torch.float64), c.to(torch.float64), *intr, dist.to(torch.float64),
                               start, struct, opt, info)
    R, t, X, fx, fy, cx, cy, dist_out = outs
    cams_out = Cameras(fx.to(dtype), fy.to(dtype), cx.to(dtype), cy.to(dtype), R.to(dtype), t.to(dtype),
                       cameras.width, cameras.height, cameras.model,
                       dist_out.to(dtype) if cameras.model == "opencv" else None)
    st = info["state"]
    uv, valid = _project(st, struct, False)
    r = uv - y.detach().to(torch.float64)
    q = _sq(r)
    drho = _rho(q, struct.loss, struct.scale)[1]
    uv0, valid0 = _project(_State(R0, t0, X0, *[x.detach() for x in intr],
                                  dist.detach().to(torch.float64) if cameras.model == "opencv" else None),
                           struct, False)
    q0 = _sq(uv0 - y.detach().to(torch.float64))
    return BAResult(
        cameras=cams_out, points=X.to(points.dtype), cost_initial=info["cost0"], cost_final=info["cost"],
        rmse_initial=_rmse(q0, valid0), rmse_final=_rmse(q, valid), residuals=r.to(y.dtype),
        weights=(c.detach().to(torch.float64) * drho * valid).to(y.dtype), iterations=info["iterations"],
        converged=info["converged"], reason=info["reason"])


def _rmse(q: Tensor, valid: Tensor) -> float:
    return float((q[valid].mean()).sqrt()) if bool(valid.any()) else math.nan


def _fix_gauge(pose_free: Tensor, fixed_cam: Tensor, R: Tensor, t: Tensor) -> Tensor:
    """Fix the first pose (if no camera is fixed) and the scale (if at most one camera is fixed)."""
    pose_free = pose_free.clone()
    fixed = fixed_cam.clone()
    if not bool(fixed.any()):
        pose_free[0] = False
        fixed[0] = True
    if int(fixed.sum()) != 1 or len(fixed) < 2:
        return pose_free
    anchor = int(torch.nonzero(fixed)[0])
    centres = -(R.transpose(1, 2) @ t[:, :, None])[:, :, 0]
    dist = (centres - centres[anchor]).norm(dim=1).masked_fill(fixed, -1.0)
    j = int(dist.argmax())
    # scaling the world about the anchor's centre moves t_j along -R_j (c_j - c_anchor)
    axis = int((R[j] @ (centres[j] - centres[anchor])).abs().argmax())
    pose_free[j, axis] = False
    return pose_free
