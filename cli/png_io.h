/* png_io.h: PNG files <-> planar float images for the ddpm command-line tool (libpng).
 *
 * Pixels are float32 in [0, 1], planar (C, H, W): plane c holds channel c row by row. Channel counts
 * follow PNG's colour types: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA. Errors are GError in DDPM_ERROR
 * (IO, FORMAT, LIMIT) with messages "<file>: <problem>". */
#pragma once

#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

/* Default for cli_png_load's max_pixels: 64 Mpixel (1 GiB of float RGBA). */
#define CLI_PNG_DEFAULT_MAX_PIXELS ((uint64_t) 1 << 26)

typedef struct {
  int width, height;
  int channels;                    /* 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA */
  int source_bit_depth;            /* 8 or 16 after expansion (palette and <8-bit gray become 8) */
  float *data;                     /* (channels, height, width), values in [0, 1], owned */
} CliImage;

/* Reads any PNG: 1/2/4/8/16-bit, gray, gray+alpha, RGB, RGBA, palette (expanded to RGB, or RGBA when
 * it has transparency), tRNS (becomes an alpha channel), interlaced. Refuses width * height above
 * max_pixels (DDPM_ERROR_LIMIT naming the limit). */
CliImage *cli_png_load (const char *path, uint64_t max_pixels, GError **error);
void cli_image_free (CliImage *img);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (CliImage, cli_image_free)

/* Writes an 8-bit PNG from planar floats (channels, height, width), channels 1..4 as above. Each value
 * is clamped to [0, 1] and quantised as round(255 * x) with round-half-to-even in float32, the same as
 * diffusers' numpy_to_pil ((image * 255).round().astype("uint8")). NaN is written as 0. */
gboolean cli_png_save (const char *path, const float *data, int channels, int height, int width,
                         GError **error);

/* The 8-bit quantisation cli_png_save uses, exposed for tests. */
uint8_t cli_png_quantize_u8 (float x);

G_END_DECLS
