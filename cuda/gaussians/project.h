// Per-(camera, Gaussian) math of project_gaussians (EWA projection, see render/gaussians/project.py
// for the formulas and render/_reference/gaussian_project.py for the PyTorch twin), shared by the
// CPU launcher (gaussian_project_cpu.cpp) and the CUDA launcher (gaussian_project.cu).
//
// Layouts: mean [3], quat [4] (w, x, y, z, any norm), scale [3] (activated), V [16] a row-major
// 4x4 world-to-camera matrix [[W, w], [0, 1]], K [9] row-major intrinsics. Outputs per pair:
// radius (int, 0 = culled), mean2d [2], depth, conic [3] = (a, b, c) of cov2d^-1, compensation.
#pragma once
#include "common/hd.h"

namespace scenegrad {
namespace gaussians {

constexpr double kFovClamp = 1.3;  // Jacobian clamp factor, as in 3DGS and gsplat

template <typename T>
struct ProjectParams {
    T eps2d, near_plane, far_plane, radius_clip;
    int width, height;
    bool antialiased;
};

// Rotation matrix (row-major) of a unit (w, x, y, z) quaternion.
template <typename T>
SG_HD void quat_to_rotmat(const T q[4], T R[9]) {
    const T w = q[0], x = q[1], y = q[2], z = q[3];
    R[0] = T(1) - T(2) * (y * y + z * z);
    R[1] = T(2) * (x * y - w * z);
    R[2] = T(2) * (x * z + w * y);
    R[3] = T(2) * (x * y + w * z);
    R[4] = T(1) - T(2) * (x * x + z * z);
    R[5] = T(2) * (y * z - w * x);
    R[6] = T(2) * (x * z - w * y);
    R[7] = T(2) * (y * z + w * x);
    R[8] = T(1) - T(2) * (x * x + y * y);
}

// Gradient of quat_to_rotmat with respect to the unit quaternion q, given gR = dL/dR.
template <typename T>
SG_HD void quat_to_rotmat_vjp(const T q[4], const T gR[9], T gq[4]) {
    const T w = q[0], x = q[1], y = q[2], z = q[3];
    gq[0] = T(2) * (x * (gR[7] - gR[5]) + y * (gR[2] - gR[6]) + z * (gR[3] - gR[1]));
    gq[1] = T(2) * (-T(2) * x * (gR[4] + gR[8]) + y * (gR[1] + gR[3]) + z * (gR[2] + gR[6]) + w * (gR[7] - gR[5]));
    gq[2] = T(2) * (x * (gR[1] + gR[3]) - T(2) * y * (gR[0] + gR[8]) + z * (gR[5] + gR[7]) + w * (gR[2] - gR[6]));
    gq[3] = T(2) * (x * (gR[2] + gR[6]) + y * (gR[5] + gR[7]) - T(2) * z * (gR[0] + gR[4]) + w * (gR[3] - gR[1]));
}

// Everything the forward computes for one pair and the backward reuses.
template <typename T>
struct ProjectState {
    T qn[4], qnorm;   // unit quaternion and the input's norm
    T R[9], M[9];     // rotation, M = R diag(scale)
    T A[9], S[9];     // A = W Sigma (Sigma = M M^T), S = Sigma_c = W Sigma W^T
    T x, y, z;        // camera-space mean
    T tx, ty;         // clamped x/z, y/z used in the Jacobian
    int clamp_x, clamp_y;  // 0 inside the limits, +-1 clamped at +-lim
    T J00, J02, J11, J12;  // non-zero entries of the 2x3 Jacobian
    T s00, s01, s11;  // cov2d before the low-pass filter
    T a00, a11, det;  // filtered diagonal and determinant
};

// Fills st up to the 2D covariance; returns false when the mean is outside (near, far).
template <typename T>
SG_HD bool project_state(const T* mean, const T* quat, const T* scale, const T* V, const T* K,
                         const ProjectParams<T>& p, ProjectState<T>& st) {
    st.x = V[0] * mean[0] + V[1] * mean[1] + V[2] * mean[2] + V[3];
    st.y = V[4] * mean[0] + V[5] * mean[1] + V[6] * mean[2] + V[7];
    st.z = V[8] * mean[0] + V[9] * mean[1] + V[10] * mean[2] + V[11];
    if (!(st.z > p.near_plane && st.z < p.far_plane)) return false;

    st.qnorm = sg_sqrt(quat[0] * quat[0] + quat[1] * quat[1] + quat[2] * quat[2] + quat[3] * quat[3]);
    for (int i = 0; i < 4; ++i) st.qn[i] = quat[i] / st.qnorm;
    quat_to_rotmat(st.qn, st.R);
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) st.M[3 * i + j] = st.R[3 * i + j] * scale[j];
    T Sigma[9];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            Sigma[3 * i + j] = st.M[3 * i] * st.M[3 * j] + st.M[3 * i + 1] * st.M[3 * j + 1] +
                               st.M[3 * i + 2] * st.M[3 * j + 2];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            st.A[3 * i + j] = V[4 * i] * Sigma[j] + V[4 * i + 1] * Sigma[3 + j] + V[4 * i + 2] * Sigma[6 + j];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            st.S[3 * i + j] = st.A[3 * i] * V[4 * j] + st.A[3 * i + 1] * V[4 * j + 1] + st.A[3 * i + 2] * V[4 * j + 2];

    const T fx = K[0], fy = K[4];
    const T lim_x = T(kFovClamp) * T(0.5) * T(p.width) / fx;
    const T lim_y = T(kFovClamp) * T(0.5) * T(p.height) / fy;
    const T rx = st.x / st.z, ry = st.y / st.z;
    st.clamp_x = rx > lim_x ? 1 : (rx < -lim_x ? -1 : 0);
    st.clamp_y = ry > lim_y ? 1 : (ry < -lim_y ? -1 : 0);
    st.tx = st.clamp_x == 0 ? rx : T(st.clamp_x) * lim_x;
    st.ty = st.clamp_y == 0 ? ry : T(st.clamp_y) * lim_y;
    st.J00 = fx / st.z;
    st.J02 = -fx * st.tx / st.z;
    st.J11 = fy / st.z;
    st.J12 = -fy * st.ty / st.z;

    const T* S = st.S;
    // cov2d = J S J^T with J = [[J00, 0, J02], [0, J11, J12]].
    const T r00 = st.J00 * S[0] + st.J02 * S[6], r01 = st.J00 * S[1] + st.J02 * S[7],
            r02 = st.J00 * S[2] + st.J02 * S[8];
    const T r11 = st.J11 * S[4] + st.J12 * S[7], r12 = st.J11 * S[5] + st.J12 * S[8];
    st.s00 = r00 * st.J00 + r02 * st.J02;
    st.s01 = r01 * st.J11 + r02 * st.J12;
    st.s11 = r11 * st.J11 + r12 * st.J12;
    st.a00 = st.s00 + p.eps2d;
    st.a11 = st.s11 + p.eps2d;
    st.det = st.a00 * st.a11 - st.s01 * st.s01;
    return true;
}

// Forward of one (camera, Gaussian) pair; writes zeros and returns 0 when it is culled.
template <typename T>
SG_HD int project_forward(const T* mean, const T* quat, const T* scale, const T* V, const T* K,
                          const ProjectParams<T>& p, T* mean2d, T& depth, T* conic, T& compensation) {
    mean2d[0] = mean2d[1] = depth = conic[0] = conic[1] = conic[2] = compensation = T(0);
    ProjectState<T> st;
    if (!project_state(mean, quat, scale, V, K, p, st)) return 0;
    if (!(st.det > T(0))) return 0;
    const T half_trace = T(0.5) * (st.a00 + st.a11);
    const T lam = half_trace + sg_sqrt(sg_max(half_trace * half_trace - st.det, T(0)));
    const T radius = sg_ceil(T(3) * sg_sqrt(sg_max(lam, T(0))));
    if (!sg_isfinite(radius) || !(radius > p.radius_clip)) return 0;
    const T u = st.x / st.z, v = st.y / st.z;
    const T mx = K[0] * u + K[1] * v + K[2], my = K[3] * u + K[4] * v + K[5];
    if (!(mx + radius > T(0) && mx - radius < T(p.width) && my + radius > T(0) && my - radius < T(p.height)))
        return 0;
    mean2d[0] = mx;
    mean2d[1] = my;
    depth = st.z;
    conic[0] = st.a11 / st.det;
    conic[1] = -st.s01 / st.det;
    conic[2] = st.a00 / st.det;
    if (p.antialiased) {
        const T ratio = (st.s00 * st.s11 - st.s01 * st.s01) / st.det;
        compensation = ratio > T(0) ? sg_sqrt(ratio) : T(0);
    }
    return (int)sg_min(radius, T(1 << 30));
}

// Backward of one visible pair (radius > 0 in the forward): adds the gradients of the loss to
// g_mean [3], g_quat [4], g_scale [3] and, when g_V is not null, to g_V [16] (row-major 4x4,
// bottom row untouched) and g_K [9]. g_comp is ignored unless p.antialiased.
template <typename T>
SG_HD void project_backward(const T* mean, const T* quat, const T* scale, const T* V, const T* K,
                            const ProjectParams<T>& p, const T* g_mean2d, T g_depth, const T* g_conic, T g_comp,
                            T* g_mean, T* g_quat, T* g_scale, T* g_V, T* g_K) {
    ProjectState<T> st;
    if (!project_state(mean, quat, scale, V, K, p, st)) return;
    const T det = st.det, z = st.z;
    const T fx = K[0], fy = K[4];

    // conic = cov2d^-1: dA = -A^-1 G A^-1, G the symmetric gradient of the conic matrix.
    const T ia = st.a11 / det, ib = -st.s01 / det, ic = st.a00 / det;
    const T ga = g_conic[0], gb = T(0.5) * g_conic[1], gc = g_conic[2];
    const T p00 = ia * ga + ib * gb, p01 = ia * gb + ib * gc, p10 = ib * ga + ic * gb, p11 = ib * gb + ic * gc;
    T g00 = -(p00 * ia + p01 * ib);
    T g11 = -(p10 * ib + p11 * ic);
    T g01 = T(-2) * (p00 * ib + p01 * ic);  // s01 enters both off-diagonal entries
    if (p.antialiased) {
        const T det_orig = st.s00 * st.s11 - st.s01 * st.s01;
        const T ratio = det_orig / det;
        if (ratio > T(0)) {
            const T gr = g_comp * T(0.5) / sg_sqrt(ratio) / (det * det);
            g00 += gr * (st.s11 * det - det_orig * st.a11);
            g11 += gr * (st.s00 * det - det_orig * st.a00);
            g01 += gr * T(-2) * st.s01 * (det - det_orig);
        }
    }

    // cov2d = J S J^T: gS = J^T Gc J, gJ = 2 Gc J S, with Gc = [[g00, g01/2], [g01/2, g11]].
    const T h = T(0.5) * g01;
    const T J[6] = {st.J00, T(0), st.J02, T(0), st.J11, st.J12};
    T B[6];  // Gc J
    for (int k = 0; k < 3; ++k) {
        B[k] = g00 * J[k] + h * J[3 + k];
        B[3 + k] = h * J[k] + g11 * J[3 + k];
    }
    T gS[9];
    for (int k = 0; k < 3; ++k)
        for (int l = 0; l < 3; ++l) gS[3 * k + l] = J[k] * B[l] + J[3 + k] * B[3 + l];
    const T* S = st.S;
    const T gJ00 = T(2) * (B[0] * S[0] + B[1] * S[3] + B[2] * S[6]);
    const T gJ02 = T(2) * (B[0] * S[2] + B[1] * S[5] + B[2] * S[8]);
    const T gJ11 = T(2) * (B[3] * S[1] + B[4] * S[4] + B[5] * S[7]);
    const T gJ12 = T(2) * (B[3] * S[2] + B[4] * S[5] + B[5] * S[8]);

    // J entries -> camera-space mean, focal lengths (also through the clamp limits).
    T gx = T(0), gy = T(0), gz = T(0), gfx = T(0), gfy = T(0);
    gfx += (gJ00 - gJ02 * st.tx) / z;
    gfy += (gJ11 - gJ12 * st.ty) / z;
    gz += (-fx * gJ00 + fx * st.tx * gJ02 - fy * gJ11 + fy * st.ty * gJ12) / (z * z);
    const T gtx = -gJ02 * fx / z, gty = -gJ12 * fy / z;
    if (st.clamp_x == 0) {
        gx += gtx / z;
        gz -= gtx * st.x / (z * z);
    } else {
        gfx -= gtx * st.tx / fx;  // tx = +-1.3 width / (2 fx)
    }
    if (st.clamp_y == 0) {
        gy += gty / z;
        gz -= gty * st.y / (z * z);
    } else {
        gfy -= gty * st.ty / fy;
    }

    // mean2d = K[:2] (x/z, y/z, 1), depth = z.
    const T u = st.x / z, v = st.y / z;
    const T gm0 = g_mean2d[0], gm1 = g_mean2d[1];
    const T gu = gm0 * K[0] + gm1 * K[3], gv = gm0 * K[1] + gm1 * K[4];
    gx += gu / z;
    gy += gv / z;
    gz += g_depth - (gu * st.x + gv * st.y) / (z * z);

    // Camera space: p = W mean + w, S = W Sigma W^T.
    const T gp[3] = {gx, gy, gz};
    for (int j = 0; j < 3; ++j) g_mean[j] += V[j] * gp[0] + V[4 + j] * gp[1] + V[8 + j] * gp[2];
    T gSigma[9];  // W^T gS W
    {
        T tmp[9];  // gS W
        for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j)
                tmp[3 * i + j] = gS[3 * i] * V[j] + gS[3 * i + 1] * V[4 + j] + gS[3 * i + 2] * V[8 + j];
        for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j)
                gSigma[3 * i + j] = V[i] * tmp[j] + V[4 + i] * tmp[3 + j] + V[8 + i] * tmp[6 + j];
    }
    if (g_V != nullptr) {
        for (int i = 0; i < 3; ++i) {
            for (int j = 0; j < 3; ++j)
                g_V[4 * i + j] += gp[i] * mean[j] +
                                  T(2) * (gS[3 * i] * st.A[j] + gS[3 * i + 1] * st.A[3 + j] + gS[3 * i + 2] * st.A[6 + j]);
            g_V[4 * i + 3] += gp[i];
        }
        g_K[0] += gm0 * u + gfx;
        g_K[1] += gm0 * v;
        g_K[2] += gm0;
        g_K[3] += gm1 * u;
        g_K[4] += gm1 * v + gfy;
        g_K[5] += gm1;
    }

    // Sigma = M M^T, M = R diag(scale), R = R(q / |q|).
    T gR[9];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) {
            const T gM = T(2) * (gSigma[3 * i] * st.M[j] + gSigma[3 * i + 1] * st.M[3 + j] +
                                 gSigma[3 * i + 2] * st.M[6 + j]);
            gR[3 * i + j] = gM * scale[j];
            g_scale[j] += gM * st.R[3 * i + j];
        }
    T gqn[4];
    quat_to_rotmat_vjp(st.qn, gR, gqn);
    const T dot = gqn[0] * st.qn[0] + gqn[1] * st.qn[1] + gqn[2] * st.qn[2] + gqn[3] * st.qn[3];
    for (int i = 0; i < 4; ++i) g_quat[i] += (gqn[i] - st.qn[i] * dot) / st.qnorm;
}

}  // namespace gaussians
}  // namespace scenegrad
