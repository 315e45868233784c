// The per-pixel loops of the CPU sphere renderer (sphere_render_cpu.cpp), included there twice: once
// as plain code and, on x86-64, once more with SG_LANES_TARGET = __attribute__((target("avx2,fma")))
// in another namespace, so that one build runs 8-wide on CPUs that have AVX2 and still runs on those
// that do not (the launcher picks one at run time). No include guard, on purpose. Each loop over the
// lanes is branch-free, so that the compiler makes it SIMD code; the math is spheres.h's.
//
// Defined by the includer: SG_LANES_TARGET, and the namespace around this file; the types and helpers
// above the include (TileSpheres, Common, FwdOut, BwdArgs, kFwdLanes, kBwdLanes).

// The forward pass of kFwdLanes pixels (x0 + l, y), l < nx, of one camera: the online blend of
// PixelBlend (spheres.h) with its state in arrays over the lanes and its branches as selects, so that
// each step is one vectorised loop. Spheres are visited in the tile's order; a lane takes part in a
// sphere while the sphere's bound is at least its stop, and the segment ends when no lane does.
// FD > 0 fixes the feature count at compile time; 0 reads d.D.
// Stores the segment's K strongest ids and weights (slot-major, top_id[k][l]) pixel-major, as the
// outputs hold them: ids[l * K + k], w[l * K + k] (weights over the pixel's total, inv_W[l]).
template <typename T, int FK>
SG_LANES_TARGET inline void store_top(const int32_t (*top_id)[kFwdLanes], const T (*top_w)[kFwdLanes], const T* inv_W,
                                      int nx, int32_t* ids, T* w, int K_ = FK) {
    const int K = FK > 0 ? FK : K_;
    for (int l = 0; l < nx; ++l)
        for (int k = 0; k < K; ++k) {
            ids[l * K + k] = top_id[k][l];
            w[l * K + k] = top_w[k][l] * inv_W[l];
        }
}

// The rays of pixels (x0 + l, y), l < L, of the camera with intrinsics in = (fx, fy, cx, cy):
// directions (a, b, 1), inv_dd and origins (ox, oy, 0); persp as Blend's.
template <typename T, int L>
SG_LANES_TARGET inline void lane_rays(int x0, int y, const T* in, T persp, T* a, T* b, T* inv_dd, T* ox, T* oy) {
    SG_OMP(simd)
    for (int l = 0; l < L; ++l) {
        const Ray<T> r = pixel_ray<T>(x0 + l, y, in[0], in[1], in[2], in[3], persp);
        a[l] = r.a;
        b[l] = r.b;
        inv_dd[l] = r.inv_dd;
        ox[l] = r.ox;
        oy[l] = r.oy;
    }
}

// Ortho: the camera's projection (Blend::persp == 0), fixed at compile time so that perspective lanes
// carry no ray origins.
template <typename T, int FD, bool Ortho>
SG_LANES_TARGET void forward_lanes(const Common<T>& g, const TileSpheres<T>& local, const int32_t* ids, int64_t n,
                                   int cam, int y, int x0, int nx, const FwdOut<T>& o) {
    constexpr int L = kFwdLanes;
    const SphereDims& d = g.d;
    const Blend<T>& p = g.p;
    const int D = FD > 0 ? FD : d.D, K = d.K;
    const T* in = g.intrinsics + 4 * cam;
    alignas(64) T a[L], b[L], inv_dd[L], ox[L], oy[L], M[L], sw[L], swz[L], wbg[L], relog[L], stop[L];
    alignas(64) T acc[FD > 0 ? FD : kMaxFeatures][L], top_w[kMaxIds][L];
    alignas(64) int32_t top_id[kMaxIds][L], lasthit[L];
    alignas(64) T hm[L], hs[L], zs[L], es[L], ws[L], scale[L];
    lane_rays<T, L>(x0, y, in, p.persp, a, b, inv_dd, ox, oy);
    const T M0 = p.bg_exp, stop0 = M0 - p.cut, never = std::numeric_limits<T>::infinity();
    for (int l = 0; l < L; ++l) {
        M[l] = M0;  // PixelBlend::init
        sw[l] = swz[l] = T(0);
        wbg[l] = T(1);
        relog[l] = T(2);
        stop[l] = l < nx ? stop0 : never;  // lanes past the row never blend
        lasthit[l] = -1;
    }
    for (int c = 0; c < D; ++c)
        for (int l = 0; l < L; ++l) acc[c][l] = T(0);
    for (int k = 0; k < K; ++k)
        for (int l = 0; l < L; ++l) {
            top_w[k][l] = T(0);
            top_id[k][l] = -1;
        }
    auto lowest_stop = [&] {
        T m = stop[0];
        for (int l = 1; l < L; ++l) m = sg_min(m, stop[l]);
        return m;
    };
    T seg_stop = lowest_stop();
    const int x1 = x0 + nx - 1;
    for (int64_t j = 0; j < n; ++j) {
        if (local.bound[j] < seg_stop) break;  // bounds decrease along the list: every lane has stopped
        if (local.misses(j, y, x0, x1)) continue;
        const Sphere<T>& s = local.s[j];
        const T X = s.X, Y = s.Y, Z = s.Z, inv_r2 = s.inv_r2, r2 = s.r2, bound = s.bound, opacity = s.opacity;
        int any = 0;
        SG_OMP(simd reduction(| : any))
        for (int l = 0; l < L; ++l) {
            T k;
            const T h = Ortho ? sphere_h(X - ox[l], Y - oy[l], Z, inv_r2, a[l], b[l], inv_dd[l], k)
                              : sphere_h(X, Y, Z, inv_r2, a[l], b[l], inv_dd[l], k);
            const T z = sphere_z(r2, h, k, inv_dd[l]);
            const bool hit = is_hit(h, z, p) & (bound >= stop[l]);
            hm[l] = hit ? T(1) : T(0);
            hs[l] = hit ? h : T(0);
            zs[l] = hit ? z : T(0);
            es[l] = hit ? depth_exponent(z, opacity, p) : M[l];
            any |= hit ? 1 : 0;
        }
        if (!any) continue;
        // PixelBlend::add: a hit above the running max M rescales the sums by exp(M - e) and becomes the
        // max (its own weight factor is then 1); one below weighs exp(e - M). Misses: w = 0, scale 1.
        int relogged = 0;
        SG_OMP(simd reduction(| : relogged))
        for (int l = 0; l < L; ++l) {
            const T dd = es[l] - M[l];
            const bool up = dd > T(0);
            const T t = lane_exp(up ? -dd : dd);
            const T sc = up ? t : T(1);
            const T w = opacity * hs[l] * (up ? T(1) : t);
            M[l] = up ? es[l] : M[l];
            sw[l] = sw[l] * sc + w;
            swz[l] = swz[l] * sc + w * zs[l];
            wbg[l] *= sc;
            relog[l] *= sc;
            scale[l] = sc;
            ws[l] = w;
            relogged |= ((hm[l] != T(0)) & (sw[l] + wbg[l] >= relog[l])) ? 1 : 0;
        }
        for (int l = 0; l < L; ++l) lasthit[l] = hm[l] != T(0) ? (int32_t)j : lasthit[l];
        const T* f = local.f.data() + j * D;
        for (int c = 0; c < D; ++c) {
            const T fc = f[c];
            T* ac = acc[c];
            SG_OMP(simd)
            for (int l = 0; l < L; ++l) ac[l] = ac[l] * scale[l] + ws[l] * fc;
        }
        // The K strongest, strongest first: slot k takes the new weight where it beats slot k and not
        // slot k - 1, slot k - 1's entry where it beats both (ties keep the earlier entry first).
        const int32_t id = ids[j];
        for (int k = K - 1; k > 0; --k) {
            T* tw = top_w[k];
            int32_t* ti = top_id[k];
            const T* pw = top_w[k - 1];
            const int32_t* pi = top_id[k - 1];
            SG_OMP(simd)
            for (int l = 0; l < L; ++l) {
                const T w = ws[l], cur = tw[l] * scale[l], prev = pw[l] * scale[l];
                const bool ins = w > cur, shift = w > prev;
                tw[l] = ins ? (shift ? prev : w) : cur;
                const int32_t mi = -int32_t(ins), ms = -int32_t(shift);  // ids selected by masks: no branch
                ti[l] = (((pi[l] & ms) | (id & ~ms)) & mi) | (ti[l] & ~mi);
            }
        }
        if (K > 0) {
            SG_OMP(simd)
            for (int l = 0; l < L; ++l) {
                const T w = ws[l], cur = top_w[0][l] * scale[l];
                const bool ins = w > cur;
                top_w[0][l] = ins ? w : cur;
                const int32_t mi = -int32_t(ins);
                top_id[0][l] = (id & mi) | (top_id[0][l] & ~mi);
            }
        }
        if (relogged) {  // stop = M + log(total) - cut, recomputed once per doubling of the total
            SG_OMP(simd)
            for (int l = 0; l < L; ++l) {
                const T total = sw[l] + wbg[l];
                const bool redo = (hm[l] != T(0)) & (total >= relog[l]);  // then total > 0
                const T restop = M[l] + lane_log(total) - p.cut;
                stop[l] = redo ? restop : stop[l];
                relog[l] = redo ? T(2) * total : relog[l];
            }
            seg_stop = lowest_stop();
        }
    }
    // The outputs (write_pixel's): the totals in one loop over the lanes, then the stores, each output
    // in its own loop so that the compiler vectorises them.
    alignas(64) T W[L], inv_W[L], alpha[L], depth[L];
    SG_OMP(simd)
    for (int l = 0; l < L; ++l) {
        const PixelTotals<T> t = pixel_totals(sw[l], swz[l], wbg[l]);
        W[l] = t.W;
        inv_W[l] = t.inv_W;
        alpha[l] = t.alpha;
        depth[l] = t.depth;
    }
    const T* bg = g.background;
    if (bg)
        for (int c = 0; c < D; ++c)
            for (int l = 0; l < L; ++l) acc[c][l] += wbg[l] * bg[c];
    const int64_t pix0 = ((int64_t)cam * d.H + y) * d.W + x0;
    T* f = o.f + pix0 * D;
    for (int l = 0; l < nx; ++l)
        for (int c = 0; c < D; ++c) f[l * D + c] = acc[c][l] * inv_W[l];
    for (int l = 0; l < nx; ++l) {
        o.a[pix0 + l] = alpha[l];
        o.z[pix0 + l] = depth[l];
        o.last[pix0 + l] = lasthit[l] + 1;  // the backward replays the hits before it
        o.state[2 * (pix0 + l)] = M[l];
        o.state[2 * (pix0 + l) + 1] = W[l];
    }
    if (K == 4)  // the default: a fixed count lets the compiler vectorise the interleaving
        store_top<T, 4>(top_id, top_w, inv_W, nx, o.ids + pix0 * 4, o.w + pix0 * 4);
    else
        store_top<T, 0>(top_id, top_w, inv_W, nx, o.ids + pix0 * K, o.w + pix0 * K, K);
}

// The backward pass of kBwdLanes pixels (x0 + l, y), l < nx: every hit the forward blended (those before
// the pixel's `last`), PixelGrad::hit_grads per lane in one vectorised loop, the lanes' sums added to
// the sphere's row of `grads` [n, row]; the gradients to the rays' (a, b) go to the intrinsics gi.
template <typename T, int FD, bool Ortho>
SG_LANES_TARGET void backward_lanes(const Common<T>& g, const BwdArgs<T>& b, const TileSpheres<T>& local, int64_t n,
                                    int cam, int y, int x0, int nx, T* grads, T* gi) {
    constexpr int L = kBwdLanes;
    const SphereDims& d = g.d;
    const Blend<T>& p = g.p;
    const int D = FD > 0 ? FD : d.D;
    const T* in = g.intrinsics + 4 * cam;
    alignas(64) T a[L], bb[L], inv_dd[L], ox[L], oy[L], M[L], inv_W[L], A[L], Z[L], inv_sw[L], gA[L], gZ[L], ga[L],
        gb[L];
    alignas(64) T F[FD > 0 ? FD : kMaxFeatures][L], gF[FD > 0 ? FD : kMaxFeatures][L], wW[L];
    alignas(64) int32_t last[L];
    const int64_t pix0 = ((int64_t)cam * d.H + y) * d.W + x0;
    lane_rays<T, L>(x0, y, in, p.persp, a, bb, inv_dd, ox, oy);
    for (int l = 0; l < L; ++l) ga[l] = gb[l] = T(0);
    // Lane l reads pixel pix(l): pix0 + l, or for lanes past the row its last pixel (they replay
    // nothing). The loader is instantiated for whole segments apart, whose consecutive pixels the
    // compiler loads as vectors (clamping every lane would make them gathers).
    auto load = [&](auto pix) {
        SG_OMP(simd)
        for (int l = 0; l < L; ++l) {
            const PixelGrad<T> pg(pix(l), D, b.out_f, b.out_a, b.out_z, b.state, b.v_f, b.v_a, b.v_z, p);
            M[l] = pg.M;
            inv_W[l] = pg.inv_W;
            A[l] = pg.A;
            Z[l] = pg.Z;
            inv_sw[l] = pg.inv_sw;
            gA[l] = pg.gA;
            gZ[l] = pg.gZ;
            const int32_t lp = b.last[pix(l)];  // loaded unconditionally (pix is in the row): no branch
            last[l] = l < nx ? lp : 0;
        }
        for (int c = 0; c < D; ++c)
            for (int l = 0; l < L; ++l) {
                F[c][l] = b.out_f[pix(l) * D + c];
                gF[c][l] = b.v_f[pix(l) * D + c];
            }
    };
    if (nx == L)
        load([&](int l) { return pix0 + l; });
    else
        load([&](int l) { return pix0 + sg_min(l, nx - 1); });
    int32_t max_last = 0;
    for (int l = 0; l < L; ++l) max_last = sg_max(max_last, last[l]);
    if (max_last == 0) return;
    const ExponentLine<T> line = exponent_line(p);
    const int x1 = x0 + nx - 1;
    for (int64_t j = 0; j < max_last; ++j) {
        if (local.misses(j, y, x0, x1)) continue;
        const Sphere<T>& s = local.s[j];
        const T* f = local.f.data() + j * D;
        const int32_t jj = (int32_t)j;
        T sX = 0, sY = 0, sZ = 0, sr = 0, so = 0;
        int any = 0;
        SG_OMP(simd reduction(+ : sX, sY, sZ, sr, so) reduction(| : any))
        for (int l = 0; l < L; ++l) {
            T k;
            const T h = Ortho ? sphere_h(s.X - ox[l], s.Y - oy[l], s.Z, s.inv_r2, a[l], bb[l], inv_dd[l], k)
                              : sphere_h(s.X, s.Y, s.Z, s.inv_r2, a[l], bb[l], inv_dd[l], k);
            const T z = sphere_z(s.r2, h, k, inv_dd[l]);
            const bool hit = is_hit(h, z, p) & (jj < last[l]);
            const T de = depth_exponent(z, s.opacity, p) - M[l];
            const T E = lane_exp(hit ? de : T(0));
            PixelGrad<T> pg;
            pg.M = M[l];
            pg.inv_W = inv_W[l];
            pg.A = A[l];
            pg.Z = Z[l];
            pg.inv_sw = inv_sw[l];
            pg.gA = gA[l];
            pg.gZ = gZ[l];
            pg.de_dz = line.de_dz;
            pg.e_at0 = line.e_at0;
            pg.F = &F[0][l];
            pg.gF = &gF[0][l];
            pg.D = D;
            pg.stride = L;
            const Ray<T> ray = Ortho ? Ray<T>{a[l], bb[l], inv_dd[l], ox[l], oy[l], T(0)}
                                     : Ray<T>{a[l], bb[l], inv_dd[l], T(0), T(0), T(1)};
            const HitRowGrad<T> r = pg.hit_grads(s, ray, hit ? h : T(1), k, hit ? z : T(0), E, f);
            sX += hit ? r.g.X : T(0);
            sY += hit ? r.g.Y : T(0);
            sZ += hit ? r.g.Z : T(0);
            sr += hit ? r.g.r : T(0);
            so += hit ? r.opacity : T(0);
            ga[l] += hit ? r.g.a : T(0);
            gb[l] += hit ? r.g.b : T(0);
            wW[l] = hit ? r.wW : T(0);
            any |= hit ? 1 : 0;
        }
        if (!any) continue;
        T* row = grads + j * b.row;
        row[0] += sX;
        row[1] += sY;
        row[2] += sZ;
        row[3] += sr;
        row[4] += so;
        for (int c = 0; c < D; ++c) {
            T sf = 0;
            SG_OMP(simd reduction(+ : sf))
            for (int l = 0; l < L; ++l) sf += gF[c][l] * wW[l];
            row[5 + c] += sf;
        }
    }
    // u = a + ox = (x - cx) / fx, v = b + oy = (y - cy) / fy
    // (lanes past the row hit nothing: their ga, gb are 0)
    const T fx = in[0], fy = in[1];
    T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    SG_OMP(simd reduction(+ : s0, s1, s2, s3))
    for (int l = 0; l < L; ++l) {
        s0 += ga[l] * (Ortho ? ox[l] : a[l]) / fx;
        s1 += gb[l] * (Ortho ? oy[l] : bb[l]) / fy;
        s2 += ga[l] / fx;
        s3 += gb[l] / fy;
    }
    gi[0] -= s0;
    gi[1] -= s1;
    gi[2] -= s2;
    gi[3] -= s3;
}
