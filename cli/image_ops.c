/* image_ops.c: channel mapping, range change and reflect padding for the ddpm tool (see image_ops.h). */
#include "image_ops.h"

#include "ddpm.h"

#include <string.h>

/* BT.601 luma, as PIL's convert("L") uses. */
static inline float
luma (float r, float g, float b)
{
  return 0.299f * r + 0.587f * g + 0.114f * b;
}

gboolean
channel_map_init (ChannelMap *m, int image_channels, int model_channels, GError **error)
{
  if (image_channels < 1 || image_channels > 4)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED, "images with %d channels are not supported",
                   image_channels);
      return FALSE;
    }
  if (model_channels < 1 || model_channels > 4)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED,
                   "models with %d channels cannot be applied to images (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA)",
                   model_channels);
      return FALSE;
    }
  m->image_alpha = image_channels == 2 || image_channels == 4;
  m->image_color = image_channels - m->image_alpha;
  m->model_alpha = model_channels == 2 || model_channels == 4;
  m->model_color = model_channels - m->model_alpha;
  return TRUE;
}

void
channel_map_to_model (const ChannelMap *m, const float *img, float *model, size_t plane)
{
  const float *alpha = m->image_alpha ? img + (size_t) m->image_color * plane : NULL;
  for (size_t i = 0; i < plane; i++)
    {
      float c[3];
      if (m->image_color == 3 && m->model_color == 1)
        c[0] = luma (img[i], img[plane + i], img[2 * plane + i]);
      else
        for (int k = 0; k < m->model_color; k++)
          c[k] = img[(size_t) (m->image_color == 1 ? 0 : k) * plane + i];
      for (int k = 0; k < m->model_color; k++)
        model[(size_t) k * plane + i] = c[k] * 2.0f - 1.0f;
      if (m->model_alpha)
        model[(size_t) m->model_color * plane + i] = alpha ? alpha[i] * 2.0f - 1.0f : 1.0f;
    }
}

void
channel_map_from_model (const ChannelMap *m, const float *model, const float *orig, float *out, size_t plane)
{
  for (size_t i = 0; i < plane; i++)
    {
      float c[4];
      for (int k = 0; k < m->model_color + m->model_alpha; k++)
        c[k] = model[(size_t) k * plane + i] * 0.5f + 0.5f;
      if (m->model_color == 3 && m->image_color == 1)
        out[i] = luma (c[0], c[1], c[2]);
      else
        for (int k = 0; k < m->image_color; k++)
          out[(size_t) k * plane + i] = c[m->model_color == 1 ? 0 : k];
      if (m->image_alpha)
        {
          size_t a = (size_t) m->image_color * plane + i;
          out[a] = m->model_alpha ? c[m->model_color] : orig[a];
        }
    }
}

void
model_to_unit_range (float *x, size_t n)
{
  for (size_t i = 0; i < n; i++)
    x[i] = x[i] * 0.5f + 0.5f;     /* x * 0.5 is exact, so this equals diffusers' x / 2 + 0.5 */
}

int
reflect_index (int i, int n)
{
  if (n <= 1)
    return 0;
  int period = 2 * (n - 1);
  i %= period;
  if (i < 0)
    i += period;
  return i < n ? i : period - i;
}

float *
image_pad_reflect (const float *x, int c, int h, int w, int hp, int wp)
{
  float *out = g_try_new (float, (size_t) c * hp * wp);
  if (!out)
    return NULL;
  for (int k = 0; k < c; k++)
    for (int y = 0; y < hp; y++)
      {
        const float *src = x + ((size_t) k * h + reflect_index (y, h)) * w;
        float *dst = out + ((size_t) k * hp + y) * wp;
        memcpy (dst, src, (size_t) w * sizeof (float));
        for (int xx = w; xx < wp; xx++)
          dst[xx] = src[reflect_index (xx, w)];
      }
  return out;
}

void
image_crop (const float *x, int c, int hp, int wp, int h, int w, float *out)
{
  for (int k = 0; k < c; k++)
    for (int y = 0; y < h; y++)
      memcpy (out + ((size_t) k * h + y) * w, x + ((size_t) k * hp + y) * wp, (size_t) w * sizeof (float));
}
