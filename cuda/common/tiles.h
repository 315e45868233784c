// The pixel rectangle of one tile of a tile-binned rasterizer (Gaussians, spheres): tiles are
// numbered camera by camera, row by row, each `tile` pixels square and clipped to the image.
// Dims is any struct with tile, tiles_x, tiles_y, W and H (gaussians::RasterDims, spheres::SphereDims).
#pragma once
#include <cstdint>

#include "common/hd.h"

namespace scenegrad {

struct TileCoords {
    int cam, x0, y0, x1, y1;  // pixel range [x0, x1) x [y0, y1)
};

template <typename Dims>
SG_HD TileCoords tile_coords(const Dims& d, int64_t tile) {
    const int64_t per_cam = (int64_t)d.tiles_x * d.tiles_y;
    TileCoords t;
    t.cam = (int)(tile / per_cam);
    const int rest = (int)(tile % per_cam);
    const int ty = rest / d.tiles_x, tx = rest % d.tiles_x;
    t.x0 = tx * d.tile;
    t.y0 = ty * d.tile;
    t.x1 = sg_min(d.W, t.x0 + d.tile);
    t.y1 = sg_min(d.H, t.y0 + d.tile);
    return t;
}

}  // namespace scenegrad
