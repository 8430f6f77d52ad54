/* pixels.h: GEGL buffers <-> float planes in the model's range.
 *
 * Layout: a picture is (C, H, W) float32, channel-major ("NCHW" with N = 1), values in [-1, 1] where
 * -1 is black and 1 is white (x = 2 p - 1 for a pixel value p in [0, 1]). Pixels are read and written in
 * GIMP's perceptual (sRGB-encoded) float formats, as the models were trained on sRGB images; babl converts
 * from and to whatever precision the drawable has (8/16/32-bit integer, half, float).
 *
 * Channel mapping (model channels <- drawable):
 *   1 (gray)  <- Y' of the drawable (an RGB drawable gets the gray result on all three channels)
 *   3 (RGB)   <- R'G'B' (a gray drawable is read as R = G = B and written back as its luminance)
 *   4 (RGBA)  <- R'G'B'A, by default with the colour premultiplied by alpha (R'a G'a B'a A, the layout of
 *                the project's emoji models: a transparent pixel is (-1, -1, -1, -1)); a model folder's
 *                gimp_ddpm.json with "alpha": "straight" says otherwise.
 * The drawable's own alpha is kept aside, (H, W) in [0, 1], and written back unchanged ("keep_alpha"):
 * for 4-channel models the model's colour is then made straight with the model's alpha and written with
 * the drawable's alpha. Only new layers (Generate) take the model's alpha. */
#pragma once

#include <babl/babl.h>
#include <gegl.h>
#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  int channels;          /* model channels: 1, 3 or 4 */
  gboolean premultiplied;  /* 4 channels: colour premultiplied by alpha */
  gboolean keep_alpha;   /* the drawable's alpha is read aside and written back as it was */
} DdpmPixelMap;

/* The mapping for a model with model_channels channels (premultiplied: see above) on a drawable whose
 * alpha is kept (keep_alpha: the drawable has alpha and it must not change). FALSE with
 * DDPM_ERROR_UNSUPPORTED when the model has another channel count. */
gboolean ddpm_pixel_map_init (DdpmPixelMap *map, int model_channels, gboolean premultiplied, gboolean keep_alpha,
                              GError **error);

/* Reads rect of buffer: planes (C, h, w) in [-1, 1], and when map->keep_alpha the drawable's alpha (h, w)
 * in [0, 1] (else alpha may be NULL). FALSE with DDPM_ERROR_NOMEM when scratch memory is short. */
gboolean ddpm_pixels_read (GeglBuffer *buffer, const GeglRectangle *rect, const DdpmPixelMap *map, float *planes,
                           float *alpha, GError **error);

/* Writes planes (C, h, w) in [-1, 1] (clamped to it when clamp; 4-channel colour always to [0, alpha])
 * into rect of buffer, with alpha (h, w) as the alpha when map->keep_alpha. */
gboolean ddpm_pixels_write (GeglBuffer *buffer, const GeglRectangle *rect, const DdpmPixelMap *map,
                            const float *planes, const float *alpha, gboolean clamp, GError **error);

/* g_try_malloc of n floats with an out-of-memory error naming what it was for. */
float *ddpm_pixels_alloc (size_t n, const char *what, GError **error);

G_END_DECLS
