/* tiling.c: overlap tiling, blend weights, symmetric padding (see tiling.h). */
#include "tiling.h"

#include <string.h>

/* Origins of n tiles of size tile over length len, spread evenly: first at 0, last at len - tile. */
static int *
plan_axis (int len, int tile, int overlap, int *n_out)
{
  int n = 1;
  if (len > tile)
    {
      int stride = MAX (tile - overlap, 1);
      n = 1 + (len - tile + stride - 1) / stride;  /* smallest n with tile + (n-1) stride >= len */
    }
  int *pos = g_new (int, n);
  for (int i = 0; i < n; i++)
    pos[i] = n == 1 ? 0 : (int) (((gint64) i * (len - tile) + (n - 1) / 2) / (n - 1));
  *n_out = n;
  return pos;
}

void
ddpm_tiling_plan (DdpmTiling *t, int width, int height, int tile_w, int tile_h, int overlap)
{
  memset (t, 0, sizeof *t);
  t->width = width;
  t->height = height;
  t->tile_w = MIN (tile_w, width);
  t->tile_h = MIN (tile_h, height);
  t->xs = plan_axis (width, t->tile_w, MIN (overlap, t->tile_w / 2), &t->nx);
  t->ys = plan_axis (height, t->tile_h, MIN (overlap, t->tile_h / 2), &t->ny);
}

void
ddpm_tiling_clear (DdpmTiling *t)
{
  g_clear_pointer (&t->xs, g_free);
  g_clear_pointer (&t->ys, g_free);
}

void
ddpm_tiling_origin (const DdpmTiling *t, int i, int *x, int *y)
{
  *x = t->xs[i % t->nx];
  *y = t->ys[i / t->nx];
}

void
ddpm_tiling_extract (const DdpmTiling *t, int i, const float *area, int channels, float *tile)
{
  int x0, y0;
  ddpm_tiling_origin (t, i, &x0, &y0);
  for (int c = 0; c < channels; c++)
    for (int y = 0; y < t->tile_h; y++)
      memcpy (tile + ((size_t) c * t->tile_h + y) * t->tile_w,
              area + ((size_t) c * t->height + y0 + y) * t->width + x0, t->tile_w * sizeof (float));
}

/* Weight of position u in tile k along an axis: a linear ramp across the overlap with each neighbour
 * (ramps of two neighbours sum to 1 at every overlapped pixel), 1 elsewhere. */
static float
axis_weight (const int *pos, int n, int k, int tile, int u)
{
  float w = 1.0f;
  if (k > 0)
    {
      int ov = pos[k - 1] + tile - pos[k];  /* overlap with the previous tile, >= 1 */
      if (u < ov)
        w = MIN (w, (u + 0.5f) / ov);
    }
  if (k < n - 1)
    {
      int ov = pos[k] + tile - pos[k + 1];
      if (u >= tile - ov)
        w = MIN (w, (tile - u - 0.5f) / ov);
    }
  return w;
}

void
ddpm_tiling_accumulate (const DdpmTiling *t, int i, const float *tile, int channels, float *acc, float *wsum)
{
  int kx = i % t->nx, ky = i / t->nx;
  int x0 = t->xs[kx], y0 = t->ys[ky];
  const size_t plane = (size_t) t->width * t->height;
  for (int y = 0; y < t->tile_h; y++)
    {
      float wy = axis_weight (t->ys, t->ny, ky, t->tile_h, y);
      for (int x = 0; x < t->tile_w; x++)
        {
          float w = wy * axis_weight (t->xs, t->nx, kx, t->tile_w, x);
          size_t a = (size_t) (y0 + y) * t->width + x0 + x;
          wsum[a] += w;
          for (int c = 0; c < channels; c++)
            acc[c * plane + a] += w * tile[((size_t) c * t->tile_h + y) * t->tile_w + x];
        }
    }
}

gboolean
ddpm_tiling_intersects (const DdpmTiling *t, int i, int x, int y, int w, int h)
{
  int x0, y0;
  ddpm_tiling_origin (t, i, &x0, &y0);
  return x0 < x + w && x < x0 + t->tile_w && y0 < y + h && y < y0 + t->tile_h;
}

void
ddpm_tiling_normalize (const DdpmTiling *t, int channels, float *acc, const float *wsum, const float *fallback)
{
  const size_t plane = (size_t) t->width * t->height;
  for (int c = 0; c < channels; c++)
    for (size_t a = 0; a < plane; a++)
      {
        size_t k = c * plane + a;
        acc[k] = wsum[a] > 0.0f ? acc[k] / wsum[a] : (fallback != NULL ? fallback[k] : 0.0f);
      }
}

int
ddpm_round_up (int n, int m)
{
  if (m <= 1)
    return MAX (n, 1);
  return MAX ((n + m - 1) / m * m, m);
}

/* Index into [0, n) of position i >= 0 under symmetric mirroring (period 2n). */
static int
mirror (int i, int n)
{
  int p = i % (2 * n);
  return p < n ? p : 2 * n - 1 - p;
}

void
ddpm_pad_symmetric (const float *src, int channels, int h, int w, float *dst, int h2, int w2)
{
  for (int c = 0; c < channels; c++)
    for (int y = 0; y < h2; y++)
      {
        const float *row = src + ((size_t) c * h + mirror (y, h)) * w;
        float *out = dst + ((size_t) c * h2 + y) * w2;
        for (int x = 0; x < w2; x++)
          out[x] = row[mirror (x, w)];
      }
}

void
ddpm_crop (const float *src, int channels, int h, int w, float *dst, int h2, int w2)
{
  for (int c = 0; c < channels; c++)
    for (int y = 0; y < h2; y++)
      memcpy (dst + ((size_t) c * h2 + y) * w2, src + ((size_t) c * h + y) * w, w2 * sizeof (float));
}
