/* cuda_switches.cu: the backend's run-time switches and the variants the engine's tuner may time.
 *
 * Each switch is $DDPM_CUDA_<NAME> in the environment, or else NAME=value in the current variant (a list of
 * such settings, e.g. "GN=cluster DEFER_REDUCE=1"; variant 0, the empty list, is the defaults). The environment
 * wins: a switch the user set is never changed by tuning, and variants that set one are not offered. The
 * switches are read at creation and again at each cuda_set_variant (never inside a graph capture); the
 * one-time ones (DEVICE, SMEM_LIMIT, PDL, GEMM, PROFILE, TIME_TABLE) stay in cuda_backend.cu. */
#include "cuda_backend.cuh"

#include <string.h>

/* Candidates that no GPU run has timed yet as the default (kernels/NOTES.md), each where the defaults leave
 * them off. $DDPM_CUDA_VARIANTS="A=x B=y;C=z" replaces the list (tuning runs on a GPU). */
static const char *const builtin_variants[] = {
  "GN=cluster DEFER_REDUCE=1",
  "GN=cluster",
  "DEFER_REDUCE=1",
  "CONV=wgmma",
  "CONV=wgmma WGMMA_BN=256",
  "CONV=wgmma WGMMA_OVERLAP=1",
  "CONV=wgmma GN=cluster DEFER_REDUCE=1",
  "CONV=mma",
  "CONV_REDUCE=cluster",
  "FA_DS=256",                         /* one warp per query tile at d = 256 (thirteenth session, untimed) */
  "DIRECT_WARPS=8",                    /* H200, 8200496: 0.992 at celebahq-256 b1, 1.014 at cifar10-32 b1 */
  "CONV_SPLIT_BLOCKS_PER_SM=1",        /* half the K splits (H100, 108f44a: 0.925 at cifar10-32 b1 against clusters) */
  "CONV_PICK=timed",                   /* each convolution shape's plan timed (conv_pick.cu; twenty-first session) */
};

/* $DDPM_CUDA_<name> */
static const char *
env_switch (const char *name)
{
  char key[64];
  g_snprintf (key, sizeof key, "DDPM_CUDA_%s", name);
  return g_getenv (key);
}

/* token "NAME=value" when it sets name: its value, else NULL */
static const char *
token_value (const char *token, const char *name)
{
  const size_t n = strlen (name);
  return strncmp (token, name, n) == 0 && token[n] == '=' ? token + n + 1 : NULL;
}

const char *
cuda_switch (const CudaBackend *cb, const char *name)
{
  const char *v = env_switch (name);
  for (char **t = cb->variant_tokens; v == NULL && t != NULL && *t != NULL; t++)
    v = token_value (*t, name);
  return v;
}

/* The switch as a number (atoi), 0 when unset. */
static int
switch_int (const CudaBackend *cb, const char *name)
{
  const char *v = cuda_switch (cb, name);
  return v != NULL ? atoi (v) : 0;
}

/* The switch when it is a power of two in [lo, hi], else 0 (the planner's own rule). */
static int
switch_pow2 (const CudaBackend *cb, const char *name, int lo, int hi)
{
  const int v = switch_int (cb, name);
  return v >= lo && v <= hi && (v & (v - 1)) == 0 ? v : 0;
}

static gboolean
switch_is (const CudaBackend *cb, const char *name, const char *value)
{
  return g_strcmp0 (cuda_switch (cb, name), value) == 0;
}

void
cuda_switches_read (CudaBackend *cb)
{
  const char *conv = cuda_switch (cb, "CONV");
  cb->conv_algo = conv == NULL ? CONV_AUTO : strcmp (conv, "gemm") == 0 ? CONV_GEMM
                  : strcmp (conv, "implicit") == 0 ? CONV_IMPLICIT : strcmp (conv, "nhwc") == 0 ? CONV_NHWC
                  : strcmp (conv, "mma") == 0 ? CONV_MMA : strcmp (conv, "wgmma") == 0 ? CONV_WGMMA : CONV_AUTO;
  const char *tile = cuda_switch (cb, "CONV_TILE");
  cb->conv_tile = tile == NULL ? TILE_AUTO : strcmp (tile, "small") == 0 ? TILE_SMALL
                  : strcmp (tile, "large") == 0 ? TILE_LARGE : strcmp (tile, "mma") == 0 ? TILE_MMA
                  : strcmp (tile, "wgmma") == 0 ? TILE_WGMMA : TILE_AUTO;
  cb->conv_splitk = switch_int (cb, "CONV_SPLITK");
  cb->conv_pointwise = !switch_is (cb, "CONV_PW", "0");
  /* attention's projections as 1x1 convs up to 16 images at 16 x 16 tokens. H100, 2026-11-27, against cuBLAS
   * (one point each side of the line): at 256 pixels 0.7 % slower per forward (cifar10-32 b1), but the first
   * sampling call 85 ms faster (DDPM-1000 cold 1099 against 1184 ms; DDIM-50 on emoji-32 43 against 130 ms);
   * at 32768 (cifar10-32 b128) 3.5 % slower, where cuBLAS's first use is paid off within a few steps */
  cb->proj_conv_pixels = switch_is (cb, "PROJ", "cublas") ? 0 : switch_is (cb, "PROJ", "conv") ? G_MAXINT64 : 4096;
  /* the split-K rule's two numbers, for tuning runs on a GPU (conv2d.cu conv_plan) */
  const int bps = switch_int (cb, "CONV_SPLIT_BLOCKS_PER_SM"), mks = switch_int (cb, "CONV_SPLIT_MIN_SLICES");
  cb->conv_split_blocks_per_sm = bps > 0 ? bps : 2;
  cb->conv_split_min_slices = mks > 0 ? mks : 2;
  const char *gn = cuda_switch (cb, "GN");
  cb->gn_mode = gn == NULL ? GN_AUTO : strcmp (gn, "fused") == 0 ? GN_FUSED
                : strcmp (gn, "split") == 0 ? GN_SPLIT : strcmp (gn, "cluster") == 0 ? GN_CLUSTER : GN_AUTO;
  cb->gn_cluster = switch_pow2 (cb, "GN_CLUSTER", 2, 16);
  cb->gn_conv_fuse = !switch_is (cb, "GN_CONV", "0");
  const char *attn = cuda_switch (cb, "ATTN");
  cb->attn_mode = attn == NULL ? ATTN_AUTO : strcmp (attn, "cublas") == 0 ? ATTN_CUBLAS
                  : strcmp (attn, "wmma") == 0 ? ATTN_WMMA : strcmp (attn, "mma") == 0 ? ATTN_MMA
                  : strcmp (attn, "split") == 0 ? ATTN_SPLIT : strcmp (attn, "cluster") == 0 ? ATTN_CLUSTER
                  : ATTN_AUTO;
  cb->fa_cluster = switch_is (cb, "FA_CLUSTER", "0") ? -1 : switch_pow2 (cb, "FA_CLUSTER", 2, 8);
  cb->fa_warps = switch_is (cb, "FA_WARPS", "4") ? 4 : 8;
  cb->attn_out_fuse = !switch_is (cb, "ATTN_OUT", "0");
  cb->fa_ds = switch_pow2 (cb, "FA_DS", 16, 256);   /* 256: flash_attention.cu's kernel only */
  cb->fa_qt = switch_pow2 (cb, "FA_QT", 1, 4);
  cb->fa_kw = switch_pow2 (cb, "FA_KW", 16, 64);
  cb->direct_warps = switch_pow2 (cb, "DIRECT_WARPS", 8, 32);
  cb->proj_split = !switch_is (cb, "PROJ_SPLIT", "0");
  /* off by default: on the H200 (2026-11-27) the one forward timed with it, cifar10-32 b1 0.917 ms, was no
   * faster than the run before without it (0.88); one GroupNorm block per group reads all its partials, so
   * the sum runs on 32 SMs where the second launch spreads it over all of them (kernels/NOTES.md) */
  cb->defer_reduce = switch_is (cb, "DEFER_REDUCE", "1");
  cb->conv_prefetch = !switch_is (cb, "CONV_PREFETCH", "0");
  /* each convolution shape's plan timed at planning (conv_pick.cu); the picks made under other switches go */
  cb->conv_pick = switch_is (cb, "CONV_PICK", "timed") ? PICK_TIMED
                  : switch_is (cb, "CONV_PICK", "slowest") ? PICK_SLOWEST : PICK_OFF;
  cb->conv_pick_log = switch_is (cb, "CONV_PICK_LOG", "1");
  cuda_conv_picks_clear (cb, FALSE);
  /* picks timed before, written out by cuda_variant_frozen (the tuner's cache): these shapes are not timed again */
  const char *picks = cuda_switch (cb, "CONV_PICKS");
  cb->conv_picks_malformed = picks != NULL && !cuda_conv_picks_parse (cb, picks);
  cb->upsample_conv_fuse = !switch_is (cb, "UPSAMPLE_CONV", "0");

  /* GroupNorm over thread-block clusters only where asked for, until a GPU run times it */
  cb->gn_cluster_max = cb->gn_mode == GN_CLUSTER ? cuda_gn_cluster_prepare (cb) : 0;
  /* the wgmma convolution only where asked for, until a GPU run times it (it probes and sets attributes) */
  cb->wgmma_overlap = switch_is (cb, "WGMMA_OVERLAP", "1");
  cb->wgmma_split = !switch_is (cb, "WGMMA_SPLIT", "0");
  cb->wgmma_bn = switch_is (cb, "WGMMA_BN", "256") ? 256 : 128;
  const bool wgmma_asked = cb->conv_algo == CONV_WGMMA || cb->conv_tile == TILE_WGMMA;
  /* a timed pick has the wgmma tile among its candidates where the device runs it, given picks may name it */
  const bool picking
      = cb->conv_pick != PICK_OFF || (cb->conv_picks != NULL && g_hash_table_size (cb->conv_picks) > 0);
  cb->conv_wgmma_ready = (wgmma_asked || picking) && cuda_conv_wgmma_prepare (cb);
  /* split-K sums: a second launch (H100, fcae280: cifar10-32 b1 1.07 ms against 1.60 with the last block
   * summing, celebahq-256 b1 8.13 against 8.70, cifar10-32 b128 the same; H100, 2026-11-27: 1.046 against
   * 1.141 with each tile's splits summing inside their thread-block cluster, celebahq-256 b1 8.47 / 8.55: the
   * cluster barriers cost more than the launch they save). CONV_REDUCE=cluster (where the probe launches one:
   * sm_90) or =last-block picks one of the others, CONV_CLUSTER_MAX=2..16 caps the cluster (and so the K
   * splits). fp32 convolutions never split (im2col + cuBLAS): no probe. */
  const char *reduce = cuda_switch (cb, "CONV_REDUCE");
  cb->conv_cluster_max = cb->act_type != CT_F32 && g_strcmp0 (reduce, "cluster") == 0 ? cuda_conv_cluster_probe (cb)
                         : 0;
  const int cluster_cap = switch_pow2 (cb, "CONV_CLUSTER_MAX", 2, 16);
  if (cluster_cap > 0 && cluster_cap < cb->conv_cluster_max)
    cb->conv_cluster_max = cluster_cap;
  cb->conv_reduce = g_strcmp0 (reduce, "last-block") == 0 ? REDUCE_LAST_BLOCK
                    : cb->conv_cluster_max > 0 ? REDUCE_CLUSTER : REDUCE_KERNEL;

  char clusters[32] = "", gn_clusters[40] = "";
  if (cb->conv_reduce == REDUCE_CLUSTER)
    g_snprintf (clusters, sizeof clusters, ", clusters of %d", cb->conv_cluster_max);
  if (cb->gn_cluster_max > 0)
    g_snprintf (gn_clusters, sizeof gn_clusters, ", GroupNorm clusters of up to %d", cb->gn_cluster_max);
  g_snprintf (cb->base.description, sizeof cb->base.description, "cuda: %s (sm_%d%d, %s, %s%s%s%s%s%s)",
              cb->device_name, cb->cc_major, cb->cc_minor,
              cb->act_type == CT_F32 ? "fp32" : cb->act_type == CT_BF16 ? "bf16" : "fp16", cb->blas_note,
              cb->pdl ? ", PDL" : "", clusters,
              !(cb->conv_wgmma_ready && wgmma_asked) ? "" /* picks' candidate only: not said */
              : cb->wgmma_bn == 256 ? ", wgmma convs 128 x 256" : ", wgmma convs",
              gn_clusters, cb->conv_pick == PICK_OFF ? "" : ", conv plans timed per shape");
}

/* Why variant tokens cannot run as asked here (the probes said no), or NULL when they can. */
const char *
cuda_switches_unmet (const CudaBackend *cb)
{
  if (cb->gn_mode == GN_CLUSTER && cb->gn_cluster_max == 0)
    return "no GroupNorm clusters here (needs a cc 9.0+ device)";
  if ((cb->conv_algo == CONV_WGMMA || cb->conv_tile == TILE_WGMMA) && !cb->conv_wgmma_ready)
    return "no wgmma convolution here (needs fp16/bf16, a cc 9.0 device and sm_90a code)";
  if (switch_is (cb, "CONV_REDUCE", "cluster") && cb->conv_reduce != REDUCE_CLUSTER)
    return "no convolution clusters here (needs fp16/bf16 and a cc 9.0+ device)";
  if (cb->conv_picks_malformed)
    return "CONV_PICKS has an entry that is not B.Cin.H.W.Cout.k.stride.top.left.Ho.Wo:ALGO.TILE.SPLITK";
  return NULL;
}

gboolean
cuda_settings_well_formed (const char *settings)
{
  g_auto (GStrv) tokens = g_strsplit_set (settings, " \t", -1);
  for (char **t = tokens; *t != NULL; t++)
    {
      const size_t n = strspn (*t, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_");
      if (**t != '\0' && (n == 0 || (*t)[n] != '=' || (*t)[n + 1] == '\0'))
        return FALSE;
    }
  return TRUE;
}

void
cuda_variants_init (CudaBackend *cb)
{
  const char *list = g_getenv ("DDPM_CUDA_VARIANTS");
  g_auto (GStrv) given = list != NULL ? g_strsplit (list, ";", -1) : NULL;
  GPtrArray *out = g_ptr_array_new ();
  g_ptr_array_add (out, g_strdup (""));                      /* 0: the defaults */
  const guint n = given != NULL ? g_strv_length (given) : G_N_ELEMENTS (builtin_variants);
  for (guint i = 0; i < n; i++)
    {
      g_autofree char *v = g_strstrip (g_strdup (given != NULL ? given[i] : builtin_variants[i]));
      g_auto (GStrv) tokens = g_strsplit_set (v, " \t", -1);
      gboolean keep = *v != '\0' && cuda_settings_well_formed (v);
      for (char **t = tokens; keep && *t != NULL; t++)
        if (**t != '\0')
          {
            g_autofree char *name = g_strndup (*t, strchr (*t, '=') - *t);
            keep = env_switch (name) == NULL;                  /* the environment fixes it */
          }
      if (keep)
        g_ptr_array_add (out, g_steal_pointer (&v));
    }
  g_ptr_array_add (out, NULL);
  cb->variants = (char **) g_ptr_array_free (out, FALSE);
}
