/* tiling.h: overlap tiling of an area larger than the model's native size, and padding to the size the
 * UNet needs. Pictures are (C, H, W) float planes (see pixels.h); nothing is ever rescaled.
 *
 * An area of W x H is covered by tiles of tile_w x tile_h whose origins are spread evenly so that
 * neighbours overlap by at least `overlap` pixels. Each tile is processed on its own; the results are
 * blended with weights that ramp linearly across each actual overlap (sum of weights = 1 there) and are 1
 * elsewhere, so a tile's edge never shows as a seam. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  int width, height;     /* the area */
  int tile_w, tile_h;    /* tile size, at most the area's */
  int nx, ny;            /* tiles across and down */
  int *xs, *ys;          /* (nx), (ny): tile origins */
} DdpmTiling;

/* Plans the tiles. tile_w/tile_h larger than the area shrink to it. */
void ddpm_tiling_plan (DdpmTiling *t, int width, int height, int tile_w, int tile_h, int overlap);
void ddpm_tiling_clear (DdpmTiling *t);
static inline int ddpm_tiling_count (const DdpmTiling *t) { return t->nx * t->ny; }

/* Tile i (row-major): its origin in the area. Its size is tile_w x tile_h. */
void ddpm_tiling_origin (const DdpmTiling *t, int i, int *x, int *y);

/* Copies tile i of area (C, height, width) into tile (C, tile_h, tile_w). */
void ddpm_tiling_extract (const DdpmTiling *t, int i, const float *area, int channels, float *tile);

/* acc (C, height, width) += w * tile, wsum (height, width) += w, with tile i's blend weights w. */
void ddpm_tiling_accumulate (const DdpmTiling *t, int i, const float *tile, int channels, float *acc, float *wsum);

/* TRUE when tile i overlaps the rectangle (x, y, w, h) of the area: tiles that do not touch the pixels
 * that will be kept need not run. */
gboolean ddpm_tiling_intersects (const DdpmTiling *t, int i, int x, int y, int w, int h);

/* acc /= wsum: the blended result. Pixels that no tile covered (wsum 0: their tiles were skipped) take
 * the value of fallback (C, height, width), or 0 when fallback is NULL. */
void ddpm_tiling_normalize (const DdpmTiling *t, int channels, float *acc, const float *wsum, const float *fallback);

/* The smallest multiple of m that is >= n (and >= m). */
int ddpm_round_up (int n, int m);

/* dst (C, h2, w2) = src (C, h, w) in the top-left corner, extended to the right and down by mirroring
 * (edge pixel repeated: ... c b a | a b c ... ), so the padding continues the picture's texture.
 * h2 >= h, w2 >= w; works for any h, w >= 1. */
void ddpm_pad_symmetric (const float *src, int channels, int h, int w, float *dst, int h2, int w2);

/* dst (C, h2, w2) = the top-left (C, h2, w2) crop of src (C, h, w). */
void ddpm_crop (const float *src, int channels, int h, int w, float *dst, int h2, int w2);

G_END_DECLS
