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
 *   4 (RGBA)  <- R'G'B'A: the model sees alpha as its fourth channel
 * For 1 and 3 channels alpha is kept aside, (H, W) in [0, 1], and written back unchanged. */
#pragma once

#include <babl/babl.h>
#include <gegl.h>
#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  int channels;          /* model channels: 1, 3 or 4 */
  gboolean alpha;        /* the drawable has alpha that is kept aside (channels 1 or 3) */
  const Babl *format;    /* interleaved float format used for reading and writing */
  int format_channels;   /* channels of format: channels + (alpha ? 1 : 0) */
} DdpmPixelMap;

/* The mapping for a model with model_channels channels on a drawable with (or without) alpha. FALSE with
 * DDPM_ERROR_UNSUPPORTED when the model has another channel count. */
gboolean ddpm_pixel_map_init (DdpmPixelMap *map, int model_channels, gboolean drawable_has_alpha, GError **error);

/* Reads rect of buffer: planes (C, h, w) in [-1, 1], alpha (h, w) in [0, 1] when map->alpha (else may be
 * NULL). FALSE with DDPM_ERROR_NOMEM when the scratch buffer cannot be allocated. */
gboolean ddpm_pixels_read (GeglBuffer *buffer, const GeglRectangle *rect, const DdpmPixelMap *map, float *planes,
                           float *alpha, GError **error);

/* Writes planes (C, h, w) [-1, 1] (clamped to it when clamp) and alpha (h, w) into rect of buffer. */
gboolean ddpm_pixels_write (GeglBuffer *buffer, const GeglRectangle *rect, const DdpmPixelMap *map,
                            const float *planes, const float *alpha, gboolean clamp, GError **error);

/* g_try_malloc of n floats with an out-of-memory error naming what it was for. */
float *ddpm_pixels_alloc (size_t n, const char *what, GError **error);

G_END_DECLS
