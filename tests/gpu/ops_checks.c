/* ops_checks.c: every CUDA op against the CPU backend on seeded random inputs at the layer shapes of
 * google/ddpm-cifar10-32 and google/ddpm-celebahq-256 (--quick: channels / 8 and small images, for the CPU
 * emulator). Inputs and weights are rounded to the GPU's activation type first and given to both backends,
 * so a check measures the GPU op's own arithmetic (its fp32 accumulation order and the roundings of its
 * intermediates and output), not the quantisation of its inputs. Bounds: op_bound() (test_cuda.c says why). */
#include "gpu_check.h"

#include <math.h>
#include <string.h>

/* ---- shapes ---- */

static inline int imin_ (int a, int b) { return a < b ? a : b; }
static inline int imax_ (int a, int b) { return a > b ? a : b; }

/* Channels of the full models, shrunk by 8 in quick mode (3 input channels stay 3). */
static int
qc (const GpuEnv *env, int c)
{
  return env->quick && c > 3 ? imax_ (c / 8, 4) : c;
}

/* Image sides, shrunk in quick mode: celebahq (full_size 256) by 8, cifar (32) by 4, keeping the spatial
 * structure (strides, padding, partial tiles); full_size 0 (the odd cases) stays as it is. */
static int
qs (const GpuEnv *env, int s, int full_size)
{
  if (!env->quick || full_size == 0)
    return s;
  int v = full_size >= 256 ? s / 8 : s / 4;
  return v < 2 ? 2 : v;
}

/* ---- paired buffers and weights ---- */

typedef struct {
  Buf c, g;
} Pair;

static gboolean
pair_input (GpuEnv *env, Pair *p, size_t n, gboolean act, const float *host, const char *label)
{
  memset (p, 0, sizeof *p);
  if (!buf_new (env, &p->c, env->cpu, n, act, label) || !buf_new (env, &p->g, env->gpu, n, act, label))
    return FALSE;
  buf_upload (&p->c, host);
  buf_upload (&p->g, host);
  return TRUE;
}

static gboolean
pair_output (GpuEnv *env, Pair *p, size_t n, gboolean act, const char *label)
{
  memset (p, 0, sizeof *p);
  return buf_new (env, &p->c, env->cpu, n, act, label) && buf_new (env, &p->g, env->gpu, n, act, label);
}

static void
pair_free (Pair *p)
{
  buf_free (&p->c);
  buf_free (&p->g);
}

/* The GPU's deferred errors for this check: FALSE (reported) when there were any. */
static gboolean
gpu_clean (GpuEnv *env, const char *op, const char *label)
{
  DdpmBackend *g = env->gpu;
  g->ops->synchronize (g);
  GError *error = NULL;
  if (g->ops->check_error != NULL && !g->ops->check_error (g, &error))
    {
      report_plain (env, FALSE, op, label, error->message);
      g_error_free (error);
      return FALSE;
    }
  return TRUE;
}

/* Downloads both sides of out and reports the comparison. */
static gboolean
finish (GpuEnv *env, const char *op, const char *label, Pair *out, double bound, double ms)
{
  if (!gpu_clean (env, op, label))
    return FALSE;
  float *want = g_new (float, out->c.n), *got = g_new (float, out->g.n);
  buf_download (&out->c, want);
  buf_download (&out->g, got);
  size_t damage = buf_guard_damage (&out->g);
  gboolean ok = report_check (env, op, label, got, want, out->c.n, bound, damage, ms);
  g_free (want);
  g_free (got);
  return ok;
}

/* A fused op's GPU output against the GPU's own unfused ops' (two, written), bit for bit: op_exact (bound 0). */
static void
report_bits_equal (GpuEnv *env, const char *op_exact, const char *label, Buf *fused, Buf *two)
{
  if (!gpu_clean (env, op_exact, label))
    return;
  float *a = g_new (float, fused->n), *b = g_new (float, two->n);
  buf_download (fused, a);
  buf_download (two, b);
  report_check (env, op_exact, label, a, b, fused->n, 0.0, buf_guard_damage (two), -1.0);
  g_free (a);
  g_free (b);
}

/* The timing line of a fused op (ms < 0: not timed), labelled with the variant. */
static void
print_op_time (const GpuEnv *env, const char *label, double ms)
{
  if (ms >= 0.0)
    printf ("     %-18s %-4s %-58s %9.4f ms%s%s\n", "  time", precision_name (env->precision), label, ms,
            env->variant ? "  " : "", env->variant ? env->variant : "");
}

typedef struct {
  DdpmLinearW c, g;
} LinPair;

static void *
upload (GpuEnv *env, DdpmBackend *be, const float *host, DdpmParamKind kind, int ndim, const int64_t *shape)
{
  GError *error = NULL;
  void *p = be->ops->upload_param (be, host, kind, ndim, shape, &error);
  if (p == NULL)
    {
      report_plain (env, FALSE, "upload_param", be->ops->name, error ? error->message : "failed");
      g_clear_error (&error);
    }
  return p;
}

/* Conv (k > 0) or linear (k = 0) weights ~ N(0, 1/fan_in) rounded to the activation type; bias ~ N(0, 0.1^2). */
static gboolean
lin_new (GpuEnv *env, LinPair *l, int out, int in, int k, uint64_t seed)
{
  memset (l, 0, sizeof *l);
  const size_t K = (size_t) in * (k > 0 ? k * k : 1);
  float *w = random_host ((size_t) out * K, seed, 1.0f / sqrtf ((float) K), 0.0f, env->precision);
  float *b = random_host ((size_t) out, seed + 1, 0.1f, 0.0f, DDPM_PRECISION_FP32);
  const int64_t shape[4] = { out, in, k, k };
  const int64_t bshape[1] = { out };
  const DdpmParamKind kind = k > 0 ? DDPM_PARAM_CONV : DDPM_PARAM_LINEAR;
  const int ndim = k > 0 ? 4 : 2;
  DdpmLinearW *sides[2] = { &l->c, &l->g };
  DdpmBackend *bes[2] = { env->cpu, env->gpu };
  gboolean ok = TRUE;
  for (int s = 0; s < 2; s++)
    {
      sides[s]->out = out;
      sides[s]->in = in;
      sides[s]->k = k;
      sides[s]->weight = upload (env, bes[s], w, kind, ndim, shape);
      sides[s]->bias = upload (env, bes[s], b, DDPM_PARAM_VECTOR, 1, bshape);
      ok = ok && sides[s]->weight && sides[s]->bias;
    }
  g_free (w);
  g_free (b);
  return ok;
}

static void
lin_free (GpuEnv *env, LinPair *l)
{
  DdpmLinearW *sides[2] = { &l->c, &l->g };
  DdpmBackend *bes[2] = { env->cpu, env->gpu };
  for (int s = 0; s < 2; s++)
    {
      if (sides[s]->weight)
        bes[s]->ops->free (bes[s], sides[s]->weight);
      if (sides[s]->bias)
        bes[s]->ops->free (bes[s], sides[s]->bias);
    }
  memset (l, 0, sizeof *l);
}

typedef struct {
  DdpmNormW c, g;
} NormPair;

/* GroupNorm weights: gamma ~ 1 + N(0, 0.1^2), beta ~ N(0, 0.1^2) (seeds seed, seed + 1), float32 on both sides. */
static gboolean
norm_new (GpuEnv *env, NormPair *n, int C, uint64_t seed)
{
  float *gamma = random_host ((size_t) C, seed, 0.1f, 1.0f, DDPM_PRECISION_FP32);
  float *beta = random_host ((size_t) C, seed + 1, 0.1f, 0.0f, DDPM_PRECISION_FP32);
  const int64_t vshape[1] = { C };
  n->c = (DdpmNormW) { upload (env, env->cpu, gamma, DDPM_PARAM_VECTOR, 1, vshape),
                       upload (env, env->cpu, beta, DDPM_PARAM_VECTOR, 1, vshape), C };
  n->g = (DdpmNormW) { upload (env, env->gpu, gamma, DDPM_PARAM_VECTOR, 1, vshape),
                       upload (env, env->gpu, beta, DDPM_PARAM_VECTOR, 1, vshape), C };
  g_free (gamma);
  g_free (beta);
  return n->c.gamma && n->c.beta && n->g.gamma && n->g.beta;
}

static void
norm_free (GpuEnv *env, NormPair *n)
{
  void *vs[4] = { n->c.gamma, n->c.beta, n->g.gamma, n->g.beta };
  for (int i = 0; i < 4; i++)
    if (vs[i])
      (i < 2 ? env->cpu : env->gpu)->ops->free (i < 2 ? env->cpu : env->gpu, vs[i]);
  memset (n, 0, sizeof *n);
}

static gboolean
reserve (GpuEnv *env, DdpmBackend *be, size_t bytes, const char *label)
{
  GError *error = NULL;
  if (!be->ops->reserve_scratch (be, bytes, &error))
    {
      report_plain (env, FALSE, "reserve_scratch", label, error->message);
      g_error_free (error);
      return FALSE;
    }
  return TRUE;
}

/* ---- conv2d ---- */

typedef struct {
  const char *name;
  int B, Cin, H, W, Cout, k, stride, pad[4];
  int full_size;
} ConvCase;

/* epilogue: also add a per-image channel bias (a strided slice, as the stacked time projections give it) and
 * a residual scaled by 1/sqrt(2) (DdpmConvEpilogue, what a resnet's conv1 and conv2 carry), fused on the
 * GPU, separate passes on the CPU. */
static void
check_conv (GpuEnv *env, const ConvCase *cc, gboolean epilogue)
{
  ConvCase c = *cc;
  if (c.full_size != 0)
    {
      c.Cin = qc (env, c.Cin);
      c.Cout = qc (env, c.Cout);
    }
  c.H = qs (env, c.H, c.full_size);
  c.W = qs (env, c.W, c.full_size);
  char label[160];
  g_snprintf (label, sizeof label, "%s B%d %d->%d k%d s%d pad(%d,%d,%d,%d) @%dx%d%s", c.name, c.B, c.Cin, c.Cout,
              c.k, c.stride, c.pad[0], c.pad[1], c.pad[2], c.pad[3], c.H, c.W, epilogue ? " +temb +res/sqrt2" : "");
  if (!check_selected (env, label))
    return;
  const int Ho = (c.H + c.pad[0] + c.pad[2] - c.k) / c.stride + 1, Wo = (c.W + c.pad[1] + c.pad[3] - c.k) / c.stride + 1;
  const size_t n_in = (size_t) c.B * c.Cin * c.H * c.W, n_out = (size_t) c.B * c.Cout * Ho * Wo;
  float *x = random_host (n_in, 11, 1.0f, 0.0f, env->precision);
  const int cb_stride = c.Cout + 5;     /* the channel bias as a slice of a wider (B, Cout + 5) array */
  float *cb = random_host ((size_t) c.B * cb_stride, 13, 1.0f, 0.0f, env->precision);
  float *res = random_host (n_out, 14, 2.0f, 0.0f, env->precision);
  LinPair w;
  Pair in, out, chan = { 0 }, resid = { 0 };
  DdpmConvEpilogue ec = { NULL, NULL, 0, 1.0f }, eg = { NULL, NULL, 0, 1.0f };
  gboolean ok = lin_new (env, &w, c.Cout, c.Cin, c.k, 12) && pair_input (env, &in, n_in, TRUE, x, label)
                && pair_output (env, &out, n_out, TRUE, label);
  if (ok && epilogue)
    {
      ok = pair_input (env, &chan, (size_t) c.B * cb_stride, TRUE, cb, label)
           && pair_input (env, &resid, n_out, TRUE, res, label);
      ec = (DdpmConvEpilogue) { chan.c.ptr, resid.c.ptr, cb_stride, (float) M_SQRT1_2 };
      eg = (DdpmConvEpilogue) { chan.g.ptr, resid.g.ptr, cb_stride, (float) M_SQRT1_2 };
    }
  if (ok
      && reserve (env, env->cpu, env->cpu->ops->conv2d_scratch (env->cpu, c.B, c.Cin, c.H, c.W, c.Cout, c.k, c.stride, c.pad), label)
      && reserve (env, env->gpu, env->gpu->ops->conv2d_scratch (env->gpu, c.B, c.Cin, c.H, c.W, c.Cout, c.k, c.stride, c.pad), label))
    {
      const DdpmConvEpilogue *epc = epilogue ? &ec : NULL, *epg = epilogue ? &eg : NULL;
      env->cpu->ops->conv2d (env->cpu, &w.c, in.c.ptr, out.c.ptr, c.B, c.H, c.W, c.stride, c.pad, epc);
      env->gpu->ops->conv2d (env->gpu, &w.g, in.g.ptr, out.g.ptr, c.B, c.H, c.W, c.stride, c.pad, epg);
      double ms;
      if (finish (env, "conv2d", label, &out, op_bound (env->precision), -1.0))
        {
          TIME_GPU (env, ms, env->gpu->ops->conv2d (env->gpu, &w.g, in.g.ptr, out.g.ptr, c.B, c.H, c.W, c.stride, c.pad, epg));
          if (ms >= 0.0)
            printf ("     %-18s %-4s %-58s %9.4f ms  %.1f TFLOP/s%s%s\n", "  time", precision_name (env->precision), label,
                    ms, 2.0 * n_out * c.Cin * c.k * c.k / (ms * 1e9), env->variant ? "  " : "",
                    env->variant ? env->variant : "");
        }
    }
  pair_free (&in);
  pair_free (&out);
  pair_free (&chan);
  pair_free (&resid);
  lin_free (env, &w);
  g_free (x);
  g_free (cb);
  g_free (res);
}

static const ConvCase conv_cases[] = {
  /* google/ddpm-cifar10-32: block_out_channels 128, 256, 256, 256 at 32, 16, 8, 4 */
  { "cifar conv_in", 2, 3, 32, 32, 128, 3, 1, { 1, 1, 1, 1 }, 32 },
  { "cifar resnet conv", 2, 128, 32, 32, 128, 3, 1, { 1, 1, 1, 1 }, 32 },
  { "cifar downsample (pad r+b)", 3, 128, 32, 32, 128, 3, 2, { 0, 0, 1, 1 }, 32 },
  { "cifar resnet conv1", 2, 128, 16, 16, 256, 3, 1, { 1, 1, 1, 1 }, 32 },
  { "cifar resnet conv2", 3, 256, 16, 16, 256, 3, 1, { 1, 1, 1, 1 }, 32 },
  { "cifar shortcut 1x1", 2, 128, 16, 16, 256, 1, 1, { 0, 0, 0, 0 }, 32 },
  { "cifar up resnet conv (cat)", 2, 512, 4, 4, 256, 3, 1, { 1, 1, 1, 1 }, 32 },
  { "cifar up shortcut 1x1 (cat)", 2, 512, 4, 4, 256, 1, 1, { 0, 0, 0, 0 }, 32 },
  { "cifar up resnet conv (cat)", 2, 384, 32, 32, 128, 3, 1, { 1, 1, 1, 1 }, 32 },
  { "cifar conv_out", 2, 128, 32, 32, 3, 3, 1, { 1, 1, 1, 1 }, 32 },
  /* google/ddpm-celebahq-256: 128, 128, 256, 256, 512, 512 at 256, 128, 64, 32, 16, 8 */
  { "celebahq conv_in", 1, 3, 256, 256, 128, 3, 1, { 1, 1, 1, 1 }, 256 },
  { "celebahq resnet conv", 1, 128, 256, 256, 128, 3, 1, { 1, 1, 1, 1 }, 256 },
  { "celebahq downsample", 1, 128, 256, 256, 128, 3, 2, { 0, 0, 1, 1 }, 256 },
  { "celebahq resnet conv", 2, 256, 64, 64, 256, 3, 1, { 1, 1, 1, 1 }, 256 },
  { "celebahq resnet conv", 2, 512, 16, 16, 512, 3, 1, { 1, 1, 1, 1 }, 256 },
  { "celebahq up resnet conv (cat)", 2, 1024, 8, 8, 512, 3, 1, { 1, 1, 1, 1 }, 256 },
  { "celebahq up shortcut 1x1 (cat)", 2, 1024, 8, 8, 512, 1, 1, { 0, 0, 0, 0 }, 256 },
  { "celebahq upsample conv", 1, 256, 128, 128, 256, 3, 1, { 1, 1, 1, 1 }, 256 },
  { "celebahq conv_out", 1, 128, 256, 256, 3, 3, 1, { 1, 1, 1, 1 }, 256 },
  /* odd sizes: partial tiles everywhere */
  { "odd conv", 3, 5, 7, 9, 13, 3, 1, { 1, 1, 1, 1 }, 0 },
  { "odd conv s2 symmetric", 2, 6, 9, 11, 10, 3, 2, { 1, 1, 1, 1 }, 0 },
  /* odd sizes where the channels-last kernel applies (Cin % 32 == 0): stride 2, partial tiles, 18 K slices */
  { "odd conv s2 Cin32", 3, 32, 9, 11, 40, 3, 2, { 0, 0, 1, 1 }, 0 },
  { "odd conv Cin64", 2, 64, 7, 5, 72, 3, 1, { 1, 1, 1, 1 }, 0 },
  /* 128-channel tiles even on the emulator's 4 SMs (8 blocks), a partial second one */
  { "odd conv Cin32 Cout136", 2, 32, 12, 10, 136, 3, 1, { 1, 1, 1, 1 }, 0 },
  /* odd sizes for the direct kernel (Cout <= 8 or K <= 32): 8 channels per thread and 8 K slices; 16 per
   * thread, 2 groups (the second partial) and 4 K slices across taps; 4 per thread, 1x1, one channel out */
  { "odd conv direct Cout6", 3, 40, 9, 11, 6, 3, 2, { 0, 0, 1, 1 }, 0 },
  { "odd conv direct Cin2 Cout20", 2, 2, 7, 5, 20, 3, 1, { 1, 1, 1, 1 }, 0 },
  { "odd conv direct 1x1 Cout1", 2, 24, 5, 6, 1, 1, 1, { 0, 0, 0, 0 }, 0 },
  /* the 128 x 128 mma.sync tile (conv=mma; >= 4 tiles fill the emulator's 4 SMs): partial pixel and channel
   * tiles, 18 K slices; a 1x1 with 3 slices */
  { "odd conv mma", 2, 64, 15, 17, 200, 3, 1, { 1, 1, 1, 1 }, 0 },
  { "odd conv mma 1x1", 3, 96, 11, 13, 130, 1, 1, { 0, 0, 0, 0 }, 0 },
  /* 63 pixels: the tile's second 64-pixel half lies wholly past the output (with DDPM_CUDA_CONV_TILE=mma; its end
   * read past the residual there until 2026-12-08: an ASan-built emulator saw it, tools/sanitize.sh asan-emu) */
  { "odd conv mma half", 1, 64, 7, 9, 72, 3, 1, { 1, 1, 1, 1 }, 0 },
  /* the wgmma tile (conv=wgmma / conv_tile=wgmma; Cin % 64 == 0): stride 2 with one-sided padding, 18 K slices
   * of 64 through 3 stages, a partial channel tile (136) and a partial pixel tile (90 of 128) */
  { "odd conv wgmma s2", 3, 128, 9, 11, 136, 3, 2, { 0, 0, 1, 1 }, 0 },
  /* 1x1 on conv2d_pointwise.cu's kernel (Cin % 32 == 0, H W % 8 == 0): pixel tiles across 3 images and a
   * partial one, a partial channel tile, 6 K slices; 128-row tiles; one tile, K split 4 ways by default */
  { "odd conv pointwise", 3, 192, 6, 4, 72, 1, 1, { 0, 0, 0, 0 }, 0 },
  { "odd conv pointwise Cout136", 2, 96, 8, 8, 136, 1, 1, { 0, 0, 0, 0 }, 0 },
  { "odd conv pointwise split", 1, 256, 4, 4, 64, 1, 1, { 0, 0, 0, 0 }, 0 },
  /* conv_in's full layout (8 groups of 16 channels per block, no K split), a partial second block */
  { "odd conv direct Cin3 Cout136", 1, 3, 6, 7, 136, 3, 1, { 1, 1, 1, 1 }, 0 },
};

/* ---- group norm ---- */

typedef struct {
  const char *name;
  int B, C, HW, G;
  gboolean scale_shift, silu, in_place;
  int full_size;
} NormCase;

static void
check_group_norm (GpuEnv *env, const NormCase *nc)
{
  NormCase c = *nc;
  if (env->quick && c.full_size != 0)
    {
      c.C = qc (env, c.C);
      int side = (int) sqrt ((double) c.HW);
      side = qs (env, side, c.full_size);
      c.HW = side * side;
      c.G = imin_ (c.G, c.C / 2);
    }
  char label[160];
  g_snprintf (label, sizeof label, "%s B%d C%d HW%d G%d%s%s%s", c.name, c.B, c.C, c.HW, c.G,
              c.scale_shift ? " +scale_shift" : "", c.silu ? " +silu" : "", c.in_place ? " in-place" : "");
  if (!check_selected (env, label))
    return;
  const size_t n = (size_t) c.B * c.C * c.HW;
  /* an offset mean checks the two-pass statistics (no cancellation) */
  float *x = random_host (n, 21, 1.5f, 0.7f, env->precision);
  float *ss = random_host ((size_t) c.B * 2 * c.C, 24, 0.3f, 0.0f, env->precision);
  NormPair w;
  Pair in, out, sp;
  memset (&out, 0, sizeof out);
  memset (&sp, 0, sizeof sp);
  if (norm_new (env, &w, c.C, 22) && pair_input (env, &in, n, TRUE, x, label)
      && (c.in_place || pair_output (env, &out, n, TRUE, label))
      && pair_input (env, &sp, (size_t) c.B * 2 * c.C, TRUE, ss, label))
    {
      Pair *o = c.in_place ? &in : &out;
      env->cpu->ops->group_norm (env->cpu, &w.c, in.c.ptr, o->c.ptr, c.B, c.C, c.HW, c.G, 1e-6f,
                                 c.scale_shift ? sp.c.ptr : NULL, c.silu);
      env->gpu->ops->group_norm (env->gpu, &w.g, in.g.ptr, o->g.ptr, c.B, c.C, c.HW, c.G, 1e-6f,
                                 c.scale_shift ? sp.g.ptr : NULL, c.silu);
      double ms;
      if (finish (env, "group_norm", label, o, op_bound (env->precision), -1.0))
        {
          TIME_GPU (env, ms, env->gpu->ops->group_norm (env->gpu, &w.g, in.g.ptr, o->g.ptr, c.B, c.C, c.HW, c.G, 1e-6f,
                                                        c.scale_shift ? sp.g.ptr : NULL, c.silu));
          if (ms >= 0.0)
            printf ("     %-18s %-4s %-58s %9.4f ms  %.0f GB/s\n", "  time", precision_name (env->precision), label, ms,
                    2.0 * n * act_bytes (env->gpu) / (ms * 1e6));
        }
    }
  pair_free (&in);
  pair_free (&out);
  pair_free (&sp);
  norm_free (env, &w);
  g_free (x);
  g_free (ss);
}

static const NormCase norm_cases[] = {
  { "cifar resnet norm", 2, 128, 1024, 32, FALSE, TRUE, FALSE, 32 },
  { "cifar resnet norm", 2, 256, 256, 32, FALSE, TRUE, TRUE, 32 },
  { "cifar attention norm", 2, 256, 256, 32, FALSE, FALSE, FALSE, 32 },
  { "cifar up norm (cat)", 2, 512, 16, 32, FALSE, TRUE, FALSE, 32 },
  { "scale_shift norm", 3, 256, 256, 32, TRUE, TRUE, FALSE, 32 },
  { "celebahq resnet norm", 1, 128, 65536, 32, FALSE, TRUE, FALSE, 256 },
  { "celebahq resnet norm", 2, 256, 4096, 32, FALSE, TRUE, TRUE, 256 },
  { "celebahq attention norm", 2, 512, 256, 32, FALSE, FALSE, FALSE, 256 },
  { "celebahq up norm (cat)", 2, 1024, 64, 32, FALSE, TRUE, FALSE, 256 },
  { "odd norm", 3, 12, 49, 4, TRUE, TRUE, FALSE, 0 },
  /* groups of 6144 and 2560 values: the register kernel with 4 and 2 vector slots per thread (fp16; 8 and 4 in
   * fp32), a partial pass */
  { "regs norm", 2, 24, 512, 2, FALSE, TRUE, TRUE, 0 },
  { "regs norm", 1, 40, 256, 4, TRUE, TRUE, FALSE, 0 },
  /* 16384 values: 8 vectors per thread (fp16 / bf16) */
  { "regs norm", 1, 32, 1024, 2, FALSE, TRUE, FALSE, 0 },
};

/* ---- group_norm_conv2d (GroupNorm + SiLU, then a 3x3 convolution of it) ---- */

typedef struct {
  const char *name;
  int B, Cin, H, W, Cout, G;
  gboolean scale_shift, in_place, epilogue;
  int full_size;
} NormConvCase;

/* The fused op's output (out.g, written) against the GPU's own group_norm then conv2d, bit for bit: both
 * compute the same statistics, round the normalised values once to the activation type and run the same
 * convolution kernel on them, whichever kernels carry the normalisation. */
static void
check_norm_conv_exact (GpuEnv *env, const char *label, const NormConvCase *c, const NormPair *nw, const LinPair *w,
                       Pair *in, Pair *normed, Pair *out, const void *scale_shift, const DdpmConvEpilogue *epi)
{
  DdpmBackend *g = env->gpu;
  const int pad[4] = { 1, 1, 1, 1 };
  Buf two;
  if (!buf_new (env, &two, g, out->g.n, TRUE, label))
    return;
  buf_poison (&two);
  g->ops->group_norm (g, &nw->g, in->g.ptr, normed->g.ptr, c->B, c->Cin, c->H * c->W, c->G, 1e-6f, scale_shift, TRUE);
  g->ops->conv2d (g, &w->g, normed->g.ptr, two.ptr, c->B, c->H, c->W, 1, pad, epi);
  report_bits_equal (env, "norm_conv_exact", label, &out->g, &two);
  buf_free (&two);
}

/* The GPU's fused op against the CPU's group_norm then conv2d (the CPU has no fused op). On CUDA the
 * normalised values go channels last straight into the convolution's scratch where its channels-last kernel
 * runs, else the op runs the two. Bound: the conv bound; the one extra rounding (the normalised tensor, as
 * both sides store it in the activation type) is far below it. */
static void
check_norm_conv (GpuEnv *env, const NormConvCase *nc)
{
  NormConvCase c = *nc;
  if (c.full_size != 0)
    {
      c.Cin = qc (env, c.Cin);
      c.Cout = qc (env, c.Cout);
      c.G = imin_ (c.G, c.Cin / 2);
    }
  c.H = qs (env, c.H, c.full_size);
  c.W = qs (env, c.W, c.full_size);
  char label[160];
  g_snprintf (label, sizeof label, "%s B%d %d->%d G%d @%dx%d%s%s%s", c.name, c.B, c.Cin, c.Cout, c.G, c.H, c.W,
              c.scale_shift ? " +scale_shift" : "", c.in_place ? " in-place" : "", c.epilogue ? " +res/sqrt2" : "");
  if (!check_selected (env, label))
    return;
  if (env->gpu->ops->group_norm_conv2d == NULL)
    {
      report_plain (env, FALSE, "norm_conv", label, "the CUDA backend has no group_norm_conv2d");
      return;
    }
  const int pad[4] = { 1, 1, 1, 1 };
  const size_t n_in = (size_t) c.B * c.Cin * c.H * c.W, n_out = (size_t) c.B * c.Cout * c.H * c.W;
  float *x = random_host (n_in, 41, 1.5f, 0.7f, env->precision);
  float *ss = random_host ((size_t) c.B * 2 * c.Cin, 44, 0.3f, 0.0f, env->precision);
  float *res = random_host (n_out, 45, 2.0f, 0.0f, env->precision);
  NormPair nw;
  LinPair w;
  Pair in, normed, out, sp, resid;
  memset (&normed, 0, sizeof normed);
  memset (&resid, 0, sizeof resid);
  gboolean ok = norm_new (env, &nw, c.Cin, 42) && lin_new (env, &w, c.Cout, c.Cin, 3, 46)
                && pair_input (env, &in, n_in, TRUE, x, label) && pair_output (env, &out, n_out, TRUE, label)
                && pair_input (env, &sp, (size_t) c.B * 2 * c.Cin, TRUE, ss, label)
                && (c.in_place || pair_output (env, &normed, n_in, TRUE, label))
                && (!c.epilogue || pair_input (env, &resid, n_out, TRUE, res, label));
  if (ok
      && reserve (env, env->cpu, env->cpu->ops->conv2d_scratch (env->cpu, c.B, c.Cin, c.H, c.W, c.Cout, 3, 1, pad), label)
      && reserve (env, env->gpu, env->gpu->ops->conv2d_scratch (env->gpu, c.B, c.Cin, c.H, c.W, c.Cout, 3, 1, pad), label))
    {
      const DdpmConvEpilogue ec = { NULL, resid.c.ptr, 0, (float) M_SQRT1_2 }, eg = { NULL, resid.g.ptr, 0, (float) M_SQRT1_2 };
      Pair *nm = c.in_place ? &in : &normed;
      env->cpu->ops->group_norm (env->cpu, &nw.c, in.c.ptr, nm->c.ptr, c.B, c.Cin, c.H * c.W, c.G, 1e-6f,
                                 c.scale_shift ? sp.c.ptr : NULL, TRUE);
      env->cpu->ops->conv2d (env->cpu, &w.c, nm->c.ptr, out.c.ptr, c.B, c.H, c.W, 1, pad, c.epilogue ? &ec : NULL);
      env->gpu->ops->group_norm_conv2d (env->gpu, &nw.g, c.G, 1e-6f, c.scale_shift ? sp.g.ptr : NULL, TRUE, &w.g,
                                        in.g.ptr, nm->g.ptr, out.g.ptr, c.B, c.H, c.W, 1, pad, c.epilogue ? &eg : NULL);
      double ms;
      if (finish (env, "norm_conv", label, &out, op_bound (env->precision), -1.0) && !c.in_place)
        {
          check_norm_conv_exact (env, label, &c, &nw, &w, &in, &normed, &out, c.scale_shift ? sp.g.ptr : NULL,
                                 c.epilogue ? &eg : NULL);
          TIME_GPU (env, ms, env->gpu->ops->group_norm_conv2d (env->gpu, &nw.g, c.G, 1e-6f, c.scale_shift ? sp.g.ptr : NULL,
                                                               TRUE, &w.g, in.g.ptr, nm->g.ptr, out.g.ptr, c.B, c.H, c.W,
                                                               1, pad, c.epilogue ? &eg : NULL));
          print_op_time (env, label, ms);
        }
    }
  pair_free (&in);
  pair_free (&normed);
  pair_free (&out);
  pair_free (&sp);
  pair_free (&resid);
  lin_free (env, &w);
  norm_free (env, &nw);
  g_free (x);
  g_free (ss);
  g_free (res);
}

static const NormConvCase norm_conv_cases[] = {
  { "cifar resnet norm_conv", 2, 128, 32, 32, 128, 32, FALSE, FALSE, FALSE, 32 },
  { "cifar resnet norm_conv", 3, 256, 16, 16, 256, 32, TRUE, TRUE, TRUE, 32 },
  { "celebahq resnet norm_conv", 1, 128, 256, 256, 128, 32, FALSE, FALSE, TRUE, 256 },
  { "celebahq resnet norm_conv", 2, 256, 64, 64, 256, 32, FALSE, FALSE, FALSE, 256 },
  /* odd sizes (unshrunk, so the fused path runs on the emulator too): 3 channels per group, so 32-channel
   * tiles cut groups, HW 35 (scalar statistics); 2 per group, HW 120, in place; 4 groups of 32768 values
   * (the statistics split into chunks); Cin 48 (not a multiple of 32: the op falls back to the two ops) */
  { "odd norm_conv", 2, 96, 7, 5, 40, 32, FALSE, FALSE, TRUE, 0 },
  { "odd norm_conv", 3, 64, 12, 10, 72, 32, TRUE, TRUE, FALSE, 0 },
  { "odd norm_conv split stats", 1, 32, 64, 64, 32, 4, FALSE, FALSE, TRUE, 0 },
  { "odd norm_conv fallback", 2, 48, 6, 6, 24, 8, TRUE, FALSE, FALSE, 0 },
  /* the register kernel's channels-last copy-out in each vector width: 8 channels per group (16-byte
   * vectors), 16 (two per pixel), 3 (2-byte stores); 4 and 2 come with the shapes above */
  { "regs norm_conv cpg8", 2, 64, 8, 8, 40, 8, FALSE, FALSE, TRUE, 0 },
  { "regs norm_conv cpg16", 1, 64, 8, 4, 32, 4, TRUE, FALSE, FALSE, 0 },
  { "regs norm_conv cpg3", 2, 96, 4, 4, 32, 32, FALSE, FALSE, FALSE, 0 },
  { "regs norm_conv 8 vectors", 1, 32, 32, 32, 32, 2, FALSE, FALSE, TRUE, 0 },
};

/* ---- a resnet's split convolutions, whose sums may be held back (DDPM_CUDA_DEFER_REDUCE=1) ---- */

/* conv1 (3x3, K split) of x, then the shortcut (1x1 of the same x, K split), then GroupNorm + SiLU of conv1's
 * output, then (fused: as a resnet does it) conv2 with the shortcut as residual. With held-back sums the
 * shortcut's launch leaves conv1's sum waiting and its own partials ride along; the GroupNorm sums both
 * (conv2d.cu conv_may_pass_pending, group_norm.cu). Every output against the CPU's: conv1's (which the
 * GroupNorm writes then), the shortcut's, and the normalised tensor (NCHW op) or conv2's (fused op). Bound:
 * the op bound. Batch 1 and 256 input channels, so both convs split on any GPU (and 4 emulated SMs). */
static void
check_resnet_sums (GpuEnv *env, gboolean fused)
{
  const int B = 1, Cin = 256, H = 8, W = 8, C = 64, G = 8, HW = H * W;
  char label[160];
  g_snprintf (label, sizeof label, "resnet sums B%d %d->%d G%d @%dx%d, %s", B, Cin, C, G, H, W,
              fused ? "norm_conv2 +res/sqrt2" : "group_norm");
  if (!check_selected (env, label))
    return;
  const int pad3[4] = { 1, 1, 1, 1 }, pad1[4] = { 0, 0, 0, 0 };
  const size_t n_in = (size_t) B * Cin * HW, n = (size_t) B * C * HW;
  float *xh = random_host (n_in, 81, 1.0f, 0.0f, env->precision);
  LinPair w1, ws, w2;
  NormPair nw;
  Pair x, h, sc, nm, out;
  memset (&w1, 0, sizeof w1);
  memset (&ws, 0, sizeof ws);
  memset (&w2, 0, sizeof w2);
  memset (&nw, 0, sizeof nw);
  memset (&x, 0, sizeof x);
  memset (&h, 0, sizeof h);
  memset (&sc, 0, sizeof sc);
  memset (&nm, 0, sizeof nm);
  memset (&out, 0, sizeof out);
  DdpmBackend *be[2] = { env->cpu, env->gpu };
  gboolean ok = lin_new (env, &w1, C, Cin, 3, 82) && lin_new (env, &ws, C, Cin, 1, 83) && lin_new (env, &w2, C, C, 3, 84)
                && norm_new (env, &nw, C, 85) && pair_input (env, &x, n_in, TRUE, xh, label)
                && pair_output (env, &h, n, TRUE, label) && pair_output (env, &sc, n, TRUE, label)
                && pair_output (env, &nm, n, TRUE, label) && pair_output (env, &out, n, TRUE, label);
  for (int i = 0; ok && i < 2; i++)
    {
      const size_t a = be[i]->ops->conv2d_scratch (be[i], B, Cin, H, W, C, 3, 1, pad3);
      const size_t b = be[i]->ops->conv2d_scratch (be[i], B, Cin, H, W, C, 1, 1, pad1);
      const size_t c = be[i]->ops->conv2d_scratch (be[i], B, C, H, W, C, 3, 1, pad3);
      ok = reserve (env, be[i], MAX (a, MAX (b, c)), label);
    }
  if (ok)
    {
      for (int i = 0; i < 2; i++)
        {
          DdpmBackend *e = be[i];
          const DdpmLinearW *c1 = i ? &w1.g : &w1.c, *cs = i ? &ws.g : &ws.c, *c2 = i ? &w2.g : &w2.c;
          const DdpmNormW *n_w = i ? &nw.g : &nw.c;
          Buf *bx = i ? &x.g : &x.c, *bh = i ? &h.g : &h.c, *bsc = i ? &sc.g : &sc.c, *bnm = i ? &nm.g : &nm.c,
              *bout = i ? &out.g : &out.c;
          const DdpmConvEpilogue res = { NULL, bsc->ptr, 0, (float) M_SQRT1_2 };
          e->ops->conv2d (e, c1, bx->ptr, bh->ptr, B, H, W, 1, pad3, NULL);
          e->ops->conv2d (e, cs, bx->ptr, bsc->ptr, B, H, W, 1, pad1, NULL);
          if (fused && e->ops->group_norm_conv2d != NULL)
            e->ops->group_norm_conv2d (e, n_w, G, 1e-6f, NULL, TRUE, c2, bh->ptr, bnm->ptr, bout->ptr, B, H, W, 1, pad3,
                                       &res);
          else
            {
              e->ops->group_norm (e, n_w, bh->ptr, bnm->ptr, B, C, HW, G, 1e-6f, NULL, TRUE);
              if (fused)
                e->ops->conv2d (e, c2, bnm->ptr, bout->ptr, B, H, W, 1, pad3, &res);
            }
        }
      const double bound = op_bound (env->precision);
      if (finish (env, "resnet conv1", label, &h, bound, -1.0) && finish (env, "resnet shortcut", label, &sc, bound, -1.0))
        finish (env, fused ? "resnet conv2" : "resnet norm", label, fused ? &out : &nm, bound, -1.0);
    }
  pair_free (&x);
  pair_free (&h);
  pair_free (&sc);
  pair_free (&nm);
  pair_free (&out);
  lin_free (env, &w1);
  lin_free (env, &ws);
  lin_free (env, &w2);
  norm_free (env, &nw);
  g_free (xh);
}

/* ---- upsample_conv2d (nearest 2x upsampling, then a 3x3 convolution: an up block's resample) ---- */

typedef struct {
  const char *name;
  int B, Cin, H, W, Cout;               /* H x W: the input, before upsampling */
  gboolean in_place, epilogue;          /* in_place: y aliases x (Cout == Cin) */
  int full_size;
} UpConvCase;

/* The GPU's fused op against the CPU's upsample_nearest2x then conv2d, bound the conv bound; then, where y
 * does not alias x, against the GPU's own two ops bit for bit (the convolution reads the same values at the
 * same positions either way). */
static void
check_upsample_conv (GpuEnv *env, const UpConvCase *uc)
{
  UpConvCase c = *uc;
  if (c.full_size != 0)
    {
      c.Cin = qc (env, c.Cin);
      c.Cout = c.in_place ? c.Cin : qc (env, c.Cout);
    }
  c.H = qs (env, c.H, c.full_size);
  c.W = qs (env, c.W, c.full_size);
  char label[160];
  g_snprintf (label, sizeof label, "%s B%d %d->%d @%dx%d->%dx%d%s%s", c.name, c.B, c.Cin, c.Cout, c.H, c.W, 2 * c.H,
              2 * c.W, c.in_place ? " in-place" : "", c.epilogue ? " +res/sqrt2" : "");
  if (!check_selected (env, label))
    return;
  if (env->gpu->ops->upsample_conv2d == NULL)
    {
      report_plain (env, FALSE, "upsample_conv", label, "the CUDA backend has no upsample_conv2d");
      return;
    }
  const int pad[4] = { 1, 1, 1, 1 };
  const size_t n_in = (size_t) c.B * c.Cin * c.H * c.W, n_up = 4 * n_in;
  const size_t n_out = (size_t) c.B * c.Cout * 4 * c.H * c.W;
  /* in place: one buffer of the output's size, x in its first n_in values */
  float *x = random_host (c.in_place ? n_out : n_in, 51, 1.5f, 0.0f, env->precision);
  float *res = random_host (n_out, 55, 2.0f, 0.0f, env->precision);
  LinPair w;
  Pair in, up, out, resid;
  memset (&out, 0, sizeof out);
  memset (&resid, 0, sizeof resid);
  gboolean ok = lin_new (env, &w, c.Cout, c.Cin, 3, 56)
                && pair_input (env, &in, c.in_place ? n_out : n_in, TRUE, x, label)
                && pair_output (env, &up, n_up, TRUE, label)
                && (c.in_place || pair_output (env, &out, n_out, TRUE, label))
                && (!c.epilogue || pair_input (env, &resid, n_out, TRUE, res, label));
  Pair *y = c.in_place ? &in : &out;
  if (ok
      && reserve (env, env->cpu, env->cpu->ops->conv2d_scratch (env->cpu, c.B, c.Cin, 2 * c.H, 2 * c.W, c.Cout, 3, 1, pad),
                  label)
      && reserve (env, env->gpu, env->gpu->ops->conv2d_scratch (env->gpu, c.B, c.Cin, 2 * c.H, 2 * c.W, c.Cout, 3, 1, pad),
                  label))
    {
      const DdpmConvEpilogue ec = { NULL, resid.c.ptr, 0, (float) M_SQRT1_2 }, eg = { NULL, resid.g.ptr, 0, (float) M_SQRT1_2 };
      env->cpu->ops->upsample_nearest2x (env->cpu, in.c.ptr, up.c.ptr, c.B, c.Cin, c.H, c.W);
      env->cpu->ops->conv2d (env->cpu, &w.c, up.c.ptr, y->c.ptr, c.B, 2 * c.H, 2 * c.W, 1, pad, c.epilogue ? &ec : NULL);
      env->gpu->ops->upsample_conv2d (env->gpu, &w.g, in.g.ptr, up.g.ptr, y->g.ptr, c.B, c.H, c.W, pad,
                                      c.epilogue ? &eg : NULL);
      if (finish (env, "upsample_conv", label, y, op_bound (env->precision), -1.0) && !c.in_place)
        {
          DdpmBackend *g = env->gpu;
          Buf two;
          if (buf_new (env, &two, g, n_out, TRUE, label))
            {
              buf_poison (&two);
              g->ops->upsample_nearest2x (g, in.g.ptr, up.g.ptr, c.B, c.Cin, c.H, c.W);
              g->ops->conv2d (g, &w.g, up.g.ptr, two.ptr, c.B, 2 * c.H, 2 * c.W, 1, pad, c.epilogue ? &eg : NULL);
              report_bits_equal (env, "upsample_conv_exact", label, &out.g, &two);
              buf_free (&two);
            }
          double ms;
          TIME_GPU (env, ms, g->ops->upsample_conv2d (g, &w.g, in.g.ptr, up.g.ptr, out.g.ptr, c.B, c.H, c.W, pad,
                                                      c.epilogue ? &eg : NULL));
          print_op_time (env, label, ms);
        }
    }
  pair_free (&in);
  pair_free (&up);
  pair_free (&out);
  pair_free (&resid);
  lin_free (env, &w);
  g_free (x);
  g_free (res);
}

static const UpConvCase upsample_conv_cases[] = {
  { "cifar up-resample conv", 1, 256, 8, 8, 256, TRUE, FALSE, 32 },
  { "cifar up-resample conv", 2, 256, 16, 16, 256, FALSE, FALSE, 32 },
  { "celebahq up-resample conv", 1, 256, 64, 64, 256, FALSE, FALSE, 256 },
  { "celebahq up-resample conv", 1, 128, 128, 128, 128, TRUE, FALSE, 256 },
  /* odd sizes, unshrunk: a non-square image with partial tiles and an epilogue; Cin 48 (not a multiple of 32:
   * the op falls back to the two ops) */
  { "odd up-resample conv", 2, 64, 5, 3, 40, FALSE, TRUE, 0 },
  { "odd up-resample conv fallback", 3, 48, 4, 4, 24, FALSE, FALSE, 0 },
};

/* ---- conv2d with a float32 end (conv_in, conv_out) ---- */

typedef struct {
  const char *name;
  int B, Cin, H, W, Cout;
  gboolean x_f32;                       /* TRUE: the input end is f32 (conv_in), else the output (conv_out) */
} EndConvCase;

/* conv2d_f32_ends against the GPU's own cast_in + conv2d or conv2d + cast_out, bit for bit (those ops are each
 * checked against the CPU above): the op rounds through the activation type where the casts would. Where it
 * declines (fp32; shapes the direct kernel does not take, or whose block shape has no float-ended instance) it
 * must leave y as it was: the engine then runs those ops itself. */
static void
check_conv_f32_ends (GpuEnv *env, const EndConvCase *c)
{
  char label[160];
  g_snprintf (label, sizeof label, "%s B%d %d->%d @%dx%d (f32 %s)", c->name, c->B, c->Cin, c->Cout, c->H, c->W,
              c->x_f32 ? "in" : "out");
  DdpmBackend *g = env->gpu;
  if (!check_selected (env, label) || g->ops->conv2d_f32_ends == NULL)
    return;
  const int pad[4] = { 1, 1, 1, 1 };
  const size_t n_x = (size_t) c->B * c->Cin * c->H * c->W, n_y = (size_t) c->B * c->Cout * c->H * c->W;
  /* the f32 end unrounded (the op must round it or its result), the act end as act values */
  float *x = random_host (n_x, 61, 1.5f, 0.1f, c->x_f32 ? DDPM_PRECISION_FP32 : env->precision);
  LinPair w;
  Buf xb = { 0 }, yb = { 0 }, two = { 0 }, tmp = { 0 };
  gboolean ok = lin_new (env, &w, c->Cout, c->Cin, 3, 62)
                && buf_new (env, &xb, g, n_x, !c->x_f32, label) && buf_new (env, &yb, g, n_y, c->x_f32, label)
                && buf_new (env, &two, g, n_y, c->x_f32, label) && buf_new (env, &tmp, g, c->x_f32 ? n_x : n_y, TRUE, label)
                && reserve (env, g, g->ops->conv2d_scratch (g, c->B, c->Cin, c->H, c->W, c->Cout, 3, 1, pad), label);
  if (ok)
    {
      buf_upload (&xb, x);
      if (!g->ops->conv2d_f32_ends (g, &w.g, xb.ptr, c->x_f32, yb.ptr, !c->x_f32, c->B, c->H, c->W, 1, pad, NULL))
        {
          /* declined: y still the poison buf_new wrote (NaN everywhere) */
          float *got = g_new (float, n_y);
          buf_download (&yb, got);
          size_t finite = 0;
          for (size_t i = 0; i < n_y; i++)
            finite += isfinite (got[i]);
          g_free (got);
          char detail[96];
          g_snprintf (detail, sizeof detail, "declined (the engine casts); %zu of %zu outputs written (want 0)", finite,
                      n_y);
          report_plain (env, finite == 0 && buf_guard_damage (&yb) == 0, "conv_f32_ends", label, detail);
        }
      else
        {
          if (c->x_f32)
            {
              g->ops->cast_in (g, xb.ptr, tmp.ptr, n_x);
              g->ops->conv2d (g, &w.g, tmp.ptr, two.ptr, c->B, c->H, c->W, 1, pad, NULL);
            }
          else
            {
              g->ops->conv2d (g, &w.g, xb.ptr, tmp.ptr, c->B, c->H, c->W, 1, pad, NULL);
              g->ops->cast_out (g, tmp.ptr, two.ptr, n_y);
            }
          report_bits_equal (env, "conv_f32_ends_exact", label, &yb, &two);
        }
    }
  Buf *bufs[] = { &xb, &yb, &two, &tmp };
  for (size_t i = 0; i < G_N_ELEMENTS (bufs); i++)
    buf_free (bufs[i]);
  lin_free (env, &w);
  g_free (x);
}

static const EndConvCase end_conv_cases[] = {
  { "cifar conv_in", 1, 3, 32, 32, 128, TRUE },
  { "cifar conv_out", 2, 128, 32, 32, 3, FALSE },
  /* odd sizes; 4 input channels to 64 (K 36, Cout 64: not the direct kernel's, so the op declines) */
  { "odd conv_out", 3, 24, 5, 7, 5, FALSE },
  { "4-channel conv_in", 2, 4, 8, 8, 64, TRUE },
};

/* ---- linear ---- */

typedef struct {
  const char *name;
  int M, out, in;
  gboolean silu;
} LinearCase;

static void
check_linear (GpuEnv *env, const LinearCase *lc)
{
  LinearCase c = *lc;
  if (strncmp (c.name, "odd", 3) != 0)
    {
      c.out = qc (env, c.out);
      c.in = qc (env, c.in);
    }
  char label[160];
  g_snprintf (label, sizeof label, "%s M%d %d->%d%s", c.name, c.M, c.in, c.out, c.silu ? " silu_in" : "");
  if (!check_selected (env, label))
    return;
  float *x = random_host ((size_t) c.M * c.in, 31, 1.0f, 0.0f, env->precision);
  LinPair w;
  Pair in, out;
  if (lin_new (env, &w, c.out, c.in, 0, 32) && pair_input (env, &in, (size_t) c.M * c.in, TRUE, x, label)
      && pair_output (env, &out, (size_t) c.M * c.out, TRUE, label))
    {
      env->cpu->ops->linear (env->cpu, &w.c, in.c.ptr, out.c.ptr, c.M, c.silu);
      env->gpu->ops->linear (env->gpu, &w.g, in.g.ptr, out.g.ptr, c.M, c.silu);
      double ms;
      if (finish (env, "linear", label, &out, op_bound (env->precision), -1.0))
        {
          TIME_GPU (env, ms, env->gpu->ops->linear (env->gpu, &w.g, in.g.ptr, out.g.ptr, c.M, c.silu));
          if (ms >= 0.0)
            printf ("     %-18s %-4s %-58s %9.4f ms\n", "  time", precision_name (env->precision), label, ms);
        }
    }
  pair_free (&in);
  pair_free (&out);
  lin_free (env, &w);
  g_free (x);
}

static const LinearCase linear_cases[] = {
  { "time linear_1", 2, 512, 128, FALSE },
  { "time linear_2", 2, 512, 512, TRUE },
  { "time_emb_proj", 3, 256, 512, TRUE },
  { "time_emb_proj batch 128", 128, 256, 512, TRUE },
  { "odd linear", 5, 13, 21, TRUE },
  /* 8 rows and 8 columns per warp: a partial row block and column block; rows too long for the shared
   * copy of act(x) (8 x 1100 > 8192 floats), so SiLU per use */
  { "odd linear", 9, 70, 40, TRUE },
  { "odd linear unstaged", 9, 70, 1100, TRUE },
};

/* ---- attention ---- */

typedef struct {
  const char *name;
  int B, C, HW, heads;
  float scale;
  gboolean in_place;
  int full_size;
} AttnCase;

static void
check_attention (GpuEnv *env, const AttnCase *ac)
{
  AttnCase c = *ac;
  if (env->quick && c.full_size != 0)
    {
      c.C = imax_ (c.C / 8, imin_ (8 * c.heads, 64));
      int side = (int) sqrt ((double) c.HW);
      side = qs (env, side, c.full_size);
      c.HW = side * side;
    }
  char label[160];
  g_snprintf (label, sizeof label, "%s B%d C%d tokens%d heads%d scale%.3g%s", c.name, c.B, c.C, c.HW, c.heads, c.scale,
              c.in_place ? " y=residual" : "");
  if (!check_selected (env, label))
    return;
  const size_t n = (size_t) c.B * c.C * c.HW;
  float *xn = random_host (n, 41, 1.0f, 0.0f, env->precision);
  float *res = random_host (n, 42, 1.0f, 0.0f, env->precision);
  DdpmAttentionW wc = { 0 }, wg = { 0 };
  LinPair q, k, v, o;
  Pair nin, rin, out;
  memset (&out, 0, sizeof out);
  gboolean ok = lin_new (env, &q, c.C, c.C, 0, 43) && lin_new (env, &k, c.C, c.C, 0, 45) && lin_new (env, &v, c.C, c.C, 0, 47)
                && lin_new (env, &o, c.C, c.C, 0, 49);
  if (ok)
    {
      wc.channels = wg.channels = c.C;
      wc.heads = wg.heads = c.heads;
      wc.to_q = q.c, wc.to_k = k.c, wc.to_v = v.c, wc.to_out = o.c;
      wg.to_q = q.g, wg.to_k = k.g, wg.to_v = v.g, wg.to_out = o.g;
    }
  if (ok && pair_input (env, &nin, n, TRUE, xn, label) && pair_input (env, &rin, n, TRUE, res, label)
      && (c.in_place || pair_output (env, &out, n, TRUE, label))
      && reserve (env, env->cpu, env->cpu->ops->attention_scratch (env->cpu, c.B, c.C, c.HW, c.heads), label)
      && reserve (env, env->gpu, env->gpu->ops->attention_scratch (env->gpu, c.B, c.C, c.HW, c.heads), label))
    {
      Pair *y = c.in_place ? &rin : &out;
      env->cpu->ops->attention (env->cpu, &wc, nin.c.ptr, rin.c.ptr, y->c.ptr, c.B, c.C, c.HW, c.heads, c.scale);
      env->gpu->ops->attention (env->gpu, &wg, nin.g.ptr, rin.g.ptr, y->g.ptr, c.B, c.C, c.HW, c.heads, c.scale);
      double ms;
      if (finish (env, "attention", label, y, op_bound (env->precision), -1.0) && !c.in_place)
        {
          TIME_GPU (env, ms, env->gpu->ops->attention (env->gpu, &wg, nin.g.ptr, rin.g.ptr, y->g.ptr, c.B, c.C, c.HW,
                                                       c.heads, c.scale));
          if (ms >= 0.0)
            printf ("     %-18s %-4s %-58s %9.4f ms%s%s\n", "  time", precision_name (env->precision), label, ms,
                    env->variant ? "  " : "", env->variant ? env->variant : "");
        }
    }
  pair_free (&nin);
  pair_free (&rin);
  pair_free (&out);
  lin_free (env, &q);
  lin_free (env, &k);
  lin_free (env, &v);
  lin_free (env, &o);
  g_free (xn);
  g_free (res);
}

static const AttnCase attn_cases[] = {
  { "cifar attention 16x16", 2, 256, 256, 1, 1.0f, FALSE, 32 },
  { "cifar mid attention 4x4", 2, 256, 16, 1, 1.0f, TRUE, 32 },
  { "celebahq attention 16x16", 2, 512, 256, 1, 1.0f, FALSE, 256 },
  { "celebahq mid attention 8x8", 1, 512, 64, 1, 0.5f, TRUE, 256 },
  { "multi-head attention", 2, 256, 256, 8, 1.0f, FALSE, 32 },
  { "multi-head attention one image", 1, 256, 256, 4, 1.0f, TRUE, 32 },
  { "attention 32x32", 1, 128, 1024, 1, 1.0f, FALSE, 32 },
  /* head_dim 16 and two key chunks of the fused kernel even in --quick (which shrinks the others to d < 16
   * for several heads) */
  { "multi-head attention d16", 2, 64, 144, 4, 1.0f, FALSE, 0 },
  { "odd attention", 3, 24, 49, 3, 1.0f, FALSE, 0 },
};

/* ---- elementwise ops ---- */

static void
check_elementwise (GpuEnv *env)
{
  const double bound = op_bound (env->precision);
  const int B = 2, C = qc (env, 256), HW = env->quick ? 64 : 256;
  const size_t n = (size_t) B * C * HW;
  char label[160];

  /* cast_in then cast_out: the GPU round trip is the rounding to the activation type */
  g_snprintf (label, sizeof label, "cast_in+cast_out n%zu", n);
  if (check_selected (env, label))
    {
      float *x = random_host (n, 51, 2.0f, 0.0f, DDPM_PRECISION_FP32);
      Buf f_in, act, f_out;
      if (buf_new (env, &f_in, env->gpu, n, FALSE, label) && buf_new (env, &act, env->gpu, n, TRUE, label)
          && buf_new (env, &f_out, env->gpu, n, FALSE, label))
        {
          buf_upload (&f_in, x);
          env->gpu->ops->cast_in (env->gpu, f_in.ptr, act.ptr, n);
          env->gpu->ops->cast_out (env->gpu, act.ptr, f_out.ptr, n);
          if (gpu_clean (env, "cast", label))
            {
              float *got = g_new (float, n);
              buf_download (&f_out, got);
              float *want = g_memdup2 (x, n * sizeof (float));
              round_act_array (env->precision, want, n);
              report_check (env, "cast", label, got, want, n, 0.0, buf_guard_damage (&act) + buf_guard_damage (&f_out),
                            -1.0);
              g_free (got);
              g_free (want);
            }
        }
      buf_free (&f_in);
      buf_free (&act);
      buf_free (&f_out);
      g_free (x);
    }

  /* gather_rows (the time table's lookup; no CPU op: the reference is the host's copy): 1000 timesteps, 50 of
   * them with rows, at cifar10-32's row length; and an odd case whose indices past either end are clamped and
   * whose last image's timestep has no row (NaN, checked apart) */
  const int gshape[2][3] = { { 1000, 50, env->quick ? 704 : 5632 }, { 7, 3, 37 } };
  const float gindex[2][4] = { { 0.0f, 980.0f, 500.0f, 20.0f }, { -2.0f, 6.0f, 1e9f, 1.0f } };
  for (int k = 0; k < 2 && env->gpu->ops->gather_rows != NULL; k++)
    {
      const int n = gshape[k][0], rows = gshape[k][1], cols = gshape[k][2], gb = 4;
      g_snprintf (label, sizeof label, "gather_rows %d timesteps, %d rows x %d B%d", n, rows, cols, gb);
      if (!check_selected (env, label))
        continue;
      /* timestep t has row (t / 20 * 7) % rows where t % 20 == 0 (k = 0); rows 2, -1, 0, 1, -1, -1, 1 (k = 1) */
      float *row_of = g_new (float, n);
      static const float odd_rows[7] = { 2, -1, 0, 1, -1, -1, 1 };
      for (int t = 0; t < n; t++)
        row_of[t] = k == 1 ? odd_rows[t] : t % 20 == 0 ? (float) (t / 20 * 7 % rows) : -1.0f;
      float *table = random_host ((size_t) rows * cols, 59, 1.0f, 0.0f, env->precision);
      const int checked = k == 1 ? gb - 1 : gb;       /* the odd case's last image has no row */
      float *want = g_new (float, (size_t) gb * cols), *got = g_new (float, (size_t) gb * cols);
      for (int b = 0; b < checked; b++)
        {
          const int r = (int) row_of[CLAMP ((int) gindex[k][b], 0, n - 1)];
          memcpy (want + (size_t) b * cols, table + (size_t) r * cols, cols * sizeof (float));
        }
      Buf tb, mb, ib, yb;
      if (buf_new (env, &tb, env->gpu, (size_t) rows * cols, TRUE, label) && buf_new (env, &mb, env->gpu, n, FALSE, label)
          && buf_new (env, &ib, env->gpu, gb, FALSE, label) && buf_new (env, &yb, env->gpu, (size_t) gb * cols, TRUE, label))
        {
          buf_upload (&tb, table);
          buf_upload (&mb, row_of);
          buf_upload (&ib, gindex[k]);
          double ms;
          env->gpu->ops->gather_rows (env->gpu, tb.ptr, mb.ptr, n, ib.ptr, yb.ptr, gb, cols);
          TIME_GPU (env, ms, env->gpu->ops->gather_rows (env->gpu, tb.ptr, mb.ptr, n, ib.ptr, yb.ptr, gb, cols));
          if (gpu_clean (env, "gather_rows", label))
            {
              buf_download (&yb, got);
              report_check (env, "gather_rows", label, got, want, (size_t) checked * cols, 0.0, buf_guard_damage (&yb),
                            ms);
              if (checked < gb)
                {
                  size_t finite = 0;
                  for (int c = 0; c < cols; c++)
                    finite += isfinite (got[(size_t) checked * cols + c]);
                  char detail[64];
                  g_snprintf (detail, sizeof detail, "%zu of %d values finite (want 0)", finite, cols);
                  report_plain (env, finite == 0, "gather_rows", "gather_rows: a timestep without a row gives NaN",
                                detail);
                }
            }
        }
      buf_free (&tb);
      buf_free (&mb);
      buf_free (&ib);
      buf_free (&yb);
      g_free (row_of);
      g_free (table);
      g_free (want);
      g_free (got);
    }

  /* add_channel_bias: h (B, C, HW) += v (B, C); a 16-byte-vector case and an odd one */
  const int cbs[2][3] = { { B, C, HW }, { 3, 5, 7 } };
  for (int k = 0; k < 2; k++)
    {
      const int bb = cbs[k][0], cc = cbs[k][1], hw = cbs[k][2];
      const size_t nn = (size_t) bb * cc * hw;
      g_snprintf (label, sizeof label, "add_channel_bias B%d C%d HW%d", bb, cc, hw);
      if (!check_selected (env, label))
        continue;
      float *h = random_host (nn, 52, 1.0f, 0.0f, env->precision), *v = random_host ((size_t) bb * cc, 53, 1.0f, 0.0f, env->precision);
      Pair ph, pv;
      if (pair_input (env, &ph, nn, TRUE, h, label) && pair_input (env, &pv, (size_t) bb * cc, TRUE, v, label))
        {
          env->cpu->ops->add_channel_bias (env->cpu, ph.c.ptr, pv.c.ptr, bb, cc, hw);
          env->gpu->ops->add_channel_bias (env->gpu, ph.g.ptr, pv.g.ptr, bb, cc, hw);
          finish (env, "add_channel_bias", label, &ph, bound, -1.0);
        }
      pair_free (&ph);
      pair_free (&pv);
      g_free (h);
      g_free (v);
    }

  /* add_scaled: separate output, in place (y = a), and an odd length */
  const float scales[3] = { 1.0f, 0.70710678f, 0.5f };
  const size_t lens[3] = { n, n, 1001 };
  for (int s = 0; s < 3; s++)
    {
      const size_t nn = lens[s];
      g_snprintf (label, sizeof label, "add_scaled n%zu scale %.6g%s", nn, scales[s], s == 1 ? " y=a" : "");
      if (!check_selected (env, label))
        continue;
      float *a = random_host (nn, 54, 1.0f, 0.0f, env->precision), *b = random_host (nn, 55, 1.0f, 0.0f, env->precision);
      Pair pa, pb, py;
      memset (&py, 0, sizeof py);
      if (pair_input (env, &pa, nn, TRUE, a, label) && pair_input (env, &pb, nn, TRUE, b, label)
          && (s == 1 || pair_output (env, &py, nn, TRUE, label)))
        {
          Pair *y = s == 1 ? &pa : &py;
          env->cpu->ops->add_scaled (env->cpu, pa.c.ptr, pb.c.ptr, y->c.ptr, nn, scales[s]);
          env->gpu->ops->add_scaled (env->gpu, pa.g.ptr, pb.g.ptr, y->g.ptr, nn, scales[s]);
          finish (env, "add_scaled", label, y, bound, -1.0);
        }
      pair_free (&pa);
      pair_free (&pb);
      pair_free (&py);
      g_free (a);
      g_free (b);
    }

  /* concat_channels: a vector-aligned case and an odd one */
  const int cat[2][4] = { { B, qc (env, 256), qc (env, 256), 16 }, { 3, 3, 5, 7 } };
  for (int i = 0; i < 2; i++)
    {
      const int cb = cat[i][0], ca = cat[i][1], cb2 = cat[i][2], hw = cat[i][3];
      g_snprintf (label, sizeof label, "concat_channels B%d %d+%d HW%d", cb, ca, cb2, hw);
      if (!check_selected (env, label))
        continue;
      size_t na = (size_t) cb * ca * hw, nb = (size_t) cb * cb2 * hw;
      float *a = random_host (na, 56, 1.0f, 0.0f, env->precision), *b = random_host (nb, 57, 1.0f, 0.0f, env->precision);
      Pair pa, pb, py;
      if (pair_input (env, &pa, na, TRUE, a, label) && pair_input (env, &pb, nb, TRUE, b, label)
          && pair_output (env, &py, na + nb, TRUE, label))
        {
          env->cpu->ops->concat_channels (env->cpu, pa.c.ptr, ca, pb.c.ptr, cb2, py.c.ptr, cb, hw);
          env->gpu->ops->concat_channels (env->gpu, pa.g.ptr, ca, pb.g.ptr, cb2, py.g.ptr, cb, hw);
          finish (env, "concat_channels", label, &py, 0.0, -1.0);
        }
      pair_free (&pa);
      pair_free (&pb);
      pair_free (&py);
      g_free (a);
      g_free (b);
    }

  /* upsample_nearest2x */
  /* 16-byte vectors of output rows (8x8; 3x4: one vector per fp16 row), and odd sizes element by element */
  const int up[3][4] = { { B, qc (env, 256), 8, 8 }, { 1, 3, 5, 7 }, { 2, 5, 3, 4 } };
  for (int i = 0; i < 3; i++)
    {
      const int ub = up[i][0], uc = up[i][1], uh = up[i][2], uw = up[i][3];
      g_snprintf (label, sizeof label, "upsample_nearest2x B%d C%d %dx%d", ub, uc, uh, uw);
      if (!check_selected (env, label))
        continue;
      size_t nx = (size_t) ub * uc * uh * uw;
      float *x = random_host (nx, 58, 1.0f, 0.0f, env->precision);
      Pair px, py;
      if (pair_input (env, &px, nx, TRUE, x, label) && pair_output (env, &py, nx * 4, TRUE, label))
        {
          env->cpu->ops->upsample_nearest2x (env->cpu, px.c.ptr, py.c.ptr, ub, uc, uh, uw);
          env->gpu->ops->upsample_nearest2x (env->gpu, px.g.ptr, py.g.ptr, ub, uc, uh, uw);
          finish (env, "upsample_nearest2x", label, &py, 0.0, -1.0);
        }
      pair_free (&px);
      pair_free (&py);
      g_free (x);
    }

  /* timestep_embedding: cifar/celebahq (shift 1, no flip) and the other convention */
  const int dims[2] = { 128, 64 };
  for (int i = 0; i < 2; i++)
    {
      const gboolean flip = i == 1;
      const float shift = i == 0 ? 1.0f : 0.0f;
      g_snprintf (label, sizeof label, "timestep_embedding B3 dim%d flip%d shift%.0f", dims[i], flip, shift);
      if (!check_selected (env, label))
        continue;
      const float t[3] = { 0.0f, 10.0f, 999.0f };
      Pair pt, py;
      if (pair_input (env, &pt, 3, FALSE, t, label) && pair_output (env, &py, (size_t) 3 * dims[i], TRUE, label))
        {
          env->cpu->ops->timestep_embedding (env->cpu, pt.c.ptr, py.c.ptr, 3, dims[i], flip, shift);
          env->gpu->ops->timestep_embedding (env->gpu, pt.g.ptr, py.g.ptr, 3, dims[i], flip, shift);
          /* fp32: bit-exact expected (both evaluate in double); half types: the output rounding */
          finish (env, "timestep_embedding", label, &py, env->precision == DDPM_PRECISION_FP32 ? 1e-7 : bound, -1.0);
        }
      pair_free (&pt);
      pair_free (&py);
    }
}

/* ---- sampler ops: randn, scheduler_step, count_nonfinite ---- */

static void
check_sampler_ops (GpuEnv *env)
{
  const int B = 2;
  const size_t per = 3 * 32 * 32;
  char label[160];

  g_snprintf (label, sizeof label, "randn B%d n%zu seed 42 stream 5", B, per);
  if (check_selected (env, label))
    {
      Pair py;
      if (pair_output (env, &py, per * B, FALSE, label))
        {
          env->cpu->ops->randn (env->cpu, py.c.ptr, 42, 5, per, B);
          env->gpu->ops->randn (env->gpu, py.g.ptr, 42, 5, per, B);
          /* Philox is exact; only the double log/cos of the Box-Muller step may differ by an ulp */
          finish (env, "randn", label, &py, 1e-6, -1.0);
        }
      pair_free (&py);
    }

  DdpmSchedulerConfig scfg;
  ddpm_scheduler_config_init_defaults (&scfg);
  DdpmSchedule sched;
  GError *error = NULL;
  if (!ddpm_schedule_init (&sched, &scfg, &error))
    {
      report_plain (env, FALSE, "scheduler_step", "schedule", error->message);
      g_error_free (error);
      return;
    }
  int ts[20];
  ddpm_schedule_timesteps (&sched, 20, ts, NULL);
  struct {
    DdpmSamplerKind kind;
    int step;
    double eta;
    gboolean inject, x0;
    const char *name;
  } cases[] = {
    { DDPM_SAMPLER_DDPM, 3, 0.0, FALSE, TRUE, "DDPM step 4/20 philox noise +x0" },
    { DDPM_SAMPLER_DDPM, 19, 0.0, FALSE, FALSE, "DDPM last step (no noise)" },
    { DDPM_SAMPLER_DDPM, 7, 0.0, TRUE, TRUE, "DDPM step 8/20 injected noise" },
    { DDPM_SAMPLER_DDIM, 5, 0.5, FALSE, TRUE, "DDIM eta 0.5 step 6/20" },
    { DDPM_SAMPLER_DDIM, 5, 0.0, FALSE, FALSE, "DDIM eta 0 step 6/20" },
  };
  for (size_t i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_snprintf (label, sizeof label, "%s B%d n%zu", cases[i].name, B, per);
      if (!check_selected (env, label))
        continue;
      DdpmStepParams sp;
      ddpm_schedule_step_params (&sched, cases[i].kind, ts, 20, cases[i].step, cases[i].eta, &sp);
      sp.seed = 1234;
      float *x = random_host (per * B, 61, 1.0f, 0.0f, DDPM_PRECISION_FP32);
      float *m = random_host (per * B, 62, 1.0f, 0.0f, DDPM_PRECISION_FP32);
      float *z = random_host (per * B, 63, 1.0f, 0.0f, DDPM_PRECISION_FP32);
      Pair px, pm, pz, px0;
      void *params_c = env->cpu->ops->alloc_bytes (env->cpu, sizeof sp, NULL);
      void *params_g = env->gpu->ops->alloc_bytes (env->gpu, sizeof sp, NULL);
      if (params_c && params_g && pair_input (env, &px, per * B, FALSE, x, label)
          && pair_input (env, &pm, per * B, FALSE, m, label) && pair_input (env, &pz, per * B, FALSE, z, label)
          && pair_output (env, &px0, per * B, FALSE, label))
        {
          env->cpu->ops->write_params (env->cpu, params_c, &sp);
          env->gpu->ops->write_params (env->gpu, params_g, &sp);
          env->cpu->ops->scheduler_step (env->cpu, params_c, px.c.ptr, pm.c.ptr, cases[i].inject ? pz.c.ptr : NULL,
                                         cases[i].x0 ? px0.c.ptr : NULL, per, B);
          env->gpu->ops->scheduler_step (env->gpu, params_g, px.g.ptr, pm.g.ptr, cases[i].inject ? pz.g.ptr : NULL,
                                         cases[i].x0 ? px0.g.ptr : NULL, per, B);
          /* the same float operations in the same order: exact but for an ulp of Philox's Box-Muller */
          finish (env, "scheduler_step", label, &px, 1e-6, -1.0);
          if (cases[i].x0)
            finish (env, "scheduler_step x0", label, &px0, 1e-6, -1.0);
        }
      pair_free (&px);
      pair_free (&pm);
      pair_free (&pz);
      pair_free (&px0);
      if (params_c)
        env->cpu->ops->free (env->cpu, params_c);
      if (params_g)
        env->gpu->ops->free (env->gpu, params_g);
      g_free (x);
      g_free (m);
      g_free (z);
    }
  ddpm_schedule_clear (&sched);

  g_snprintf (label, sizeof label, "count_nonfinite n100003 (3 planted)");
  if (check_selected (env, label))
    {
      const size_t n = 100003;
      float *x = random_host (n, 64, 1.0f, 0.0f, DDPM_PRECISION_FP32);
      x[17] = NAN;
      x[50000] = INFINITY;
      x[n - 1] = -INFINITY;
      Buf b;
      if (buf_new (env, &b, env->gpu, n, FALSE, label))
        {
          buf_upload (&b, x);
          size_t got = env->gpu->ops->count_nonfinite (env->gpu, b.ptr, n);
          char *detail = g_strdup_printf ("counted %zu (want 3)", got);
          report_plain (env, got == 3, "count_nonfinite", label, detail);
          g_free (detail);
        }
      buf_free (&b);
      g_free (x);
    }
}

/* Out of memory must come back as DDPM_ERROR_NOMEM with advice, not a crash or a sticky device error. */
static void
check_out_of_memory (GpuEnv *env)
{
  const char *label = "alloc_act of 2^40 elements";
  if (!check_selected (env, label))
    return;
  GError *error = NULL;
  void *p = env->gpu->ops->alloc_act (env->gpu, (size_t) 1 << 40, &error);
  gboolean ok = p == NULL && g_error_matches (error, DDPM_ERROR, DDPM_ERROR_NOMEM)
                && strstr (error->message, "smaller batch") != NULL;
  report_plain (env, ok, "out-of-memory", label, error ? error->message : "no error");
  if (p != NULL)
    env->gpu->ops->free (env->gpu, p);
  g_clear_error (&error);
  /* and the backend still works afterwards */
  gpu_clean (env, "out-of-memory", "after the failed allocation");
}

void
run_op_checks (GpuEnv *env, unsigned which)
{
  if (which & OPS_ELEMENTWISE)
    {
      check_out_of_memory (env);
      check_elementwise (env);
    }
  if (which & OPS_SAMPLER)
    check_sampler_ops (env);
  if (which & OPS_LINEAR)
    for (size_t i = 0; i < G_N_ELEMENTS (linear_cases); i++)
      check_linear (env, &linear_cases[i]);
  if (which & OPS_NORM)
    for (size_t i = 0; i < G_N_ELEMENTS (norm_cases); i++)
      check_group_norm (env, &norm_cases[i]);
  if (which & OPS_CONV)
    for (size_t i = 0; i < G_N_ELEMENTS (conv_cases); i++)
      {
        check_conv (env, &conv_cases[i], FALSE);
        if (conv_cases[i].stride == 1)
          check_conv (env, &conv_cases[i], TRUE);
      }
  if (which & (OPS_CONV | OPS_NORM_CONV))
    for (size_t i = 0; i < G_N_ELEMENTS (norm_conv_cases); i++)
      check_norm_conv (env, &norm_conv_cases[i]);
  if (which & (OPS_CONV | OPS_NORM_CONV))
    for (int fused = 0; fused < 2; fused++)
      check_resnet_sums (env, fused);
  if (which & OPS_CONV)
    for (size_t i = 0; i < G_N_ELEMENTS (upsample_conv_cases); i++)
      check_upsample_conv (env, &upsample_conv_cases[i]);
  if (which & OPS_CONV)
    for (size_t i = 0; i < G_N_ELEMENTS (end_conv_cases); i++)
      check_conv_f32_ends (env, &end_conv_cases[i]);
  if (which & OPS_CONV)
    run_conv_layout_checks (env);
  if (which & OPS_ATTENTION)
    for (size_t i = 0; i < G_N_ELEMENTS (attn_cases); i++)
      check_attention (env, &attn_cases[i]);
}
