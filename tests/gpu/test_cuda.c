/* test_cuda.c: the GPU test program. Every CUDA op against the CPU backend (ops_checks.c), then whole
 * UNets through the public API against the CPU and diffusers' float64 references (model_checks.c).
 * Meson suite 'gpu' (exits 77, "skipped", where no CUDA device is usable); suite 'gpu-emu' runs it with
 * --quick against libddpm-cuda-emu.so, the kernels executed by the CPU emulator (kernels/emu/).
 *
 * Output: one line per check, "PASS|FAIL op[variant] precision shape rel-err (bound) ...", and with
 * timing on, the GPU time of each op; a summary last.
 *
 * Bounds of the op checks (relative to max |reference|; inputs and weights rounded to the activation type
 * before both backends see them, so only the GPU op's own arithmetic is measured):
 *   fp32 1e-4: the exact mode (cuBLAS pedantic, no TF32); summation order alone gives ~1e-6.
 *   fp16 4e-3 = 8 u (u = 2^-11 = 4.9e-4): the output is rounded once (<= u of the max) and ops with
 *              rounded intermediates (attention's Q, K, V and P; the implicit GEMM's nothing) add a few u.
 *   bf16 3e-2 = 8 u (u = 2^-8 = 3.9e-3): the same reasoning.
 * Exact ops (casts, concatenation, upsampling) must match bit for bit; randn and scheduler_step to 1e-6
 * (the same float operations; Box-Muller's double log/cos may differ by an ulp). Whole-model bounds: see
 * model_checks.c.
 *
 * Variants (on unless --no-variants): the conv checks again with DDPM_CUDA_CONV=gemm (im2col + cuBLAS
 * instead of the implicit-GEMM kernels) and =implicit (the NCHW kernel, also where the default takes the
 * channels-last one), with each kernel's other tile and a forced K split (DDPM_CUDA_CONV_TILE=large,
 * DDPM_CUDA_CONV_SPLITK=3), =mma (the 128 x 128 mma.sync tile where it fills a wave; and with
 * DDPM_CUDA_CONV_TILE=mma wherever the channels-last kernel runs), =wgmma and DDPM_CUDA_CONV_TILE=wgmma (the same
 * for the 128 x 128 wgmma tile, sm_90a; and with DDPM_CUDA_WGMMA_OVERLAP=1, its 4-stage pipeline; with
 * DDPM_CUDA_CONV_SPLITK=3, its K split summed by a second launch, and held back with DDPM_CUDA_DEFER_REDUCE=1;
 * with DDPM_CUDA_WGMMA_BN=256, the 128 x 256 tile, also split), with
 * DDPM_CUDA_CONV_REDUCE=cluster and
 * =last-block (split-K sums inside each tile's thread-block cluster, or by the last block of each tile, not by
 * a second launch), and with DDPM_CUDA_CONV_SPLITK=16 (clusters of more than 8 blocks, and the second launch
 * summing 16), with DDPM_CUDA_DIRECT_WARPS=8 and =16 (the direct kernel's blocks smaller than the default's
 * 32 warps), with DDPM_CUDA_CONV_PREFETCH=0 (first weight slices copied after the wait on the previous
 * kernel); the
 * GroupNorm checks with DDPM_CUDA_GN=split and =fused, and
 * conv + attention with DDPM_CUDA_GEMM=fallback (the backend's own GEMM, used when cuBLAS cannot be loaded),
 * and (fp16, bf16) attention with DDPM_CUDA_PROJ=cublas (the projections by cuBLAS, not as 1x1 convolutions),
 * DDPM_CUDA_CONV_SPLITK=3 (the projections' K split, partials in the attention's scratch; and with
 * DDPM_CUDA_PROJ_SPLIT=0 unsplit),
 * DDPM_CUDA_ATTN=cublas (the cuBLAS core instead of a fused kernel), =wmma
 * (the WMMA core, 8 and with DDPM_CUDA_FA_WARPS=4 4 warps per block, instead of flash_attention.cu's mma core),
 * DDPM_CUDA_SMEM_LIMIT=101376 (the mma core planned for an sm_86 / sm_89 block's 99 KiB) and
 * DDPM_CUDA_ATTN_OUT=0 (the mma core without the out projection), two forced block shapes of the mma core
 * (DDPM_CUDA_FA_DS, DDPM_CUDA_FA_QT; and DDPM_CUDA_FA_DS=256 with =mma), =split (flash_split.cu's core wherever it
 * applies; with DDPM_CUDA_FA_KW=16 / 64 keys per warp, within 99 KiB, without the out projection) and =mma
 * (flash_attention.cu's core where the default would take the split one), =cluster (flash_cluster.cu's block
 * wherever it applies; with DDPM_CUDA_FA_CLUSTER=2 / 8 blocks per cluster, within 99 KiB) and
 * DDPM_CUDA_FA_CLUSTER=0 (the split core where the default takes the cluster one).
 *
 * Usage: test_cuda [--quick] [--only TEXT] [--precision fp32|fp16|bf16] [--no-models] [--no-ops]
 *                  [--no-variants] [--timing] [--log FILE]
 * Exit: 0 all passed, 1 a check failed, 77 no usable CUDA device. */
#include "gpu_check.h"

#include <stdlib.h>
#include <string.h>

static DdpmPrecision
parse_precision (const char *s)
{
  if (s == NULL)
    return DDPM_PRECISION_DEFAULT;
  if (strcmp (s, "fp32") == 0)
    return DDPM_PRECISION_FP32;
  if (strcmp (s, "fp16") == 0)
    return DDPM_PRECISION_FP16;
  if (strcmp (s, "bf16") == 0)
    return DDPM_PRECISION_BF16;
  return DDPM_PRECISION_DEFAULT;
}

/* Runs the op checks `which` on a fresh GPU backend made with the space-separated NAME=VALUE settings (NULL:
 * plain); the variant label is each setting without DDPM_CUDA_, its name in lower case ("conv=nhwc"). */
static void
run_ops_with (GpuEnv *env, DdpmPrecision p, const char *settings, unsigned which)
{
  char **set = settings != NULL ? g_strsplit (settings, " ", -1) : NULL;
  GString *label = g_string_new (NULL);
  for (char **s = set; s != NULL && *s != NULL; s++)
    {
      char **kv = g_strsplit (*s, "=", 2);
      g_setenv (kv[0], kv[1], TRUE);
      const char *short_name = strstr (kv[0], "CUDA_") ? strstr (kv[0], "CUDA_") + 5 : kv[0];
      char *lower = g_ascii_strdown (short_name, -1);
      g_string_append_printf (label, "%s%s=%s", label->len ? " " : "", lower, kv[1]);
      g_free (lower);
      g_strfreev (kv);
    }
  GError *error = NULL;
  env->gpu = ddpm_backend_cuda_new (p, &error);
  for (char **s = set; s != NULL && *s != NULL; s++)
    {
      char **kv = g_strsplit (*s, "=", 2);
      g_unsetenv (kv[0]);
      g_strfreev (kv);
    }
  g_strfreev (set);
  env->precision = p;
  char *variant = label->len ? g_string_free (label, FALSE) : (g_string_free (label, TRUE), NULL);
  env->variant = variant;
  if (env->gpu == NULL)
    {
      report_plain (env, FALSE, "create", "ddpm_backend_cuda_new", error->message);
      g_error_free (error);
    }
  else
    {
      printf ("---- %s%s%s: %s\n", precision_name (p), variant ? " " : "", variant ? variant : "",
              env->gpu->description);
      run_op_checks (env, which);
      env->gpu->ops->destroy (env->gpu);
      env->gpu = NULL;
    }
  env->variant = NULL;
  g_free (variant);
}

/* run_ops_with one setting env_name=env_value (env_name NULL: plain). */
static void
run_ops_on (GpuEnv *env, DdpmPrecision p, const char *env_name, const char *env_value, unsigned which)
{
  char *setting = env_name != NULL ? g_strdup_printf ("%s=%s", env_name, env_value) : NULL;
  run_ops_with (env, p, setting, which);
  g_free (setting);
}

int
main (int argc, char **argv)
{
  gboolean quick = FALSE, no_models = FALSE, no_ops = FALSE, no_variants = FALSE, timing = FALSE;
  char *only = NULL, *precision = NULL, *log_path = NULL;
  GOptionEntry entries[] = {
    { "quick", 0, 0, G_OPTION_ARG_NONE, &quick, "small shapes (for the CPU emulator)", NULL },
    { "only", 0, 0, G_OPTION_ARG_STRING, &only, "run checks whose label contains TEXT", "TEXT" },
    { "precision", 0, 0, G_OPTION_ARG_STRING, &precision, "fp32, fp16 or bf16 (default: all three)", "P" },
    { "no-models", 0, 0, G_OPTION_ARG_NONE, &no_models, "skip the whole-model checks", NULL },
    { "no-ops", 0, 0, G_OPTION_ARG_NONE, &no_ops, "skip the op checks", NULL },
    { "no-variants", 0, 0, G_OPTION_ARG_NONE, &no_variants, "skip the backend variants", NULL },
    { "timing", 0, 0, G_OPTION_ARG_NONE, &timing, "time each GPU op (fp32 and fp16)", NULL },
    { "log", 0, 0, G_OPTION_ARG_FILENAME, &log_path, "also write the report lines to FILE", "FILE" },
    { NULL },
  };
  GOptionContext *oc = g_option_context_new ("- CUDA backend against the CPU backend");
  g_option_context_add_main_entries (oc, entries, NULL);
  GError *error = NULL;
  if (!g_option_context_parse (oc, &argc, &argv, &error))
    {
      fprintf (stderr, "%s\n", error->message);
      return 2;
    }
  g_option_context_free (oc);

  /* Is there a GPU at all? Without one this test is skipped, not failed. */
  DdpmBackend *probe = ddpm_backend_cuda_new (DDPM_PRECISION_FP32, &error);
  if (probe == NULL)
    {
      printf ("SKIP: no CUDA backend: %s\n", error->message);
      g_error_free (error);
      return 77;
    }
  printf ("CUDA backend: %s\n", probe->description);
  probe->ops->destroy (probe);

  GpuEnv env = { 0 };
  env.quick = quick;
  env.only = only;
  if (log_path != NULL)
    env.log = fopen (log_path, "w");
  env.cpu = ddpm_backend_cpu_new (&error);
  if (env.cpu == NULL)
    {
      fprintf (stderr, "CPU backend: %s\n", error->message);
      return 1;
    }
  printf ("CPU reference: %s\n", env.cpu->description);

  DdpmPrecision one = parse_precision (precision);
  const DdpmPrecision all[3] = { DDPM_PRECISION_FP32, DDPM_PRECISION_FP16, DDPM_PRECISION_BF16 };
  gint64 t0 = g_get_monotonic_time ();
  for (int i = 0; i < 3; i++)
    {
      DdpmPrecision p = all[i];
      if (one != DDPM_PRECISION_DEFAULT && p != one)
        continue;
      if (!no_ops)
        {
          env.timing = timing && p != DDPM_PRECISION_BF16;
          run_ops_on (&env, p, NULL, NULL, OPS_ALL);
          env.timing = FALSE;
        }
      /* whole models before the variants: a run cut short by the device's time still has them */
      if (!no_models)
        {
          env.precision = p;
          printf ("---- %s whole models\n", precision_name (p));
          run_model_checks (&env);
        }
      if (!no_ops)
        {
          if (!no_variants)
            {
              if (p != DDPM_PRECISION_FP32)
                {
                  run_ops_on (&env, p, "DDPM_CUDA_CONV", "gemm", OPS_CONV);
                  /* the NCHW implicit GEMM everywhere (the default takes the channels-last kernel where the
                   * shape allows it: Cin % 32 == 0, k 1 or 3), timed like the default so the two compare
                   * shape by shape */
                  env.timing = timing && p == DDPM_PRECISION_FP16;
                  run_ops_on (&env, p, "DDPM_CUDA_CONV", "implicit", OPS_CONV);
                  env.timing = FALSE;
                  /* ... with a forced K split and 128-channel tiles, whatever the shapes would pick */
                  run_ops_with (&env, p, "DDPM_CUDA_CONV=nhwc DDPM_CUDA_CONV_SPLITK=3 DDPM_CUDA_CONV_TILE=large",
                                OPS_CONV);
                  /* the implicit GEMM's other tile and a forced K split, whatever the shapes would pick */
                  run_ops_with (&env, p, "DDPM_CUDA_CONV=implicit DDPM_CUDA_CONV_TILE=large", OPS_CONV);
                  run_ops_with (&env, p, "DDPM_CUDA_CONV=implicit DDPM_CUDA_CONV_SPLITK=3", OPS_CONV);
                  /* the 128 x 128 mma.sync tile wherever it fills a wave (the candidate default) */
                  env.timing = timing && p == DDPM_PRECISION_FP16;
                  run_ops_on (&env, p, "DDPM_CUDA_CONV", "mma", OPS_CONV);
                  env.timing = FALSE;
                  /* ... and wherever the channels-last kernel runs, small and partial tiles included */
                  run_ops_on (&env, p, "DDPM_CUDA_CONV_TILE", "mma", OPS_CONV);
                  /* the 128 x 128 wgmma tile (sm_90a; elsewhere the backend says so and the default runs) where
                   * it fills a wave, timed, and wherever it fits */
                  env.timing = timing && p == DDPM_PRECISION_FP16;
                  run_ops_on (&env, p, "DDPM_CUDA_CONV", "wgmma", OPS_CONV);
                  env.timing = FALSE;
                  run_ops_on (&env, p, "DDPM_CUDA_CONV_TILE", "wgmma", OPS_CONV);
                  /* ... with its 4-stage pipeline, one wgmma group in flight across the barrier */
                  run_ops_with (&env, p, "DDPM_CUDA_CONV_TILE=wgmma DDPM_CUDA_WGMMA_OVERLAP=1", OPS_CONV);
                  /* ... with K split everywhere, summed by a second launch, or held back for the GroupNorm */
                  run_ops_with (&env, p, "DDPM_CUDA_CONV_TILE=wgmma DDPM_CUDA_CONV_SPLITK=3", OPS_CONV);
                  run_ops_with (&env, p, "DDPM_CUDA_CONV_TILE=wgmma DDPM_CUDA_CONV_SPLITK=3 DDPM_CUDA_DEFER_REDUCE=1",
                                OPS_CONV);
                  /* the 128 x 256 wgmma tile (m64n256k16) where it fills a wave (timed; unsplit where the
                   * 128 x 128 one would be), and wherever it fits with K split (run.sh's stage 1w and the
                   * models-opt-in suite take it wherever it fits, split by the rule) */
                  env.timing = timing && p == DDPM_PRECISION_FP16;
                  run_ops_with (&env, p, "DDPM_CUDA_CONV=wgmma DDPM_CUDA_WGMMA_BN=256", OPS_CONV);
                  env.timing = FALSE;
                  run_ops_with (&env, p, "DDPM_CUDA_CONV_TILE=wgmma DDPM_CUDA_WGMMA_BN=256 DDPM_CUDA_CONV_SPLITK=3",
                                OPS_CONV);
                  /* split-K sums inside each tile's thread-block cluster (sm_90) and by the last block of
                   * each tile, not by a second launch */
                  run_ops_on (&env, p, "DDPM_CUDA_CONV_REDUCE", "cluster", OPS_CONV);
                  run_ops_on (&env, p, "DDPM_CUDA_CONV_REDUCE", "last-block", OPS_CONV);
                  /* 16 splits: clusters of more than 8 blocks (non-portable sizes: up to 16 on an H100) in both
                   * kernels, and the second launch summing 16 */
                  run_ops_with (&env, p, "DDPM_CUDA_CONV_REDUCE=cluster DDPM_CUDA_CONV_SPLITK=16", OPS_CONV);
                  run_ops_with (&env, p,
                                "DDPM_CUDA_CONV_REDUCE=cluster DDPM_CUDA_CONV=implicit DDPM_CUDA_CONV_SPLITK=16",
                                OPS_CONV);
                  run_ops_on (&env, p, "DDPM_CUDA_CONV_SPLITK", "16", OPS_CONV);
                  /* the direct kernel (conv_in / conv_out shapes) with 8 and 16 warps per block, where the
                   * default takes up to 32 */
                  run_ops_on (&env, p, "DDPM_CUDA_DIRECT_WARPS", "8", OPS_CONV);
                  run_ops_on (&env, p, "DDPM_CUDA_DIRECT_WARPS", "16", OPS_CONV);
                  /* the cp.async kernels' first weight slices copied after the wait on the previous kernel,
                   * where the default copies them before it */
                  run_ops_on (&env, p, "DDPM_CUDA_CONV_PREFETCH", "0", OPS_CONV);
                }
              if (p != DDPM_PRECISION_FP32)
                {
                  /* the cuBLAS score / softmax / PV path where a fused attention core would run */
                  run_ops_on (&env, p, "DDPM_CUDA_ATTN", "cublas", OPS_ATTENTION);
                  /* the projections by cuBLAS, where the default takes them as 1x1 convolutions */
                  run_ops_on (&env, p, "DDPM_CUDA_PROJ", "cublas", OPS_ATTENTION);
                  /* ... as convolutions with K split in 3 (partials in the attention's scratch), and unsplit */
                  run_ops_on (&env, p, "DDPM_CUDA_CONV_SPLITK", "3", OPS_ATTENTION);
                  run_ops_with (&env, p, "DDPM_CUDA_CONV_SPLITK=3 DDPM_CUDA_PROJ_SPLIT=0", OPS_ATTENTION);
                  /* the WMMA core (bias passes before it) with 8 and 4 warps per block, where the default takes
                   * flash_attention.cu's mma core; timed like the default so the two compare shape by shape */
                  env.timing = timing && p == DDPM_PRECISION_FP16;
                  run_ops_on (&env, p, "DDPM_CUDA_ATTN", "wmma", OPS_ATTENTION);
                  env.timing = FALSE;
                  run_ops_with (&env, p, "DDPM_CUDA_ATTN=wmma DDPM_CUDA_FA_WARPS=4", OPS_ATTENTION);
                  /* flash_split.cu's core (keys split across the warps of a query tile) wherever it applies,
                   * timed, with its three key widths, within 99 KiB, and without the out projection; and
                   * flash_attention.cu's core alone where the default would take the split one (few blocks) */
                  env.timing = timing && p == DDPM_PRECISION_FP16;
                  run_ops_on (&env, p, "DDPM_CUDA_ATTN", "split", OPS_ATTENTION);
                  run_ops_on (&env, p, "DDPM_CUDA_ATTN", "mma", OPS_ATTENTION);
                  env.timing = FALSE;
                  run_ops_with (&env, p, "DDPM_CUDA_ATTN=split DDPM_CUDA_FA_KW=16", OPS_ATTENTION);
                  run_ops_with (&env, p, "DDPM_CUDA_ATTN=split DDPM_CUDA_FA_KW=64", OPS_ATTENTION);
                  run_ops_with (&env, p, "DDPM_CUDA_ATTN=split DDPM_CUDA_SMEM_LIMIT=101376", OPS_ATTENTION);
                  run_ops_with (&env, p, "DDPM_CUDA_ATTN=split DDPM_CUDA_ATTN_OUT=0", OPS_ATTENTION);
                  /* flash_cluster.cu's block (a query tile's keys split across a thread-block cluster) wherever
                   * it applies, timed, and the split core where the default takes the cluster one; with
                   * clusters of 2 (Wo after K and V in their space, at d = 256) and 8, and within 99 KiB */
                  env.timing = timing && p == DDPM_PRECISION_FP16;
                  run_ops_on (&env, p, "DDPM_CUDA_ATTN", "cluster", OPS_ATTENTION);
                  run_ops_on (&env, p, "DDPM_CUDA_FA_CLUSTER", "0", OPS_ATTENTION);
                  env.timing = FALSE;
                  run_ops_with (&env, p, "DDPM_CUDA_ATTN=cluster DDPM_CUDA_FA_CLUSTER=2", OPS_ATTENTION);
                  run_ops_with (&env, p, "DDPM_CUDA_ATTN=cluster DDPM_CUDA_FA_CLUSTER=8", OPS_ATTENTION);
                  run_ops_with (&env, p, "DDPM_CUDA_ATTN=cluster DDPM_CUDA_SMEM_LIMIT=101376", OPS_ATTENTION);
                  /* the mma core within an sm_86 / sm_89 block's 99 KiB of shared memory: fewer keys per chunk
                   * and query tiles per block (celebahq's d = 512: 16 keys) */
                  run_ops_on (&env, p, "DDPM_CUDA_SMEM_LIMIT", "101376", OPS_ATTENTION);
                  /* the mma core without the out projection (cuBLAS GEMM + bias / residual pass after it) */
                  run_ops_on (&env, p, "DDPM_CUDA_ATTN_OUT", "0", OPS_ATTENTION);
                  /* ... with other block shapes than its rule picks: 16 dims per warp (up to 8 warps of one
                   * query tile) and 2 query tiles per block wherever the tokens allow */
                  run_ops_with (&env, p, "DDPM_CUDA_FA_DS=16 DDPM_CUDA_FA_QT=1", OPS_ATTENTION);
                  run_ops_with (&env, p, "DDPM_CUDA_FA_DS=32 DDPM_CUDA_FA_QT=2", OPS_ATTENTION);
                  /* ... and one warp of 256 dims per query tile (d = 256: no repeated score work; d = 512: two
                   * warps, not four), wherever the tokens would give a 16-query block core */
                  run_ops_with (&env, p, "DDPM_CUDA_ATTN=mma DDPM_CUDA_FA_DS=256", OPS_ATTENTION);
                }
              run_ops_on (&env, p, "DDPM_CUDA_GN", "split", OPS_NORM);
              run_ops_on (&env, p, "DDPM_CUDA_GN", "fused", OPS_NORM);
              /* groups split over thread-block clusters (sm_90): by its rule (timed), and with 2, 4, 8 and 16
               * (non-portable) blocks per group wherever the shape allows, written channels last for a
               * convolution too */
              env.timing = timing && p == DDPM_PRECISION_FP16;
              run_ops_on (&env, p, "DDPM_CUDA_GN", "cluster", OPS_NORM | OPS_NORM_CONV);
              env.timing = FALSE;
              run_ops_with (&env, p, "DDPM_CUDA_GN=cluster DDPM_CUDA_GN_CLUSTER=2", OPS_NORM | OPS_NORM_CONV);
              run_ops_with (&env, p, "DDPM_CUDA_GN=cluster DDPM_CUDA_GN_CLUSTER=4", OPS_NORM | OPS_NORM_CONV);
              run_ops_with (&env, p, "DDPM_CUDA_GN=cluster DDPM_CUDA_GN_CLUSTER=8", OPS_NORM | OPS_NORM_CONV);
              run_ops_with (&env, p, "DDPM_CUDA_GN=cluster DDPM_CUDA_GN_CLUSTER=16", OPS_NORM | OPS_NORM_CONV);
              /* split-K sums held back for the GroupNorm that reads them (a resnet's conv1 and shortcut: the
               * "resnet sums" checks), with one block per group and with clusters */
              run_ops_on (&env, p, "DDPM_CUDA_DEFER_REDUCE", "1", OPS_NORM_CONV);
              run_ops_with (&env, p, "DDPM_CUDA_DEFER_REDUCE=1 DDPM_CUDA_GN=cluster DDPM_CUDA_GN_CLUSTER=4", OPS_NORM_CONV);
              if (p != DDPM_PRECISION_BF16)
                run_ops_on (&env, p, "DDPM_CUDA_GEMM", "fallback", OPS_CONV | OPS_ATTENTION);
            }
        }
    }
  printf ("==== %d checks, %d failed (%.1f s)\n", env.checks, env.failures,
          (g_get_monotonic_time () - t0) / 1e6);
  if (env.log != NULL)
    {
      fprintf (env.log, "==== %d checks, %d failed\n", env.checks, env.failures);
      fclose (env.log);
    }
  env.cpu->ops->destroy (env.cpu);
  g_free (only);
  g_free (precision);
  g_free (log_path);
  return env.failures == 0 ? 0 : 1;
}
