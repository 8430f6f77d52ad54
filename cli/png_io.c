/* png_io.c: PNG reading and writing with libpng, see png_io.h.
 *
 * libpng reports errors by longjmp()ing out of whatever call failed. Everything that must be freed after
 * such a jump lives in a heap state struct that libpng also holds (as its error pointer), so its fields
 * are in memory, not in registers that setjmp/longjmp may clobber; the jump target turns the message
 * that the error callback saved into a GError. */
#include "png_io.h"

#include "ddpm.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <string.h>

typedef struct {
  char message[256];               /* libpng's last error message */
  FILE *file;
  png_bytep pixels;                /* read: rowbytes * height; write: one interleaved 8-bit row */
  png_bytepp rows;
} PngState;

static void
on_png_error (png_structp png, png_const_charp msg)
{
  PngState *st = png_get_error_ptr (png);
  g_strlcpy (st->message, msg ? msg : "unknown libpng error", sizeof st->message);
  png_longjmp (png, 1);
}

static void
on_png_warning (png_structp png, png_const_charp msg)
{
  /* Warnings (bad sRGB/iCCP chunks, ...) do not stop decoding; the tool stays quiet about them. */
}

static void
png_state_free (PngState *st)
{
  if (st->file)
    fclose (st->file);
  g_free (st->pixels);
  g_free (st->rows);
  g_free (st);
}

void
cli_image_free (CliImage *img)
{
  if (!img)
    return;
  g_free (img->data);
  g_free (img);
}

/* ---- reading ----------------------------------------------------------------------------------- */

CliImage *
cli_png_load (const char *path, uint64_t max_pixels, GError **error)
{
  PngState *st = g_new0 (PngState, 1);
  png_structp png = NULL;
  png_infop info = NULL;
  CliImage *img = NULL;

  st->file = g_fopen (path, "rb");
  if (!st->file)
    {
      int e = errno;
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO, "%s: %s", path, g_strerror (e));
      png_state_free (st);
      return NULL;
    }
  png_byte sig[8];
  size_t got = fread (sig, 1, 8, st->file);
  if (got != 8 || png_sig_cmp (sig, 0, 8) != 0)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: not a PNG file", path);
      png_state_free (st);
      return NULL;
    }

  png = png_create_read_struct (PNG_LIBPNG_VER_STRING, st, on_png_error, on_png_warning);
  if (png)
    info = png_create_info_struct (png);
  if (!png || !info)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_NOMEM, "%s: out of memory for the PNG decoder", path);
      png_destroy_read_struct (png ? &png : NULL, NULL, NULL);
      png_state_free (st);
      return NULL;
    }
  if (setjmp (png_jmpbuf (png)))
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: invalid or truncated PNG (%s)", path, st->message);
      png_destroy_read_struct (&png, &info, NULL);
      png_state_free (st);
      return NULL;
    }
  png_init_io (png, st->file);
  png_set_sig_bytes (png, 8);
  png_read_info (png, info);

  png_uint_32 width = png_get_image_width (png, info);
  png_uint_32 height = png_get_image_height (png, info);
  int color_type = png_get_color_type (png, info);
  int bit_depth = png_get_bit_depth (png, info);
  if ((uint64_t) width * height > max_pixels)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT,
                   "%s: image of %u x %u pixels exceeds the limit of %" G_GUINT64_FORMAT " pixels", path,
                   (unsigned) width, (unsigned) height, max_pixels);
      png_destroy_read_struct (&png, &info, NULL);
      png_state_free (st);
      return NULL;
    }

  /* Expand everything to 8 or 16 bits per channel, 1..4 channels. 16-bit samples stay big-endian. */
  if (color_type == PNG_COLOR_TYPE_PALETTE)
    png_set_palette_to_rgb (png);
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8)
    png_set_expand_gray_1_2_4_to_8 (png);
  if (png_get_valid (png, info, PNG_INFO_tRNS))
    png_set_tRNS_to_alpha (png);
  png_set_interlace_handling (png);
  png_read_update_info (png, info);

  int channels = png_get_channels (png, info);
  int depth = png_get_bit_depth (png, info);
  size_t rowbytes = png_get_rowbytes (png, info);
  if (channels < 1 || channels > 4 || (depth != 8 && depth != 16) || rowbytes != (size_t) width * channels * depth / 8)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: unsupported PNG layout (%d channels, %d bits)", path,
                   channels, depth);
      png_destroy_read_struct (&png, &info, NULL);
      png_state_free (st);
      return NULL;
    }
  st->pixels = g_try_malloc ((size_t) rowbytes * height);
  st->rows = g_try_new (png_bytep, height);
  if (!st->pixels || !st->rows)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_NOMEM, "%s: out of memory for %u x %u pixels", path,
                   (unsigned) width, (unsigned) height);
      png_destroy_read_struct (&png, &info, NULL);
      png_state_free (st);
      return NULL;
    }
  for (png_uint_32 y = 0; y < height; y++)
    st->rows[y] = st->pixels + (size_t) y * rowbytes;
  png_read_image (png, st->rows);
  png_read_end (png, NULL);

  size_t plane = (size_t) width * height;
  float *data = g_try_new (float, plane * channels);
  if (!data)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_NOMEM, "%s: out of memory for %u x %u pixels", path,
                   (unsigned) width, (unsigned) height);
      png_destroy_read_struct (&png, &info, NULL);
      png_state_free (st);
      return NULL;
    }
  /* Interleaved (H, W, C) integers -> planar (C, H, W) floats in [0, 1]. */
  for (size_t i = 0; i < plane; i++)
    for (int c = 0; c < channels; c++)
      {
        size_t k = i * channels + c;
        data[(size_t) c * plane + i] = depth == 8 ? st->pixels[k] / 255.0f
                                                  : ((st->pixels[2 * k] << 8) | st->pixels[2 * k + 1]) / 65535.0f;
      }

  img = g_new0 (CliImage, 1);
  img->width = (int) width;
  img->height = (int) height;
  img->channels = channels;
  img->source_bit_depth = depth;
  img->data = data;
  png_destroy_read_struct (&png, &info, NULL);
  png_state_free (st);
  return img;
}

/* ---- writing ----------------------------------------------------------------------------------- */

uint8_t
cli_png_quantize_u8 (float x)
{
  if (!(x > 0.0f))                 /* also NaN */
    return 0;
  if (x >= 1.0f)
    return 255;
  return (uint8_t) rintf (x * 255.0f);  /* float32 product, round half to even (default FP mode) */
}

gboolean
cli_png_save (const char *path, const float *data, int channels, int height, int width, GError **error)
{
  static const int color_types[] = { 0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                     PNG_COLOR_TYPE_RGB_ALPHA };
  if (channels < 1 || channels > 4 || width <= 0 || height <= 0)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED,
                   "%s: cannot write a PNG with %d channels of %d x %d pixels (1 to 4 channels)", path, channels,
                   width, height);
      return FALSE;
    }
  PngState *st = g_new0 (PngState, 1);
  st->pixels = g_malloc ((size_t) width * channels);
  st->file = g_fopen (path, "wb");
  if (!st->file)
    {
      int e = errno;
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO, "%s: %s", path, g_strerror (e));
      png_state_free (st);
      return FALSE;
    }
  png_structp png = png_create_write_struct (PNG_LIBPNG_VER_STRING, st, on_png_error, on_png_warning);
  png_infop info = png ? png_create_info_struct (png) : NULL;
  if (!png || !info)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_NOMEM, "%s: out of memory for the PNG encoder", path);
      png_destroy_write_struct (png ? &png : NULL, NULL);
      png_state_free (st);
      g_remove (path);
      return FALSE;
    }
  if (setjmp (png_jmpbuf (png)))
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO, "%s: PNG write failed (%s)", path, st->message);
      png_destroy_write_struct (&png, &info);
      png_state_free (st);
      g_remove (path);
      return FALSE;
    }
  png_init_io (png, st->file);
  png_set_IHDR (png, info, (png_uint_32) width, (png_uint_32) height, 8, color_types[channels], PNG_INTERLACE_NONE,
                PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info (png, info);
  size_t plane = (size_t) width * height;
  for (int y = 0; y < height; y++)
    {
      for (int x = 0; x < width; x++)
        for (int c = 0; c < channels; c++)
          st->pixels[(size_t) x * channels + c] = cli_png_quantize_u8 (data[(size_t) c * plane + (size_t) y * width + x]);
      png_write_row (png, st->pixels);
    }
  png_write_end (png, NULL);
  png_destroy_write_struct (&png, &info);

  FILE *f = st->file;
  st->file = NULL;
  gboolean ok = fflush (f) == 0 && !ferror (f);
  int e = errno;
  if (fclose (f) != 0 && ok)
    {
      ok = FALSE;
      e = errno;
    }
  png_state_free (st);
  if (!ok)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO, "%s: write failed: %s", path, g_strerror (e));
      g_remove (path);
    }
  return ok;
}
