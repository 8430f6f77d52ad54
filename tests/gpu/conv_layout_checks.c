/* conv_layout_checks.c: convolutions whose every output says where it came from, so that a tile whose operand
 * or accumulator layout is wrong on real hardware (the wgmma tile's descriptors and swizzle, ldmatrix / mma.sync
 * fragments) is diagnosed by the failing run itself, without another device call.
 *
 * Weights are one-hot: output channel m reads one input channel sel(m) at one filter tap tap(m), with weight
 * +1 in the first 64 rows of each 128-row channel tile and -1 in the other 64 (one sign per wgmma
 * warpgroup). Two probes share the weights: in probe "pixel" x[c][p] = p + 1, in probe "channel" x[c][p] =
 * c + 1. So y[m][p] = sign(m) * (q + 1) and sign(m) * (sel(m) + 1), with q the pixel under tap(m) of p (0 at
 * the padded border). Small integers: exact in fp32, fp16 and bf16 (<= 256), whatever the summation order, so
 * the bound is 0. On a failure, the first mismatches are printed with the output position whose (pixel,
 * channel) pair they hold: "holds [m'][p']" means a row / column mix-up; "holds nothing" means garbled K
 * (a wrong channel or tap: descriptor start, swizzle) or a sum of several. Run by every conv variant of
 * test_cuda (OPS_CONV); run.sh's stage 1w shows these lines first when the wgmma tile fails. */
#include "gpu_check.h"

#include <string.h>

typedef struct {
  const char *name;
  int Cin, H, W, Cout;
} LayoutCase;

static const LayoutCase layout_cases[] = {
  /* one 128 x 128 tile (wgmma, mma.sync), 9 K slices of 64 */
  { "conv layout one tile", 64, 16, 8, 128 },
  /* 2 x 2 tiles (4: a wave of the emulator's SMs), 18 slices of 64 through 3 stages */
  { "conv layout four tiles", 128, 16, 16, 256 },
};

static int layout_sel (int m, int Cin) { return (5 * m + 3) % Cin; }
static int layout_tap (int m) { return m % 9; }
static float layout_sign (int m) { return (m % 128) < 64 ? 1.0f : -1.0f; }

/* The pixel under output pixel p's tap t (3 x 3, padding 1), or -1 at the border. */
static int
layout_source_pixel (int p, int t, int H, int W)
{
  const int r = p / W + t / 3 - 1, c = p % W + t % 3 - 1;
  return r < 0 || r >= H || c < 0 || c >= W ? -1 : r * W + c;
}

/* Expected probe outputs, [Cout][H W]: pixel codes and channel codes. */
static void
layout_expected (const LayoutCase *lc, float *want_pixel, float *want_channel)
{
  const int P = lc->H * lc->W;
  for (int m = 0; m < lc->Cout; m++)
    for (int p = 0; p < P; p++)
      {
        const int q = layout_source_pixel (p, layout_tap (m), lc->H, lc->W);
        want_pixel[(size_t) m * P + p] = q < 0 ? 0.0f : layout_sign (m) * (float) (q + 1);
        want_channel[(size_t) m * P + p] = q < 0 ? 0.0f : layout_sign (m) * (float) (layout_sel (m, lc->Cin) + 1);
      }
}

/* Prints up to 8 mismatching outputs with what they hold, and counts of the kinds of mismatch. */
static void
layout_diagnose (GpuEnv *env, const LayoutCase *lc, const float *got_pixel, const float *got_channel,
                 const float *want_pixel, const float *want_channel)
{
  const int P = lc->H * lc->W;
  const size_t n = (size_t) lc->Cout * P;
  size_t bad = 0, unwritten = 0, same_row = 0, same_col = 0, other = 0, none = 0;
  for (size_t i = 0; i < n; i++)
    {
      const float gp = got_pixel[i], gc = got_channel[i];
      if (gp == want_pixel[i] && gc == want_channel[i])
        continue;
      bad++;
      if (gp != gp || gc != gc)
        {
          unwritten++;
          continue;
        }
      /* where these two values belong: the first position expecting both (the search is bounded by the
       * number of mismatches examined) */
      long long holds = -1;
      if (bad <= 64)
        for (size_t j = 0; j < n && holds < 0; j++)
          if (want_pixel[j] == gp && want_channel[j] == gc && (gp != 0.0f || gc != 0.0f))
            holds = (long long) j;
      const int m = (int) (i / P), p = (int) (i % P);
      if (bad <= 64)
        {
          if (holds < 0)
            none++;
          else if (holds / P == m)
            same_row++;
          else if (holds % P == p)
            same_col++;
          else
            other++;
        }
      if (bad <= 8)
        {
          char where[96];
          if (holds >= 0)
            g_snprintf (where, sizeof where, "holds [%lld][%lld] (row %lld col %lld of its 128 x 128 tile)", holds / P,
                        holds % P, holds / P % 128, holds % P % 128);
          else if (gp == 0.0f && gc == 0.0f)
            g_snprintf (where, sizeof where, "holds zero (a border tap's, or nothing summed)");
          else
            g_snprintf (where, sizeof where, "holds nothing expected (garbled K or a sum)");
          char *line = g_strdup_printf ("     layout: y[%d][%d] (row %d col %d of its tile) pixel code %g channel"
                                        " code %g, expected %g %g: %s", m, p, m % 128, p % 128, gp, gc,
                                        want_pixel[i], want_channel[i], where);
          report_line (env, line);
          g_free (line);
        }
    }
  char *line = g_strdup_printf ("     layout: %zu of %zu outputs wrong: %zu unwritten (NaN); of the first 64 others,"
                                " %zu hold their row's value from another pixel, %zu their pixel's value from another"
                                " row, %zu another row and pixel, %zu nothing expected", bad, n, unwritten, same_row,
                                same_col, other, none);
  report_line (env, line);
  g_free (line);
}

static void
check_conv_layout (GpuEnv *env, const LayoutCase *lc)
{
  char label[160];
  g_snprintf (label, sizeof label, "%s %d->%d k3 @%dx%d", lc->name, lc->Cin, lc->Cout, lc->H, lc->W);
  if (!check_selected (env, label))
    return;
  DdpmBackend *g = env->gpu;
  const int P = lc->H * lc->W, K = lc->Cin * 9;
  const size_t n_in = (size_t) lc->Cin * P, n_out = (size_t) lc->Cout * P;
  float *w = g_new0 (float, (size_t) lc->Cout * K), *bias = g_new0 (float, lc->Cout);
  for (int m = 0; m < lc->Cout; m++)        /* [Cout][Cin][3][3] */
    w[(size_t) m * K + layout_sel (m, lc->Cin) * 9 + layout_tap (m)] = layout_sign (m);
  float *x_pixel = g_new (float, n_in), *x_channel = g_new (float, n_in);
  for (int c = 0; c < lc->Cin; c++)
    for (int p = 0; p < P; p++)
      {
        x_pixel[(size_t) c * P + p] = (float) (p + 1);
        x_channel[(size_t) c * P + p] = (float) (c + 1);
      }
  float *want[2] = { g_new (float, n_out), g_new (float, n_out) };
  float *got[2] = { g_new (float, n_out), g_new (float, n_out) };
  layout_expected (lc, want[0], want[1]);
  const int64_t shape[4] = { lc->Cout, lc->Cin, 3, 3 }, bshape[1] = { lc->Cout };
  GError *error = NULL;
  DdpmLinearW lw = { NULL, NULL, lc->Cout, lc->Cin, 3 };
  lw.weight = g->ops->upload_param (g, w, DDPM_PARAM_CONV, 4, shape, &error);
  if (lw.weight != NULL)
    lw.bias = g->ops->upload_param (g, bias, DDPM_PARAM_VECTOR, 1, bshape, &error);
  const int pad[4] = { 1, 1, 1, 1 };
  Buf in = { 0 }, out = { 0 };
  gboolean ok = lw.weight != NULL && lw.bias != NULL;
  if (!ok)
    report_plain (env, FALSE, "conv_layout", label, error != NULL ? error->message : "upload failed");
  g_clear_error (&error);
  ok = ok && buf_new (env, &in, g, n_in, TRUE, label) && buf_new (env, &out, g, n_out, TRUE, label);
  const size_t scratch = ok ? g->ops->conv2d_scratch (g, 1, lc->Cin, lc->H, lc->W, lc->Cout, 3, 1, pad) : 0;
  if (ok && !g->ops->reserve_scratch (g, scratch, &error))
    {
      report_plain (env, FALSE, "conv_layout", label, error->message);
      g_clear_error (&error);
      ok = FALSE;
    }
  size_t damage = 0;
  for (int probe = 0; ok && probe < 2; probe++)
    {
      buf_upload (&in, probe == 0 ? x_pixel : x_channel);
      buf_poison (&out);
      g->ops->conv2d (g, &lw, in.ptr, out.ptr, 1, lc->H, lc->W, 1, pad, NULL);
      g->ops->synchronize (g);
      if (g->ops->check_error != NULL && !g->ops->check_error (g, &error))
        {
          report_plain (env, FALSE, "conv_layout", label, error->message);
          g_clear_error (&error);
          ok = FALSE;
          break;
        }
      buf_download (&out, got[probe]);
      damage += buf_guard_damage (&out);
    }
  if (ok)
    {
      /* one check for both probes: [pixel codes | channel codes] */
      float *got_both = g_new (float, 2 * n_out), *want_both = g_new (float, 2 * n_out);
      memcpy (got_both, got[0], n_out * sizeof (float));
      memcpy (got_both + n_out, got[1], n_out * sizeof (float));
      memcpy (want_both, want[0], n_out * sizeof (float));
      memcpy (want_both + n_out, want[1], n_out * sizeof (float));
      if (!report_check (env, "conv_layout", label, got_both, want_both, 2 * n_out, 0.0, damage, -1.0))
        layout_diagnose (env, lc, got[0], got[1], want[0], want[1]);
      g_free (got_both);
      g_free (want_both);
    }
  buf_free (&in);
  buf_free (&out);
  if (lw.weight != NULL)
    g->ops->free (g, lw.weight);
  if (lw.bias != NULL)
    g->ops->free (g, lw.bias);
  for (int i = 0; i < 2; i++)
    {
      g_free (want[i]);
      g_free (got[i]);
    }
  g_free (w);
  g_free (bias);
  g_free (x_pixel);
  g_free (x_channel);
}

void
run_conv_layout_checks (GpuEnv *env)
{
  for (size_t i = 0; i < G_N_ELEMENTS (layout_cases); i++)
    check_conv_layout (env, &layout_cases[i]);
}
