// Per-observation math of a bundle adjustment's linearisation (see recon/ba.py, _linearise and its
// module docstring): the projection of one observation, its residual, its robust weights and its
// analytic Jacobians, and the terms it adds to the blocks of the Gauss-Newton system. Shared by the
// CPU and CUDA launchers.
#pragma once
#include <cstdint>

#include "ba/schur.h"
#include "common/hd.h"

namespace scenegrad {
namespace ba {

// Refined intrinsic columns (recon/ba.py, _Structure.intr_cols), in the codes the launchers take.
enum IntrinsicColumn : int64_t { kColF = 0, kColFx, kColFy, kColCx, kColCy, kColK1, kColK2, kColK3, kColP1, kColP2 };
// Robust losses (recon/ba.py, LOSSES).
enum Loss : int64_t { kLinear = 0, kHuber = 1, kCauchy = 2 };

// rho'(q) and rho''(q) of the robust loss of scale s at the squared residual norm q.
SG_HD void robust_derivatives(int64_t loss, double s, double q, double* d1, double* d2) {
    if (loss == kHuber) {
        if (q <= s * s) {
            *d1 = 1.0;
            *d2 = 0.0;
        } else {
            const double root = sqrt(q);
            *d1 = s / root;
            *d2 = -0.5 * s / (root * root * root);
        }
    } else if (loss == kCauchy) {
        const double a = 1.0 / (1.0 + q / (s * s));
        *d1 = a;
        *d2 = -a * a / (s * s);
    } else {
        *d1 = 1.0;
        *d2 = 0.0;
    }
}

// What one observation contributes: residual r = uv - y, IRLS weight w = c rho' (0 behind the camera),
// curvature k = 2 c rho'' (with the exact robust curvature; else 0) and the Jacobians of uv with respect to
// the camera's C parameters (dt, dphi, then the refined intrinsics) and to the point, both masked by the
// free flags.
template <int C>
struct ObservationTerms {
    double r[2];
    double w;
    double k;
    double Jc[2][C];
    double Jp[2][3];
};

// A point seen by a camera: x_r = R X, the normalised n = x_c[:2] / z (x_c = x_r + t) and its distorted d
// (OpenCV (k1, k2, p1, p2, k3) in dist, or nullptr for a pinhole: d = n); valid: z above min_depth (else
// 1 / z is taken as 1, as recon/ba.py's _project does).
struct Projection {
    double xr[3];
    double inv_z;
    double n[2];
    double d[2];
    bool valid;
};

SG_HD Projection project_point(const double* R, const double* t, const double* X, const double* dist,
                               double min_depth) {
    Projection p;
    for (int i = 0; i < 3; ++i) p.xr[i] = R[3 * i] * X[0] + R[3 * i + 1] * X[1] + R[3 * i + 2] * X[2];
    const double z = p.xr[2] + t[2];
    p.valid = z > min_depth;
    p.inv_z = 1.0 / (p.valid ? z : 1.0);
    p.n[0] = (p.xr[0] + t[0]) * p.inv_z;
    p.n[1] = (p.xr[1] + t[1]) * p.inv_z;
    p.d[0] = p.n[0];
    p.d[1] = p.n[1];
    if (dist != nullptr) {
        const double n0 = p.n[0], n1 = p.n[1], r2 = n0 * n0 + n1 * n1;
        const double k1 = dist[0], k2 = dist[1], p1 = dist[2], p2 = dist[3], k3 = dist[4];
        const double radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3));
        p.d[0] = n0 * radial + 2 * p1 * n0 * n1 + p2 * (r2 + 2 * n0 * n0);
        p.d[1] = n1 * radial + p1 * (r2 + 2 * n1 * n1) + 2 * p2 * n0 * n1;
    }
    return p;
}

// Observation o's pixel (uv[2 o], uv[2 o + 1]) and validity valid[o]: point pt[o] seen by camera cam[o]
// (R [N, 3, 3], t [N, 3], X [M, 3], intr [N, 4] = (fx, fy, cx, cy), dist [N, 5] or nullptr for pinholes).
SG_HD void project_observation(const double* R, const double* t, const double* X, const double* intr,
                               const double* dist, const int64_t* cam, const int64_t* pt, int64_t o,
                               double min_depth, double* uv, bool* valid) {
    const int64_t j = cam[o];
    const Projection p = project_point(R + j * 9, t + j * 3, X + pt[o] * 3, dist != nullptr ? dist + j * 5 : nullptr,
                                       min_depth);
    uv[2 * o] = intr[4 * j] * p.d[0] + intr[4 * j + 2];
    uv[2 * o + 1] = intr[4 * j + 1] * p.d[1] + intr[4 * j + 3];
    valid[o] = p.valid;
}

// Projects point X [3] by the camera (R [3, 3] row-major, t [3], intr = (fx, fy, cx, cy), dist = OpenCV
// (k1, k2, p1, p2, k3) or nullptr for a pinhole) against the observed pixel y [2] with confidence c.
// cols [C - 6]: the refined intrinsics' codes; cam_free [C] and point_free: 1 or 0.
template <int C>
SG_HD void observation_terms(const double* R, const double* t, const double* X, const double* intr,
                             const double* dist, const double* y, double c, const int64_t* cols,
                             const double* cam_free, double point_free, int64_t loss, double scale,
                             double min_depth, bool exact, ObservationTerms<C>& o) {
    const Projection p = project_point(R, t, X, dist, min_depth);
    const double* xr = p.xr;
    const bool valid = p.valid;
    const double inv_z = p.inv_z, n0 = p.n[0], n1 = p.n[1], d0 = p.d[0], d1 = p.d[1];
    const double fx = intr[0], fy = intr[1];
    const double r2 = n0 * n0 + n1 * n1;
    // d uv / d x_c = diag(f) (dd/dn) [[1/z, 0, -n_x/z], [0, 1/z, -n_y/z]]
    double A[2][3] = {{inv_z, 0.0, -n0 * inv_z}, {0.0, inv_z, -n1 * inv_z}};
    if (dist != nullptr) {
        const double k1 = dist[0], k2 = dist[1], p1 = dist[2], p2 = dist[3], k3 = dist[4];
        const double radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3));
        const double dradial = k1 + r2 * (2 * k2 + 3 * k3 * r2);
        const double j00 = radial + 2 * n0 * n0 * dradial + 2 * p1 * n1 + 6 * p2 * n0;
        const double j01 = 2 * n0 * n1 * dradial + 2 * p1 * n0 + 2 * p2 * n1;
        const double j11 = radial + 2 * n1 * n1 * dradial + 6 * p1 * n1 + 2 * p2 * n0;
        for (int j = 0; j < 3; ++j) {
            const double a0 = A[0][j], a1 = A[1][j];
            A[0][j] = j00 * a0 + j01 * a1;
            A[1][j] = j01 * a0 + j11 * a1;
        }
    }
    for (int j = 0; j < 3; ++j) {
        A[0][j] *= fx;
        A[1][j] *= fy;
    }
    o.r[0] = fx * d0 + intr[2] - y[0];
    o.r[1] = fy * d1 + intr[3] - y[1];
    double rho1, rho2;
    robust_derivatives(loss, scale, o.r[0] * o.r[0] + o.r[1] * o.r[1], &rho1, &rho2);
    o.w = valid ? c * rho1 : 0.0;
    o.k = (valid && exact && loss != kLinear) ? 2 * c * rho2 : 0.0;
    // pose: du/ddt = A and du/ddphi = -A [x_r]_x (written out); point: du/dX = A R
    for (int i = 0; i < 2; ++i) {
        const double* a = A[i];
        o.Jc[i][0] = a[0];
        o.Jc[i][1] = a[1];
        o.Jc[i][2] = a[2];
        o.Jc[i][3] = a[2] * xr[1] - a[1] * xr[2];
        o.Jc[i][4] = a[0] * xr[2] - a[2] * xr[0];
        o.Jc[i][5] = a[1] * xr[0] - a[0] * xr[1];
        for (int j = 0; j < 3; ++j) o.Jp[i][j] = (a[0] * R[j] + a[1] * R[3 + j] + a[2] * R[6 + j]) * point_free;
    }
    const double xy2 = 2 * n0 * n1;
    for (int q = 0; q < C - 6; ++q) {
        double c0 = 0.0, c1 = 0.0;
        switch (cols[q]) {
            case kColF: c0 = fx * d0; c1 = fy * d1; break;
            case kColFx: c0 = fx * d0; break;
            case kColFy: c1 = fy * d1; break;
            case kColCx: c0 = 1.0; break;
            case kColCy: c1 = 1.0; break;
            case kColK1: c0 = fx * n0 * r2; c1 = fy * n1 * r2; break;
            case kColK2: c0 = fx * n0 * r2 * r2; c1 = fy * n1 * r2 * r2; break;
            case kColK3: c0 = fx * n0 * r2 * r2 * r2; c1 = fy * n1 * r2 * r2 * r2; break;
            case kColP1: c0 = fx * xy2; c1 = fy * (r2 + 2 * n1 * n1); break;
            case kColP2: c0 = fx * (r2 + 2 * n0 * n0); c1 = fy * xy2; break;
            default: break;
        }
        o.Jc[0][6 + q] = c0;
        o.Jc[1][6 + q] = c1;
    }
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < C; ++j) o.Jc[i][j] *= cam_free[j];
}

// The observation's terms of the normal equations, with J^T (w I + k r r^T) J for each block:
// U [C, C] += Jc^T (.) Jc and g_c [C] += w Jc^T r through add_cam(index in [0, C * C + C), value) (U row-major,
// then g_c); V [3, 3] += Jp^T (.) Jp and g_p [3] += w Jp^T r added to V and gp; Wo [C, 3] = Jc^T (.) Jp written.
template <int C, typename AddCam>
SG_HD void normal_terms(const ObservationTerms<C>& o, AddCam&& add_cam, double* V, double* gp, double* Wo) {
    double rJc[C], rJp[3];
    for (int j = 0; j < C; ++j) rJc[j] = o.r[0] * o.Jc[0][j] + o.r[1] * o.Jc[1][j];
    for (int j = 0; j < 3; ++j) rJp[j] = o.r[0] * o.Jp[0][j] + o.r[1] * o.Jp[1][j];
    const double w = o.w, k = o.k;
    for (int a = 0; a < C; ++a) {
        for (int b = 0; b < C; ++b)
            add_cam(a * C + b, w * (o.Jc[0][a] * o.Jc[0][b] + o.Jc[1][a] * o.Jc[1][b]) + k * rJc[a] * rJc[b]);
        add_cam(C * C + a, w * rJc[a]);
        for (int b = 0; b < 3; ++b)
            Wo[3 * a + b] = w * (o.Jc[0][a] * o.Jp[0][b] + o.Jc[1][a] * o.Jp[1][b]) + k * rJc[a] * rJp[b];
    }
    for (int a = 0; a < 3; ++a) {
        for (int b = 0; b < 3; ++b)
            V[3 * a + b] += w * (o.Jp[0][a] * o.Jp[0][b] + o.Jp[1][a] * o.Jp[1][b]) + k * rJp[a] * rJp[b];
        gp[a] += w * rJp[a];
    }
}

}  // namespace ba
}  // namespace scenegrad
