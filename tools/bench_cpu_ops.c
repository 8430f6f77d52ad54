/* bench_cpu_ops.c: times the CPU backend's convolutions at every google/ddpm-cifar10-32 conv shape (and the
 * other hot ops), prints ms and GFLOP/s, and the conv time of one whole forward (shape time x count).
 *
 *   OMP_NUM_THREADS=2 build/tools/bench_cpu_ops [--batch B] [--reps N] [--filter TEXT] [--cpu-time]
 *                                               [--shape CIN,COUT,H,K,STRIDE[,COUNT]]...
 *
 * --shape replaces the built-in table (tools/bench_cpu_ops_torch.py derives the shapes of any config and
 * passes them one at a time).
 *
 * GFLOP/s counts direct-convolution FLOPs (2 * Cout * Cin * k^2 * Ho * Wo * B), whatever the algorithm,
 * so numbers compare with PyTorch's (tools/bench_cpu_ops_torch.py prints the same table for torch and the
 * ratio). The machine is shared: each shape is timed reps times (single calls) and the best is kept. */
#include "backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
  int cin, cout, h, k, stride, count;    /* count: how many times one cifar10-32 forward runs this shape */
} ConvShape;

/* One forward of google/ddpm-cifar10-32 (see unet2d-spec.md): 3x3 convs, stride-2 downsamplers
 * (pad {0,0,1,1}) and 1x1 shortcuts, per resolution. */
static const ConvShape SHAPES[] = {
  { 3, 128, 32, 3, 1, 1 },   { 128, 128, 32, 3, 1, 7 }, { 384, 128, 32, 3, 1, 1 }, { 256, 128, 32, 3, 1, 2 },
  { 256, 256, 32, 3, 1, 1 }, { 128, 3, 32, 3, 1, 1 },   { 384, 128, 32, 1, 1, 1 }, { 256, 128, 32, 1, 1, 2 },
  { 128, 128, 32, 3, 2, 1 }, { 128, 256, 16, 3, 1, 1 }, { 256, 256, 16, 3, 1, 7 }, { 512, 256, 16, 3, 1, 2 },
  { 384, 256, 16, 3, 1, 1 }, { 128, 256, 16, 1, 1, 1 }, { 512, 256, 16, 1, 1, 2 }, { 384, 256, 16, 1, 1, 1 },
  { 256, 256, 16, 3, 2, 1 }, { 256, 256, 8, 3, 1, 8 },  { 512, 256, 8, 3, 1, 3 },  { 512, 256, 8, 1, 1, 3 },
  { 256, 256, 8, 3, 2, 1 },  { 256, 256, 4, 3, 1, 11 }, { 512, 256, 4, 3, 1, 3 },  { 512, 256, 4, 1, 1, 3 },
};

/* --cpu-time: process CPU time instead of wall time. With OMP_NUM_THREADS=1 that is immune to other
 * processes taking the core (useful for A/B comparisons on a loaded machine); with more threads it
 * also counts barrier spinning. */
static clockid_t bench_clock = CLOCK_MONOTONIC;

static double
now_s (void)
{
  struct timespec ts;
  clock_gettime (bench_clock, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float *
rand_floats (size_t n, float scale)
{
  float *p = g_new (float, n);
  for (size_t i = 0; i < n; i++)
    p[i] = scale * ((float) rand () / RAND_MAX - 0.5f);
  return p;
}

/* Best seconds of one call over reps calls (after a warm-up call). Single calls, not averages: on a shared
 * machine an OpenMP barrier waits whenever the other thread is descheduled, and the minimum is the
 * undisturbed time. */
typedef void (*BenchFn) (void *data);

static double
time_best (BenchFn fn, void *data, int reps)
{
  fn (data);
  double best = 1e30;
  for (int r = 0; r < reps; r++)
    {
      double t0 = now_s ();
      fn (data);
      best = fmin (best, now_s () - t0);
    }
  return best;
}

typedef struct {
  DdpmBackend *be;
  DdpmLinearW w;
  DdpmNormW nw;
  DdpmAttentionW aw;
  float *x, *y, *ss;
  int B, H, W, stride, C, HW;
  int pad[4];
} Job;

static void
run_conv (void *data)
{
  Job *j = data;
  j->be->ops->conv2d (j->be, &j->w, j->x, j->y, j->B, j->H, j->W, j->stride, j->pad, NULL);
}

static void
run_group_norm (void *data)
{
  Job *j = data;
  j->be->ops->group_norm (j->be, &j->nw, j->x, j->y, j->B, j->C, j->HW, 32, 1e-6f, j->ss, TRUE);
}

static void
run_attention (void *data)
{
  Job *j = data;
  j->be->ops->attention (j->be, &j->aw, j->x, j->y, j->y, j->B, j->C, j->HW, 1, 1.0f);
}

static void *
upload (DdpmBackend *be, const float *host, DdpmParamKind kind, int ndim, const int64_t *shape)
{
  g_autoptr (GError) error = NULL;
  void *h = be->ops->upload_param (be, host, kind, ndim, shape, &error);
  if (!h)
    g_error ("upload: %s", error->message);
  return h;
}

static void
reserve (DdpmBackend *be, size_t bytes)
{
  g_autoptr (GError) error = NULL;
  if (!be->ops->reserve_scratch (be, bytes, &error))
    g_error ("scratch: %s", error->message);
}

int
main (int argc, char **argv)
{
  int B = 1, reps = 30;
  const char *filter = NULL;
  GArray *shapes = g_array_new (FALSE, FALSE, sizeof (ConvShape));
  for (int i = 1; i < argc; i++)
    {
      if (!strcmp (argv[i], "--batch") && i + 1 < argc)
        B = atoi (argv[++i]);
      else if (!strcmp (argv[i], "--reps") && i + 1 < argc)
        reps = atoi (argv[++i]);
      else if (!strcmp (argv[i], "--filter") && i + 1 < argc)
        filter = argv[++i];
      else if (!strcmp (argv[i], "--cpu-time"))
        bench_clock = CLOCK_PROCESS_CPUTIME_ID;
      else if (!strcmp (argv[i], "--shape") && i + 1 < argc)
        {
          ConvShape sh = { .count = 1 };
          if (sscanf (argv[++i], "%d,%d,%d,%d,%d,%d", &sh.cin, &sh.cout, &sh.h, &sh.k, &sh.stride, &sh.count) < 5
              || sh.cin < 1 || sh.cout < 1 || sh.h < 1 || sh.k < 1 || sh.stride < 1)
            {
              fprintf (stderr, "bad --shape %s (want CIN,COUT,H,K,STRIDE[,COUNT])\n", argv[i]);
              return 2;
            }
          g_array_append_val (shapes, sh);
        }
      else
        {
          fprintf (stderr, "usage: %s [--batch B] [--reps N] [--filter TEXT] [--cpu-time] [--shape CIN,COUT,H,K,STRIDE[,COUNT]]...\n", argv[0]);
          return 2;
        }
    }
  g_autoptr (GError) error = NULL;
  DdpmBackend *be = ddpm_backend_cpu_new (&error);
  if (!be)
    g_error ("%s", error->message);
  printf ("# %s, batch %d, best of %d%s\n", be->description, B, reps,
          bench_clock == CLOCK_MONOTONIC ? "" : " (CPU time)");
  printf ("%-28s %9s %9s %6s %9s\n", "shape", "ms", "GFLOP/s", "count", "ms/fwd");
  double total_ms = 0, total_flop = 0;
  gboolean custom = shapes->len > 0;     /* --shape: convolutions only */
  if (!custom)
    g_array_append_vals (shapes, SHAPES, G_N_ELEMENTS (SHAPES));
  for (guint s = 0; s < shapes->len; s++)
    {
      const ConvShape *sh = &g_array_index (shapes, ConvShape, s);
      char label[64];
      g_snprintf (label, sizeof label, "conv%dx%d %d->%d %dx%d%s", sh->k, sh->k, sh->cin, sh->cout, sh->h, sh->h,
                  sh->stride == 2 ? " s2" : "");
      if (filter && !strstr (label, filter))
        continue;
      Job j = { .be = be, .B = B, .H = sh->h, .W = sh->h, .stride = sh->stride };
      if (sh->stride == 2)
        j.pad[2] = j.pad[3] = 1;           /* downsample_padding 0: one row bottom, one column right */
      else
        for (int i = 0; i < 4; i++)
          j.pad[i] = sh->k / 2;
      int Ho = (sh->h + j.pad[0] + j.pad[2] - sh->k) / sh->stride + 1;
      float *w = rand_floats ((size_t) sh->cout * sh->cin * sh->k * sh->k, 0.1f), *bias = rand_floats (sh->cout, 0.1f);
      int64_t wshape[4] = { sh->cout, sh->cin, sh->k, sh->k }, bshape[1] = { sh->cout };
      j.w = (DdpmLinearW) { upload (be, w, DDPM_PARAM_CONV, 4, wshape), upload (be, bias, DDPM_PARAM_VECTOR, 1, bshape),
                            sh->cout, sh->cin, sh->k };
      j.x = rand_floats ((size_t) B * sh->cin * sh->h * sh->h, 2.0f);
      j.y = g_new (float, (size_t) B * sh->cout * Ho * Ho);
      reserve (be, be->ops->conv2d_scratch (be, B, sh->cin, sh->h, sh->h, sh->cout, sh->k, sh->stride, j.pad));
      double t = time_best (run_conv, &j, reps);
      double flop = 2.0 * sh->cout * sh->cin * sh->k * sh->k * Ho * Ho * B;
      printf ("%-28s %9.3f %9.1f %6d %9.3f\n", label, t * 1e3, flop / t * 1e-9, sh->count, t * 1e3 * sh->count);
      fflush (stdout);
      total_ms += t * 1e3 * sh->count;
      total_flop += flop * sh->count;
      be->ops->free (be, j.w.weight);
      be->ops->free (be, j.w.bias);
      g_free (w), g_free (bias), g_free (j.x), g_free (j.y);
    }
  if (!filter && !custom)
    printf ("%-28s %9s %9.1f %6s %9.3f\n", "all convs of one forward", "", total_flop / total_ms * 1e-6, "",
            total_ms);

  /* Other hot ops: GroupNorm + scale/shift + SiLU at 32x32x128, attention at 16x16x256 (one head). */
  if (!custom && (!filter || strstr ("group_norm", filter)))
    {
      int C = 128, HW = 1024;
      Job j = { .be = be, .B = B, .C = C, .HW = HW };
      float *g = rand_floats (C, 1.0f), *b = rand_floats (C, 1.0f);
      int64_t shape[1] = { C };
      j.nw = (DdpmNormW) { upload (be, g, DDPM_PARAM_VECTOR, 1, shape), upload (be, b, DDPM_PARAM_VECTOR, 1, shape), C };
      j.x = rand_floats ((size_t) B * C * HW, 2.0f);
      j.y = g_new (float, (size_t) B * C * HW);
      j.ss = rand_floats ((size_t) B * 2 * C, 0.2f);
      double t = time_best (run_group_norm, &j, reps);
      printf ("%-28s %9.3f %8.1f GB/s\n", "group_norm+ss+silu 128@32x32", t * 1e3, 2.0 * B * C * HW * 4 / t * 1e-9);
      be->ops->free (be, j.nw.gamma), be->ops->free (be, j.nw.beta);
      g_free (g), g_free (b), g_free (j.x), g_free (j.y), g_free (j.ss);
    }
  if (!custom && (!filter || strstr ("attention", filter)))
    {
      int C = 256, HW = 256;
      Job j = { .be = be, .B = B, .C = C, .HW = HW };
      DdpmLinearW *lw[4] = { &j.aw.to_q, &j.aw.to_k, &j.aw.to_v, &j.aw.to_out };
      float *hw[8];
      int64_t wshape[2] = { C, C }, bshape[1] = { C };
      for (int i = 0; i < 4; i++)
        {
          hw[2 * i] = rand_floats ((size_t) C * C, 0.1f);
          hw[2 * i + 1] = rand_floats (C, 0.1f);
          *lw[i] = (DdpmLinearW) { upload (be, hw[2 * i], DDPM_PARAM_LINEAR, 2, wshape),
                                   upload (be, hw[2 * i + 1], DDPM_PARAM_VECTOR, 1, bshape), C, C, 0 };
        }
      j.aw.channels = C, j.aw.heads = 1;
      j.x = rand_floats ((size_t) B * C * HW, 2.0f);
      j.y = rand_floats ((size_t) B * C * HW, 2.0f);
      reserve (be, be->ops->attention_scratch (be, B, C, HW, 1));
      double t = time_best (run_attention, &j, reps);
      double flop = 2.0 * B * (4.0 * C * C * HW + 2.0 * HW * HW * C);
      printf ("%-28s %9.3f %9.1f\n", "attention 256@16x16 1 head", t * 1e3, flop / t * 1e-9);
      for (int i = 0; i < 4; i++)
        be->ops->free (be, lw[i]->weight), be->ops->free (be, lw[i]->bias);
      for (int i = 0; i < 8; i++)
        g_free (hw[i]);
      g_free (j.x), g_free (j.y);
    }
  g_array_free (shapes, TRUE);
  be->ops->destroy (be);
  return 0;
}
