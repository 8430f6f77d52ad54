/* gpu_check.c: see gpu_check.h. */
#include "gpu_check.h"

#include <math.h>
#include <string.h>

const char *
precision_name (DdpmPrecision p)
{
  switch (p)
    {
    case DDPM_PRECISION_FP32: return "fp32";
    case DDPM_PRECISION_FP16: return "fp16";
    case DDPM_PRECISION_BF16: return "bf16";
    default: return "default";
    }
}

size_t
act_bytes (const DdpmBackend *be)
{
  return be->precision == DDPM_PRECISION_FP16 || be->precision == DDPM_PRECISION_BF16 ? 2 : 4;
}

static uint32_t
f32_bits (float v)
{
  uint32_t u;
  memcpy (&u, &v, 4);
  return u;
}

static float
bits_f32 (uint32_t u)
{
  float v;
  memcpy (&v, &u, 4);
  return v;
}

/* IEEE binary16, round to nearest even (as __float2half_rn); _Float16 conversions are exactly that. */
static uint16_t
f32_to_f16 (float v)
{
  _Float16 h = (_Float16) v;
  uint16_t u;
  memcpy (&u, &h, 2);
  return u;
}

static float
f16_to_f32 (uint16_t u)
{
  _Float16 h;
  memcpy (&h, &u, 2);
  return (float) h;
}

/* bfloat16 = the top half of a float32, rounded to nearest even (NaN kept quiet). */
static uint16_t
f32_to_bf16 (float v)
{
  uint32_t u = f32_bits (v);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return (uint16_t) ((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t) (u >> 16);
}

static float
bf16_to_f32 (uint16_t u)
{
  return bits_f32 ((uint32_t) u << 16);
}

float
round_act (DdpmPrecision p, float v)
{
  switch (p)
    {
    case DDPM_PRECISION_FP16: return f16_to_f32 (f32_to_f16 (v));
    case DDPM_PRECISION_BF16: return bf16_to_f32 (f32_to_bf16 (v));
    default: return v;
    }
}

void
round_act_array (DdpmPrecision p, float *v, size_t n)
{
  if (p == DDPM_PRECISION_FP16 || p == DDPM_PRECISION_BF16)
    for (size_t i = 0; i < n; i++)
      v[i] = round_act (p, v[i]);
}

float *
random_host (size_t n, uint64_t seed, float scale, float offset, DdpmPrecision p)
{
  float *v = g_new (float, n);
  ddpm_randn (seed, 7, 0, n, v);
  for (size_t i = 0; i < n; i++)
    v[i] = v[i] * scale + offset;
  round_act_array (p, v, n);
  return v;
}

gboolean
buf_new (GpuEnv *env, Buf *b, DdpmBackend *be, size_t n, gboolean act, const char *label)
{
  memset (b, 0, sizeof *b);
  b->be = be;
  b->n = n;
  b->act = act;
  b->es = act ? act_bytes (be) : sizeof (float);
  GError *error = NULL;
  size_t total = n + 2 * GUARD;
  b->base = act ? be->ops->alloc_act (be, total, &error) : be->ops->alloc_f32 (be, total, &error);
  if (b->base == NULL)
    {
      report_plain (env, FALSE, "alloc", label, error ? error->message : "allocation failed");
      g_clear_error (&error);
      return FALSE;
    }
  b->ptr = (char *) b->base + GUARD * b->es;
  buf_poison (b);
  return TRUE;
}

void
buf_free (Buf *b)
{
  if (b->base != NULL)
    b->be->ops->free (b->be, b->base);
  memset (b, 0, sizeof *b);
}

#define GUARD_BYTE 0xA5

void
buf_poison (Buf *b)
{
  size_t bytes = (b->n + 2 * GUARD) * b->es;
  guint8 *host = g_malloc (bytes);
  memset (host, GUARD_BYTE, GUARD * b->es);
  memset (host + GUARD * b->es, 0xFF, b->n * b->es);   /* NaN in fp32, fp16 and bf16 */
  memset (host + (GUARD + b->n) * b->es, GUARD_BYTE, GUARD * b->es);
  b->be->ops->to_device (b->be, b->base, host, bytes);
  b->be->ops->synchronize (b->be);
  g_free (host);
}

void
buf_upload (Buf *b, const float *host)
{
  if (!b->act || b->es == 4)
    {
      b->be->ops->to_device (b->be, b->ptr, host, b->n * sizeof (float));
      b->be->ops->synchronize (b->be);
      return;
    }
  uint16_t *h = g_new (uint16_t, b->n);
  gboolean bf = b->be->precision == DDPM_PRECISION_BF16;
  for (size_t i = 0; i < b->n; i++)
    h[i] = bf ? f32_to_bf16 (host[i]) : f32_to_f16 (host[i]);
  b->be->ops->to_device (b->be, b->ptr, h, b->n * 2);
  b->be->ops->synchronize (b->be);
  g_free (h);
}

void
buf_download (Buf *b, float *host)
{
  if (!b->act || b->es == 4)
    {
      b->be->ops->to_host (b->be, host, b->ptr, b->n * sizeof (float));
      return;
    }
  uint16_t *h = g_new (uint16_t, b->n);
  b->be->ops->to_host (b->be, h, b->ptr, b->n * 2);
  gboolean bf = b->be->precision == DDPM_PRECISION_BF16;
  for (size_t i = 0; i < b->n; i++)
    host[i] = bf ? bf16_to_f32 (h[i]) : f16_to_f32 (h[i]);
  g_free (h);
}

size_t
buf_guard_damage (Buf *b)
{
  size_t bytes = (b->n + 2 * GUARD) * b->es, damage = 0;
  guint8 *host = g_malloc (bytes);
  b->be->ops->to_host (b->be, host, b->base, bytes);
  for (size_t i = 0; i < GUARD * b->es; i++)
    {
      damage += host[i] != GUARD_BYTE;
      damage += host[bytes - 1 - i] != GUARD_BYTE;
    }
  g_free (host);
  return damage;
}

gboolean
check_selected (GpuEnv *env, const char *label)
{
  return env->only == NULL || strstr (label, env->only) != NULL;
}

void
report_line (GpuEnv *env, const char *line)
{
  printf ("%s\n", line);
  fflush (stdout);
  if (env->log != NULL)
    {
      fprintf (env->log, "%s\n", line);
      fflush (env->log);
    }
}

gboolean
report_check (GpuEnv *env, const char *op, const char *label, const float *got, const float *want, size_t n,
              double bound, size_t guard_damage, double ms)
{
  double max_ref = 0.0, max_err = 0.0;
  size_t worst = 0, bad_nonfinite = 0;
  for (size_t i = 0; i < n; i++)
    {
      if (!isfinite (want[i]))
        {
          bad_nonfinite += !(isnan (want[i]) ? isnan (got[i]) : got[i] == want[i]);
          continue;
        }
      if (!isfinite (got[i]))
        {
          if (bad_nonfinite++ == 0)
            worst = i;
          continue;
        }
      max_ref = fmax (max_ref, fabs (want[i]));
      double e = fabs ((double) got[i] - (double) want[i]);
      if (e > max_err)
        {
          max_err = e;
          if (bad_nonfinite == 0)
            worst = i;
        }
    }
  double rel = max_ref > 0.0 ? max_err / max_ref : max_err;
  gboolean ok = bad_nonfinite == 0 && guard_damage == 0 && rel <= bound;
  env->checks++;
  env->failures += !ok;
  char timing[32] = "";
  if (ms >= 0.0)
    g_snprintf (timing, sizeof timing, "  %.4f ms", ms);
  char *opv = env->variant ? g_strdup_printf ("%s[%s]", op, env->variant) : g_strdup (op);
  char *line = g_strdup_printf ("%s %-18s %-4s %-58s rel %.2e (bound %.0e) max|ref| %.3g worst [%zu] %.6g vs %.6g%s%s%s",
                                ok ? "PASS" : "FAIL", opv, precision_name (env->precision), label, rel, bound, max_ref,
                                worst, n ? got[worst] : 0.0, n ? want[worst] : 0.0,
                                bad_nonfinite ? " NONFINITE" : "", guard_damage ? " GUARD-DAMAGED" : "", timing);
  report_line (env, line);
  g_free (line);
  g_free (opv);
  return ok;
}

void
report_plain (GpuEnv *env, gboolean ok, const char *op, const char *label, const char *detail)
{
  env->checks++;
  env->failures += !ok;
  char *opv = env->variant ? g_strdup_printf ("%s[%s]", op, env->variant) : g_strdup (op);
  char *line = g_strdup_printf ("%s %-18s %-4s %-58s %s", ok ? "PASS" : "FAIL", opv, precision_name (env->precision),
                                label, detail ? detail : "");
  report_line (env, line);
  g_free (line);
  g_free (opv);
}

double
op_bound (DdpmPrecision p)
{
  switch (p)
    {
    case DDPM_PRECISION_FP16: return 4e-3;
    case DDPM_PRECISION_BF16: return 3e-2;
    default: return 1e-4;
    }
}
