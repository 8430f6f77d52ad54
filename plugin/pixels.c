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
ddpm_pixel_map_init (DdpmPixelMap *map, int model_channels, gboolean premultiplied, gboolean keep_alpha,
                     GError **error)
{
  if (model_channels != 1 && model_channels != 3 && model_channels != 4)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED,
                   "the model has %d image channels; the plug-in maps 1 (gray), 3 (RGB) or 4 (RGBA)",
                   model_channels);
      return FALSE;
    }
  map->channels = model_channels;
  map->premultiplied = model_channels == 4 && premultiplied;
  map->keep_alpha = keep_alpha;
  return TRUE;
}

/* The interleaved float format of a read, and its channel count (the model's, plus the drawable's alpha
 * for 1 and 3 channels). 4 channels always read alpha (1 where the drawable has none). */
static const Babl *
read_format (const DdpmPixelMap *map, int *n)
{
  switch (map->channels)
    {
    case 1:
      *n = map->keep_alpha ? 2 : 1;
      return babl_format (map->keep_alpha ? "Y'A float" : "Y' float");
    case 3:
      *n = map->keep_alpha ? 4 : 3;
      return babl_format (map->keep_alpha ? "R'G'B'A float" : "R'G'B' float");
    default:
      *n = 4;
      return babl_format (map->premultiplied ? "R'aG'aB'aA float" : "R'G'B'A float");
    }
}

gboolean
ddpm_pixels_read (GeglBuffer *buffer, const GeglRectangle *rect, const DdpmPixelMap *map, float *planes,
                  float *alpha, GError **error)
{
  const size_t n = (size_t) rect->width * rect->height;
  int fc;
  const Babl *format = read_format (map, &fc);
  const int C = map->channels;
  g_autofree float *pix = ddpm_pixels_alloc (n * fc, "reading the pixels", error);
  if (pix == NULL)
    return FALSE;
  gegl_buffer_get (buffer, rect, 1.0, format, pix, GEGL_AUTO_ROWSTRIDE, GEGL_ABYSS_NONE);
  for (size_t i = 0; i < n; i++)
    {
      for (int c = 0; c < C; c++)
        planes[c * n + i] = 2.0f * pix[i * fc + c] - 1.0f;
      if (map->keep_alpha && alpha != NULL)
        alpha[i] = pix[i * fc + fc - 1];
    }
  return TRUE;
}

gboolean
ddpm_pixels_write (GeglBuffer *buffer, const GeglRectangle *rect, const DdpmPixelMap *map, const float *planes,
                   const float *alpha, gboolean clamp, GError **error)
{
  const size_t n = (size_t) rect->width * rect->height;
  const int C = map->channels;
  const gboolean own_alpha = map->keep_alpha && alpha != NULL;
  /* 1 or 3 channels: the model's values (+ kept alpha). 4 channels: with the drawable's alpha, straight
   * colour and that alpha; else the model's 4 channels (premultiplied or straight). */
  int fc = C + (C < 4 && own_alpha ? 1 : 0);
  const Babl *format;
  if (C == 1)
    format = babl_format (own_alpha ? "Y'A float" : "Y' float");
  else if (C == 3)
    format = babl_format (own_alpha ? "R'G'B'A float" : "R'G'B' float");
  else
    format = babl_format (map->premultiplied && !own_alpha ? "R'aG'aB'aA float" : "R'G'B'A float");
  g_autofree float *pix = ddpm_pixels_alloc (n * fc, "writing the pixels", error);
  if (pix == NULL)
    return FALSE;
  for (size_t i = 0; i < n; i++)
    {
      float *p = pix + i * fc;
      for (int c = 0; c < C; c++)
        {
          float x = planes[c * n + i];
          if (clamp || C == 4)
            x = CLAMP (x, -1.0f, 1.0f);
          p[c] = 0.5f * (x + 1.0f);
        }
      if (C == 4)
        {
          const float a = p[3];
          for (int c = 0; c < 3 && map->premultiplied; c++)
            {
              p[c] = CLAMP (p[c], 0.0f, a);  /* premultiplied colour cannot exceed alpha */
              if (own_alpha)
                p[c] = a > 1.0f / 1024 ? p[c] / a : 0.0f;  /* straight colour for the drawable's alpha */
            }
          if (own_alpha)
            p[3] = alpha[i];
        }
      else if (own_alpha)
        p[C] = alpha[i];
    }
  gegl_buffer_set (buffer, rect, 0, format, pix, GEGL_AUTO_ROWSTRIDE);
  return TRUE;
}
