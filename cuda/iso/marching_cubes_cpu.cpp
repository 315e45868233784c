// CPU launcher of marching cubes. Works slab by slab (fixed i) so memory stays at the outputs plus
// two [Y, Z, 3] vertex-id maps per thread, whatever the grid size: pass 1 counts each slab's
// vertices (the crossed edges leaving its points) and triangles (its cells); prefix sums give every
// slab its output ranges; pass 2 writes each slab's vertices and, from the id maps of slabs i and
// i + 1, its triangles. Both passes are OpenMP loops over slabs. The math is in marching_cubes.h.
#include <vector>

#include "common/checks.h"
#include "iso/marching_cubes.h"
#include "iso/marching_cubes_ops.h"

namespace scenegrad {
namespace iso {
namespace {

// Vertex ids of slab i's edges, [Y, Z, 3] (-1 where not crossed); writes edges when given.
template <typename T>
void slab_ids(const T* v, const McGrid& g, int64_t i, T level, int64_t first, std::vector<int32_t>& ids,
              int64_t* edges) {
    int64_t next = first;
    const int64_t strides[3] = {g.Y * g.Z, g.Z, 1};
    for (int64_t j = 0; j < g.Y; ++j)
        for (int64_t k = 0; k < g.Z; ++k) {
            const int bits = mc_point_edges(v, g, i, j, k, level);
            const int64_t p = g.index(i, j, k);
            for (int a = 0; a < 3; ++a) {
                int32_t id = -1;
                if (bits >> a & 1) {
                    if (edges != nullptr) {
                        edges[2 * next] = p;
                        edges[2 * next + 1] = p + strides[a];
                    }
                    id = (int32_t)next++;
                }
                ids[(j * g.Z + k) * 3 + a] = id;
            }
        }
}

}  // namespace

std::vector<torch::Tensor> marching_cubes_fwd_cpu(const torch::Tensor& values, double level,
                                                  const torch::Tensor& tris, const torch::Tensor& counts) {
    check_marching_cubes_inputs(values, tris, counts);
    SG_CHECK_CPU(values);
    const McGrid g{values.size(0), values.size(1), values.size(2)};
    const int M = (int)tris.size(1);
    const int8_t* table = tris.data_ptr<int8_t>();
    const int8_t* ntri = counts.data_ptr<int8_t>();
    std::vector<int64_t> vcount(g.X + 1, 0), tcount(g.X + 1, 0);
    torch::Tensor edges, faces;
    AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "marching_cubes_fwd_cpu", [&] {
        using T = scalar_t;
        const T* v = values.data_ptr<T>();
        const T lv = (T)level;
        const bool big = g.X * g.Y * g.Z >= (int64_t(1) << 16);  // threads pay off from about 40^3
        SG_OMP(parallel for schedule(dynamic, 1) if(big))
        for (int64_t i = 0; i < g.X; ++i) {
            int64_t nv = 0, nt = 0;
            for (int64_t j = 0; j < g.Y; ++j)
                for (int64_t k = 0; k < g.Z; ++k) {
                    nv += mc_popcount3(mc_point_edges(v, g, i, j, k, lv));
                    if (i + 1 < g.X && j + 1 < g.Y && k + 1 < g.Z) nt += ntri[mc_cell_case(v, g, i, j, k, lv)];
                }
            vcount[i + 1] = nv;
            tcount[i + 1] = nt;
        }
        for (int64_t i = 0; i < g.X; ++i) {
            vcount[i + 1] += vcount[i];
            tcount[i + 1] += tcount[i];
        }
        TORCH_CHECK(vcount[g.X] < (int64_t(1) << 31), "marching_cubes: more than 2^31 vertices");
        edges = torch::empty({vcount[g.X], 2}, values.options().dtype(torch::kInt64));
        faces = torch::empty({tcount[g.X], 3}, values.options().dtype(torch::kInt32));
        int64_t* e = edges.data_ptr<int64_t>();
        int32_t* f = faces.data_ptr<int32_t>();
        SG_OMP(parallel if(big))
        {
            std::vector<int32_t> here(g.Y * g.Z * 3), above(g.Y * g.Z * 3);
            SG_OMP(for schedule(dynamic, 1))
            for (int64_t i = 0; i < g.X; ++i) {
                slab_ids(v, g, i, lv, vcount[i], here, e);
                if (i + 1 >= g.X || g.Y < 2 || g.Z < 2) continue;
                slab_ids(v, g, i + 1, lv, vcount[i + 1], above, (int64_t*)nullptr);
                int64_t out = tcount[i];
                for (int64_t j = 0; j + 1 < g.Y; ++j)
                    for (int64_t k = 0; k + 1 < g.Z; ++k) {
                        const int c = mc_cell_case(v, g, i, j, k, lv);
                        for (int t = 0; t < ntri[c]; ++t, ++out)
                            for (int m = 0; m < 3; ++m) {
                                const int edge = table[(c * M + t) * 3 + m];
                                const int corner = mc_edge_corner(edge);
                                const std::vector<int32_t>& ids = (corner & 1) ? above : here;
                                const int64_t jj = j + ((corner >> 1) & 1), kk = k + ((corner >> 2) & 1);
                                f[3 * out + m] = ids[(jj * g.Z + kk) * 3 + edge / 4];
                            }
                    }
            }
        }
    });
    return {edges, faces};
}

}  // namespace iso
}  // namespace scenegrad
