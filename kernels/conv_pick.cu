/* conv_pick.cu: each convolution shape's plan chosen by timing its candidates on this GPU
 * ($DDPM_CUDA_CONV_PICK=timed; off by default, offered to the engine's tuner as a variant).
 *
 * Why: conv2d.cu's rules (tile rows by how many blocks fill the GPU, K splits up to 2 blocks per SM, the
 * mma.sync / wgmma tiles only where asked for) were set on one H200 and on a few shapes; cuDNN's benchmark mode
 * times its algorithms per shape instead. Here, when planning meets a shape not seen yet, each distinct plan
 * the switches can make for it (64- and 128-row tiles with the rule's K split, none, half and twice as many;
 * the 128 x 128 mma.sync tile; the wgmma tiles, 128 x 128 and 128 x 256, split and unsplit where the device has
 * them; for 1x1 convolutions the channels-last kernel beside the pointwise one) runs on scratch buffers of the
 * shape's sizes (x and the weights pseudo-random): one warm-up, then the fastest of 2 rounds of 5 back-to-back
 * runs behind a spin kernel, so that events time the GPU and not the launches. Each candidate's output is
 * compared with the backend's own plan's; one that differs by more than the precision's bound computes
 * something else on this GPU (a path no GPU had run before, say) and is never picked, and the log says so. The
 * pick is the fastest of the rest, where it beats the backend's own plan by >= 3 % (else that plan). The engine's
 * tuner still compares the whole forward with the defaults' before keeping this variant.
 *
 * Picks live until the switches are read again (a variant, the backend's end). Timing a shape costs its
 * candidates' ~11 runs each, once per backend, at planning: not inside the step loop. Splits change the
 * order of the float sums, so picks that differ between runs would give images that differ within the
 * precision bound; so the tuner caches the picks themselves: cuda_variant_frozen writes them out as
 * CONV_PICKS=KEY:ALGO.TILE.SPLITK,... (KEY = B.Cin.H.W.Cout.k.stride.top.left.Ho.Wo; the enums' values), and a
 * variant (or $DDPM_CUDA_CONV_PICKS) that gives them fills the table, so those shapes are not timed again and
 * run the same plans, bit for bit. */
#include "conv2d.cuh"

#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PICK_MAX_CANDIDATES 24      /* a 1x1 shape on Hopper: 8 pointwise + 8 channels last + mma + 4 wgmma */
#ifndef DDPM_CUDA_EMU
#define PICK_ROUNDS 2
#define PICK_REPS 5
#else                                   /* the emulator's times are CPU times: there, each candidate only runs */
#define PICK_ROUNDS 1
#define PICK_REPS 1
#endif
#define PICK_SPIN_NS 300000LL           /* host time to queue one round's ~15 launches, with room */
#define PICK_MARGIN 0.97f               /* another plan must take <= 97 % of the backend's own plan's time */

struct PickCandidate {
  ConvPick pick;
  ConvPlanInfo info;
  float ms;                             /* per run, fastest round; FLT_MAX when it failed */
  float diff;                           /* max |y - the backend's own plan's y| / max (1, max |that y|); FLT_MAX:
                                         * not measured (a failed run); an output left unwritten counts as NaN */
};

/* Where a candidate's output differs from the backend's own plan's by more than this (relative to max (1, max
 * |y|)), it computes something else and is never picked: the tuner's bounds on eps (engine/tuning.c). Measured
 * on the emulator, every candidate of the celebahq-like and cifar-like fixtures' shapes (other K splits, tiles):
 * at most 4.2e-4 in fp16, 1.4e-3 in bf16 (~1 ulp of these outputs, |y| < ~2). */
static float
pick_bound (const CudaBackend *cb)
{
  return cb->act_type == CT_BF16 ? 8e-2f : 1e-2f;
}

/* Key of the shapes whose plans agree: everything conv_plan reads of s, "B.Cin.H.W.Cout.k.stride.top.left.Ho.Wo",
 * on the stack (no allocation: conv_plan looks it up at every convolution it plans). */
#define PICK_KEY_BYTES 128
struct PickKey {
  char text[PICK_KEY_BYTES];
};

static PickKey
pick_key (const ConvShape &s)
{
  PickKey k;
  g_snprintf (k.text, sizeof k.text, "%d.%d.%d.%d.%d.%d.%d.%d.%d.%d.%d", s.B, s.Cin, s.H, s.W, s.Cout, s.k, s.stride,
              s.pad_top, s.pad_left, s.Ho, s.Wo);
  return k;
}

/* key: taken */
static void
remember_key (CudaBackend *cb, char *key, const ConvPick &pick)
{
  if (cb->conv_picks == NULL)
    cb->conv_picks = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  g_hash_table_replace (cb->conv_picks, key, g_memdup2 (&pick, sizeof pick));
}

static void
remember (CudaBackend *cb, const ConvShape &s, const ConvPick &pick)
{
  remember_key (cb, g_strdup (pick_key (s).text), pick);
}

static ConvPick
backend_pick (const CudaBackend *cb)
{
  return ConvPick { cb->conv_algo, cb->conv_tile, cb->conv_splitk };
}

ConvPick
cuda_conv_pick_of (const CudaBackend *cb, const ConvShape &s)
{
  if (cb->conv_picks != NULL && g_hash_table_size (cb->conv_picks) > 0)
    {
      const ConvPick *p = (const ConvPick *) g_hash_table_lookup (cb->conv_picks, pick_key (s).text);
      if (p != NULL)
        return *p;
    }
  return backend_pick (cb);
}

void
cuda_conv_picks_clear (CudaBackend *cb, gboolean destroy)
{
  if (cb->conv_picks == NULL)
    return;
  if (destroy)
    g_clear_pointer (&cb->conv_picks, g_hash_table_destroy);
  else
    g_hash_table_remove_all (cb->conv_picks);
}

gboolean
cuda_conv_picks_parse (CudaBackend *cb, const char *text)
{
  g_auto (GStrv) entries = g_strsplit (text, ",", -1);
  gboolean ok = TRUE;
  for (char **e = entries; *e != NULL; e++)
    {
      int f[11], algo, tile, splitk, end = -1;
      sscanf (*e, "%d.%d.%d.%d.%d.%d.%d.%d.%d.%d.%d:%d.%d.%d%n", &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6],
              &f[7], &f[8], &f[9], &f[10], &algo, &tile, &splitk, &end);
      if (end < 0 || (*e)[end] != '\0' || algo < CONV_AUTO || algo > CONV_WGMMA || tile < TILE_AUTO
          || tile > TILE_WGMMA_WIDE || splitk < 0 || splitk > 64)
        {
          ok = FALSE;
          continue;
        }
      remember_key (cb, g_strndup (*e, strchr (*e, ':') - *e),
                    ConvPick { (CudaConvAlgo) algo, (CudaConvTile) tile, splitk });
    }
  return ok;
}

static gint
compare_strings (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

char *
cuda_conv_picks_text (const CudaBackend *cb)
{
  if (cb->conv_picks == NULL || g_hash_table_size (cb->conv_picks) == 0)
    return NULL;
  guint n = 0;
  g_autofree const char **keys = (const char **) g_hash_table_get_keys_as_array (cb->conv_picks, &n);
  qsort (keys, n, sizeof *keys, compare_strings);
  GString *text = g_string_new (NULL);
  for (guint i = 0; i < n; i++)
    {
      const ConvPick *p = (const ConvPick *) g_hash_table_lookup (cb->conv_picks, keys[i]);
      g_string_append_printf (text, "%s%s:%d.%d.%d", i ? "," : "", keys[i], (int) p->algo, (int) p->tile, p->splitk);
    }
  return g_string_free (text, FALSE);
}

/* Adds pick to the list when its plan is one the list does not have yet. */
static void
add_candidate (const CudaBackend *cb, const ConvShape &s, const int pad[4], ConvPick pick, PickCandidate *list,
               int *n)
{
  PickCandidate c = { pick, {}, FLT_MAX, FLT_MAX };
  if (*n == PICK_MAX_CANDIDATES || !cuda_conv_plan_info (cb, s, pad, pick, &c.info))
    return;
  for (int i = 0; i < *n; i++)
    if (strcmp (list[i].info.name, c.info.name) == 0)
      return;
  list[(*n)++] = c;
}

/* The candidates, the backend's own plan first. */
static int
candidates (const CudaBackend *cb, const ConvShape &s, const int pad[4], PickCandidate *list)
{
  int n = 0;
  add_candidate (cb, s, pad, backend_pick (cb), list, &n);
  const CudaConvAlgo algos[] = { CONV_AUTO, CONV_NHWC };   /* CONV_NHWC differs for 1x1 only */
  for (CudaConvAlgo algo : algos)
    {
      for (CudaConvTile tile : { TILE_SMALL, TILE_LARGE })
        {
          ConvPlanInfo rule;
          if (!cuda_conv_plan_info (cb, s, pad, ConvPick { algo, tile, 0 }, &rule))
            continue;
          /* the rule's split (0), none, half and twice it; add_candidate drops the plans already listed */
          for (int splitk : { 0, 1, rule.splits / 2, 2 * rule.splits })
            add_candidate (cb, s, pad, ConvPick { algo, tile, splitk }, list, &n);
        }
      add_candidate (cb, s, pad, ConvPick { algo, TILE_MMA, 0 }, list, &n);
      if (cb->conv_wgmma_ready)
        {
          add_candidate (cb, s, pad, ConvPick { algo, TILE_WGMMA, 0 }, list, &n);
          add_candidate (cb, s, pad, ConvPick { algo, TILE_WGMMA, 1 }, list, &n);
        }
      if (cb->conv_wgmma_wide_ready)    /* 128 x 256, one block per SM; the same as the above under WGMMA_BN=256 */
        {
          add_candidate (cb, s, pad, ConvPick { algo, TILE_WGMMA_WIDE, 0 }, list, &n);
          add_candidate (cb, s, pad, ConvPick { algo, TILE_WGMMA_WIDE, 1 }, list, &n);
        }
    }
  return n;
}

/* Pseudo-random values in [-scale, scale), a hash of the index: x and the weights of the timing runs, so that a
 * candidate computing something else (a layout that is wrong on this GPU) shows against the backend's own plan,
 * where constant values could hide it. */
template <typename T>
__global__ void __launch_bounds__ (256)
pick_fill_kernel (T *__restrict__ p, size_t n, unsigned salt, float scale)
{
  grid_dependency_wait ();
  GRID_STRIDE (i, n)
  {
    unsigned h = (unsigned) i * 0x9E3779B1u ^ salt;
    h ^= h >> 15;
    h *= 0x85EBCA77u;
    h ^= h >> 13;
    h *= 0xC2B2AE3Du;
    h ^= h >> 16;
    p[i] = from_f32<T> (((float) (h >> 8) * (1.0f / 8388608.0f) - 1.0f) * scale);
  }
}

/* Per block, over its grid-stride share of n outputs: max |y - ref| (NaN: infinity) and max |ref|, into
 * out[2 block], out[2 block + 1]. */
template <typename T>
__global__ void __launch_bounds__ (256)
pick_diff_kernel (const T *__restrict__ y, const T *__restrict__ ref, size_t n, float *__restrict__ out)
{
  __shared__ float red[32];
  grid_dependency_wait ();
  float d = 0.0f, m = 0.0f;
  GRID_STRIDE (i, n)
  {
    const float r = to_f32<T> (ref[i]), e = fabsf (to_f32<T> (y[i]) - r);
    d = e <= FLT_MAX ? fmaxf (d, e) : INFINITY;
    m = fmaxf (m, fabsf (r));
  }
  d = block_max (d, red);
  m = block_max (m, red);
  if (threadIdx.x == 0)
    {
      out[2 * blockIdx.x] = d;
      out[2 * blockIdx.x + 1] = m;
    }
}

#define PICK_DIFF_THREADS 256

/* Buffers for timing one shape: x, y, weights, bias, scratch, the backend's own plan's y (ref) and the
 * per-block differences (diff: device, host: their copy). */
struct PickBuffers {
  void *x, *y, *weight, *scratch, *ref;
  float *bias, *diff, *host;
  size_t y_elems;
  unsigned diff_blocks;
};

static void
pick_buffers_free (PickBuffers *b)
{
  cudaFree (b->x);
  cudaFree (b->y);
  cudaFree (b->weight);
  cudaFree (b->bias);
  cudaFree (b->scratch);
  cudaFree (b->ref);
  cudaFree (b->diff);
  g_free (b->host);
}

/* x and the weights pseudo-random (the weights scaled by 1 / sqrt (K), so y stays ~1), the bias 0x3C bytes
 * (~0.011). */
static bool
pick_buffers_alloc (CudaBackend *cb, const ConvShape &s, size_t scratch, PickBuffers *b)
{
  const size_t x_elems = (size_t) s.B * s.Cin * s.H * s.W, w_elems = (size_t) s.Cout * s.ldw;
  *b = PickBuffers {};
  b->y_elems = (size_t) s.B * s.Cout * s.Ho * s.Wo;
  b->diff_blocks = elementwise_blocks (cb, b->y_elems, PICK_DIFF_THREADS);
  const size_t y_bytes = b->y_elems * cb->act_size;
  bool ok = cudaMalloc (&b->x, x_elems * cb->act_size) == cudaSuccess && cudaMalloc (&b->y, y_bytes) == cudaSuccess
            && cudaMalloc (&b->ref, y_bytes) == cudaSuccess
            && cudaMalloc (&b->weight, w_elems * cb->act_size) == cudaSuccess
            && cudaMalloc ((void **) &b->bias, s.Cout * sizeof (float)) == cudaSuccess
            && cudaMalloc ((void **) &b->diff, 2 * sizeof (float) * b->diff_blocks) == cudaSuccess
            && (scratch == 0 || cudaMalloc (&b->scratch, scratch) == cudaSuccess);
  ok = ok && cudaMemsetAsync (b->bias, 0x3C, s.Cout * sizeof (float), cb->stream) == cudaSuccess;
  if (ok)
    {
      b->host = g_new (float, 2 * b->diff_blocks);
      const float w_scale = 1.0f / sqrtf ((float) (s.Cin * s.k * s.k));
      DISPATCH_ACT (cb, T,
                    launch (cb, "conv_pick_fill", elementwise_blocks (cb, x_elems, 256), 256, 0, pick_fill_kernel<T>,
                            (T *) b->x, x_elems, 0x2545F491u, 1.0f);
                    launch (cb, "conv_pick_fill", elementwise_blocks (cb, w_elems, 256), 256, 0, pick_fill_kernel<T>,
                            (T *) b->weight, w_elems, 0x9E3779B9u, w_scale));
      ok = cb->error == NULL;
    }
  if (!ok)
    {
      g_clear_error (&cb->error);
      cudaGetLastError ();              /* out of memory here is not the forward's failure: keep the plan */
      pick_buffers_free (b);
    }
  return ok;
}

/* c.diff for the output y of the last run (the backend's own plan's in b.ref). */
static void
measure_disagreement (CudaBackend *cb, const PickBuffers &b, PickCandidate &c)
{
  DISPATCH_ACT (cb, T,
                launch (cb, "conv_pick_diff", b.diff_blocks, PICK_DIFF_THREADS, 0, pick_diff_kernel<T>,
                        (const T *) b.y, (const T *) b.ref, b.y_elems, b.diff));
  if (cb->error != NULL
      || cudaMemcpyAsync (b.host, b.diff, 2 * sizeof (float) * b.diff_blocks, cudaMemcpyDeviceToHost, cb->stream)
             != cudaSuccess
      || cudaStreamSynchronize (cb->stream) != cudaSuccess)
    {
      g_clear_error (&cb->error);
      cudaGetLastError ();
      return;                           /* not measured: c.diff stays FLT_MAX, the candidate is not picked */
    }
  float d = 0.0f, m = 0.0f;
  for (unsigned i = 0; i < b.diff_blocks; i++)
    {
      d = b.host[2 * i] > d || b.host[2 * i] != b.host[2 * i] ? b.host[2 * i] : d;
      m = b.host[2 * i + 1] > m ? b.host[2 * i + 1] : m;
    }
  c.diff = d / (m > 1.0f ? m : 1.0f);
}

/* ms per run of c (fastest of PICK_ROUNDS rounds), FLT_MAX where a launch failed (its error dropped). */
static float
time_candidate (CudaBackend *cb, const ConvShape &s, const int pad[4], const PickCandidate &c, const PickBuffers &b,
                cudaEvent_t start, cudaEvent_t end)
{
  const DdpmLinearW w = { b.weight, b.bias, s.Cout, s.Cin, s.k };
  float best = FLT_MAX;
  cuda_conv_run_pick (cb, &w, b.x, b.y, s, pad, c.pick);     /* warm-up: first-use costs, caches */
  for (int round = 0; round < PICK_ROUNDS && cb->error == NULL; round++)
    {
      cuda_spin (cb, PICK_SPIN_NS);
      cudaEventRecord (start, cb->stream);
      for (int r = 0; r < PICK_REPS; r++)
        cuda_conv_run_pick (cb, &w, b.x, b.y, s, pad, c.pick);
      cudaEventRecord (end, cb->stream);
      float ms = 0.0f;
      if (cudaEventSynchronize (end) == cudaSuccess && cudaEventElapsedTime (&ms, start, end) == cudaSuccess)
        best = ms / PICK_REPS < best ? ms / PICK_REPS : best;
    }
  if (cb->error != NULL)
    {
      g_clear_error (&cb->error);
      cudaGetLastError ();
      return FLT_MAX;
    }
  return best;
}

void
cuda_conv_pick_time (CudaBackend *cb, const ConvShape &s, const int pad[4])
{
  if (cb->conv_pick == PICK_OFF || cb->capturing || cb->error != NULL || s.B <= 0 || s.Ho <= 0 || s.Wo <= 0
      || s.Cout <= 0)
    return;
  if (cb->conv_picks != NULL && g_hash_table_contains (cb->conv_picks, pick_key (s).text))
    return;
  const ConvPick own = backend_pick (cb);
  PickCandidate list[PICK_MAX_CANDIDATES];
  /* what the user or the variant fixed (a convolution path, a tile, a split) is not second-guessed */
  const bool fixed = own.algo != CONV_AUTO || own.tile != TILE_AUTO || own.splitk != 0;
  const int n = fixed ? 0 : candidates (cb, s, pad, list);
  size_t scratch = 0;
  for (int i = 0; i < n; i++)
    scratch = list[i].info.scratch > scratch ? list[i].info.scratch : scratch;
  if (n < 2)
    {
      remember (cb, s, own);            /* nothing to choose: the backend's plan */
      return;
    }
  cuda_flush_reduce (cb);
  CudaProfile *const profile_was = cb->profile;   /* these runs are not the forward's: not in its profile */
  cb->profile = NULL;
  PickBuffers b;
  if (!pick_buffers_alloc (cb, s, scratch, &b))
    {
      cb->profile = profile_was;
      remember (cb, s, own);            /* no memory to time in: the backend's plan */
      return;
    }
  void *const scratch_was = cb->scratch;
  const size_t scratch_bytes_was = cb->scratch_bytes;
  cb->scratch = b.scratch;
  cb->scratch_bytes = scratch;
  const float bound = pick_bound (cb);
  int chosen = 0;
  cudaEvent_t start = NULL, end = NULL;
  if (cudaEventCreateWithFlags (&start, cudaEventDefault) == cudaSuccess
      && cudaEventCreateWithFlags (&end, cudaEventDefault) == cudaSuccess)
    {
      for (int i = 0; i < n; i++)
        {
          /* an output the candidate leaves unwritten reads as NaN (0xFFFF: NaN in fp16 and bf16) */
          cudaMemsetAsync (b.y, 0xFF, b.y_elems * cb->act_size, cb->stream);
          list[i].ms = time_candidate (cb, s, pad, list[i], b, start, end);
          if (list[i].ms == FLT_MAX)
            continue;
          if (i == 0)
            {
              /* the backend's own plan: the reference the others must agree with */
              if (cudaMemcpyAsync (b.ref, b.y, b.y_elems * cb->act_size, cudaMemcpyDeviceToDevice, cb->stream)
                  == cudaSuccess)
                list[0].diff = 0.0f;
              continue;
            }
          if (list[0].diff == 0.0f)
            measure_disagreement (cb, b, list[i]);
          if (!(list[i].diff <= bound))
            continue;                   /* computes something else (or not compared): never picked */
          const float ms = list[i].ms, chosen_ms = list[chosen].ms;
          const bool better = cb->conv_pick == PICK_SLOWEST ? chosen_ms == FLT_MAX || ms > chosen_ms
                                                            : ms < chosen_ms * (chosen == 0 ? PICK_MARGIN : 1.0f);
          if (better)
            chosen = i;
        }
    }
  cudaStreamSynchronize (cb->stream);
  if (start != NULL)
    cudaEventDestroy (start);
  if (end != NULL)
    cudaEventDestroy (end);
  cudaGetLastError ();                  /* no error of the timing left for the forward's launch checks */
  cb->scratch = scratch_was;
  cb->scratch_bytes = scratch_bytes_was;
  cb->profile = profile_was;
  pick_buffers_free (&b);
  remember (cb, s, list[chosen].pick);
  if (cb->conv_pick_log)
    {
      /* "conv pick KEY:ALGO.TILE.SPLITK (shape): candidates": the first word is the pick as CONV_PICKS takes it */
      const PickKey key = pick_key (s);
      const ConvPick &p = list[chosen].pick;
      GString *line = g_string_new (NULL);
      g_string_printf (line, "conv pick %s:%d.%d.%d (B=%d %dx%d %d->%d k%d/%d):", key.text, (int) p.algo, (int) p.tile,
                       p.splitk, s.B, s.H, s.W, s.Cin, s.Cout, s.k, s.stride);
      for (int i = 0; i < n; i++)
        {
          g_string_append_printf (line, "%s %s %.4f ms", i == 0 ? "" : ";", list[i].info.name,
                                  list[i].ms == FLT_MAX ? -1.0f : list[i].ms);
          if (i > 0 && list[i].ms != FLT_MAX && !(list[i].diff <= bound))
            g_string_append_printf (line, " disagrees (max |y - own| %.3g, bound %.3g)", list[i].diff, bound);
          else if (i > 0 && list[i].ms != FLT_MAX)
            g_string_append_printf (line, " (diff %.2g)", list[i].diff);
          if (i == chosen)
            g_string_append (line, " (picked)");
        }
      g_printerr ("%s\n", line->str);
      g_string_free (line, TRUE);
    }
}
