/* cpu_elementwise.c: the CPU backend's memory-bound ops (casts, timestep embedding, channel bias,
 * residual add, concatenation, nearest upsampling, non-finite count). Layout NCHW float32. */
#include "cpu_ops.h"

#include <math.h>
#include <string.h>

/* Loops shorter than this stay on one thread: a parallel region costs a few microseconds. */
#define PAR_MIN 32768

void
cpu_cast_in (DdpmBackend *be, const float *x, void *y, size_t n)
{
  if ((const void *) x != y)
    memcpy (y, x, n * sizeof (float));
}

void
cpu_cast_out (DdpmBackend *be, const void *x, float *y, size_t n)
{
  if (x != (const void *) y)
    memcpy (y, x, n * sizeof (float));
}

/* diffusers' get_timestep_embedding, float32 throughout as PyTorch computes it:
 * exponent_i = (-ln(10000) * i) / (half - freq_shift); freq_i = exp(exponent_i); arg = t * freq_i;
 * y (B, dim) = [sin(arg), cos(arg)], or [cos, sin] when flip. exp/sin/cos are evaluated in double and
 * rounded, i.e. correctly rounded float32 results (torch's own exp agrees on every cifar/celebahq freq). */
void
cpu_timestep_embedding (DdpmBackend *be, const float *t, void *y_, int B, int dim, gboolean flip,
                        float freq_shift)
{
  float *y = y_;
  int half = dim / 2;
  const float neg_log_max = (float) -log (10000.0);
  for (int i = 0; i < half; i++)
    {
      float exponent = (neg_log_max * (float) i) / ((float) half - freq_shift);
      float freq = (float) exp ((double) exponent);
      for (int b = 0; b < B; b++)
        {
          float arg = t[b] * freq;
          float s = (float) sin ((double) arg), c = (float) cos ((double) arg);
          float *row = y + (size_t) b * dim;
          row[flip ? half + i : i] = s;
          row[flip ? i : half + i] = c;
        }
    }
}

/* h (B, C, HW) += v[b * stride + c] */
void
cpu_add_channel_bias_strided (float *h, const float *v, int B, int C, int HW, int stride)
{
  int64_t rows = (int64_t) B * C;
#pragma omp parallel for schedule (static) if (rows * HW >= PAR_MIN)
  for (int64_t r = 0; r < rows; r++)
    {
      float *p = h + r * HW;
      float add = v[(r / C) * stride + r % C];
#pragma omp simd
      for (int i = 0; i < HW; i++)
        p[i] += add;
    }
}

/* h (B, C, HW) += v (B, C) */
void
cpu_add_channel_bias (DdpmBackend *be, void *h, const void *v, int B, int C, int HW)
{
  cpu_add_channel_bias_strided (h, v, B, C, HW, C);
}

/* y = (a + b) * scale; y may alias a or b (elementwise, so in place is safe). */
void
cpu_add_scaled (DdpmBackend *be, const void *a_, const void *b_, void *y_, size_t n, float scale)
{
  const float *a = a_, *b = b_;
  float *y = y_;
  if (scale == 1.0f)
    {
#pragma omp parallel for simd schedule (static) if (n >= PAR_MIN)
      for (size_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
    }
  else
    {
#pragma omp parallel for simd schedule (static) if (n >= PAR_MIN)
      for (size_t i = 0; i < n; i++)
        y[i] = (a[i] + b[i]) * scale;
    }
}

/* y (B, Ca + Cb, HW) = [a (B, Ca, HW), b (B, Cb, HW)]: two contiguous copies per image. */
void
cpu_concat_channels (DdpmBackend *be, const void *a_, int Ca, const void *b_, int Cb, void *y_, int B, int HW)
{
  const float *a = a_, *b = b_;
  float *y = y_;
  size_t na = (size_t) Ca * HW, nb = (size_t) Cb * HW;
#pragma omp parallel for schedule (static) if ((na + nb) * B >= PAR_MIN)
  for (int i = 0; i < 2 * B; i++)
    {
      int img = i / 2;
      float *dst = y + (size_t) img * (na + nb);
      if (i % 2 == 0)
        memcpy (dst, a + img * na, na * sizeof (float));
      else
        memcpy (dst + na, b + img * nb, nb * sizeof (float));
    }
}

/* y (B, C, 2H, 2W): every x (B, C, H, W) value repeated into a 2x2 block. */
void
cpu_upsample_nearest2x (DdpmBackend *be, const void *x_, void *y_, int B, int C, int H, int W)
{
  const float *x = x_;
  float *y = y_;
  int64_t rows = (int64_t) B * C * H;
#pragma omp parallel for schedule (static) if (rows * W * 4 >= PAR_MIN)
  for (int64_t r = 0; r < rows; r++)
    {
      const float *src = x + r * W;
      float *dst = y + r * 4 * W;          /* output rows 2r and 2r + 1 of the same plane */
#pragma omp simd
      for (int i = 0; i < W; i++)
        {
          dst[2 * i] = src[i];
          dst[2 * i + 1] = src[i];
        }
      memcpy (dst + 2 * W, dst, 2 * (size_t) W * sizeof (float));
    }
}

/* NaN and +-Inf are the floats whose exponent bits are all ones. */
size_t
cpu_count_nonfinite (DdpmBackend *be, const float *x, size_t n)
{
  const uint32_t *bits = (const uint32_t *) x;
  size_t count = 0;
#pragma omp parallel for simd schedule (static) reduction (+ : count) if (n >= PAR_MIN)
  for (size_t i = 0; i < n; i++)
    count += (bits[i] & 0x7f800000u) == 0x7f800000u;
  return count;
}
