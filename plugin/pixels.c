/* pixels.c: GEGL buffers <-> (C, H, W) float planes in [-1, 1] (see pixels.h). */
#include "pixels.h"

#include "ddpm.h"

float *
ddpm_pixels_alloc (size_t n, const char *what, GError **error)
{
  float *p = n <= G_MAXSIZE / sizeof (float) ? g_try_malloc (n * sizeof (float)) : NULL;
  if (p == NULL)
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_NOMEM, "out of memory: %s needs %.1f MB", what,
                 n * (double) sizeof (float) / 1e6);
  return p;
}

gboolean
ddpm_pixel_map_init (DdpmPixelMap *map, int model_channels, gboolean drawable_has_alpha, GError **error)
{
  map->channels = model_channels;
  switch (model_channels)
    {
    case 1:
      map->alpha = drawable_has_alpha;
      map->format = babl_format (drawable_has_alpha ? "Y'A float" : "Y' float");
      break;
    case 3:
      map->alpha = drawable_has_alpha;
      map->format = babl_format (drawable_has_alpha ? "R'G'B'A float" : "R'G'B' float");
      break;
    case 4:
      map->alpha = FALSE;
      map->format = babl_format ("R'G'B'A float");
      break;
    default:
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED,
                   "the model has %d image channels; the plug-in maps 1 (gray), 3 (RGB) or 4 (RGBA)",
                   model_channels);
      return FALSE;
    }
  map->format_channels = map->channels + (map->alpha ? 1 : 0);
  return TRUE;
}

gboolean
ddpm_pixels_read (GeglBuffer *buffer, const GeglRectangle *rect, const DdpmPixelMap *map, float *planes,
                  float *alpha, GError **error)
{
  const size_t n = (size_t) rect->width * rect->height;
  const int fc = map->format_channels, C = map->channels;
  g_autofree float *pix = ddpm_pixels_alloc (n * fc, "reading the pixels", error);
  if (pix == NULL)
    return FALSE;
  gegl_buffer_get (buffer, rect, 1.0, map->format, pix, GEGL_AUTO_ROWSTRIDE, GEGL_ABYSS_NONE);
  for (size_t i = 0; i < n; i++)
    {
      for (int c = 0; c < C; c++)
        planes[c * n + i] = 2.0f * pix[i * fc + c] - 1.0f;
      if (map->alpha && alpha != NULL)
        alpha[i] = pix[i * fc + C];
    }
  return TRUE;
}

gboolean
ddpm_pixels_write (GeglBuffer *buffer, const GeglRectangle *rect, const DdpmPixelMap *map, const float *planes,
                   const float *alpha, gboolean clamp, GError **error)
{
  const size_t n = (size_t) rect->width * rect->height;
  const int fc = map->format_channels, C = map->channels;
  g_autofree float *pix = ddpm_pixels_alloc (n * fc, "writing the pixels", error);
  if (pix == NULL)
    return FALSE;
  for (size_t i = 0; i < n; i++)
    {
      for (int c = 0; c < C; c++)
        {
          float x = planes[c * n + i];
          if (clamp)
            x = CLAMP (x, -1.0f, 1.0f);
          pix[i * fc + c] = 0.5f * (x + 1.0f);
        }
      if (map->alpha)
        pix[i * fc + C] = alpha != NULL ? alpha[i] : 1.0f;
    }
  gegl_buffer_set (buffer, rect, 0, map->format, pix, GEGL_AUTO_ROWSTRIDE);
  return TRUE;
}
