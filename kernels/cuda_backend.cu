/* cuda_backend.cu: the CUDA backend's life cycle, memory, copies, graph capture and ops table.
 * The operations themselves live one per file (group_norm.cu, conv2d.cu, attention.cu, ...). */
#include "cuda_backend.cuh"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ---- */

void
cuda_fail (CudaBackend *cb, int code, const char *format, ...)
{
  if (cb->error != NULL)
    return;
  va_list ap;
  va_start (ap, format);
  char *msg = g_strdup_vprintf (format, ap);
  va_end (ap);
  g_set_error_literal (&cb->error, DDPM_ERROR, code, msg);
  g_warning ("CUDA backend: %s", msg);
  g_free (msg);
}

gboolean
cuda_ok (CudaBackend *cb, cudaError_t e, const char *what)
{
  if (e == cudaSuccess)
    return TRUE;
  if (e == cudaErrorMemoryAllocation)
    cuda_fail (cb, DDPM_ERROR_NOMEM, "%s: out of GPU memory; try a smaller batch or image size", what);
  else
    cuda_fail (cb, DDPM_ERROR_DEVICE, "%s failed: %s (%s)", what, cudaGetErrorString (e), cudaGetErrorName (e));
  return FALSE;
}

void
cuda_set_nomem (CudaBackend *cb, GError **error, size_t bytes, const char *what)
{
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo (&free_b, &total_b);
  cudaGetLastError (); /* an allocation failure is not sticky; don't let it leak into the next launch check */
  g_set_error (error, DDPM_ERROR, DDPM_ERROR_NOMEM,
               "out of GPU memory allocating %s (%.1f MiB; %.0f MiB free of %.0f MiB on %s): try a smaller batch "
               "or image size",
               what, bytes / 1048576.0, free_b / 1048576.0, total_b / 1048576.0, cb->base.description);
}

/* FALSE with the sticky error moved into error (and cleared). */
static gboolean
take_error (CudaBackend *cb, GError **error)
{
  if (cb->error == NULL)
    return TRUE;
  g_propagate_error (error, cb->error);
  cb->error = NULL;
  return FALSE;
}

static gboolean
cuda_check_error (DdpmBackend *be, GError **error)
{
  CudaBackend *cb = cuda_backend (be);
  cuda_flush_reduce (cb);               /* a held-back split-K sum goes first */
  if (!cb->capturing)
    cuda_ok (cb, cudaStreamSynchronize (cb->stream), "synchronize");
  return take_error (cb, error);
}

/* ---- memory ---- */

static void *
device_alloc (CudaBackend *cb, size_t bytes, const char *what, GError **error)
{
  if (cb->capturing)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_DEVICE, "CUDA backend: %s allocated during graph capture", what);
      return NULL;
    }
  void *p = NULL;
  cudaError_t e = cudaMalloc (&p, bytes == 0 ? 256 : bytes);
  if (e == cudaErrorMemoryAllocation)
    {
      cuda_set_nomem (cb, error, bytes, what);
      return NULL;
    }
  if (e != cudaSuccess)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_DEVICE, "cudaMalloc of %zu bytes for %s failed: %s", bytes, what,
                   cudaGetErrorString (e));
      return NULL;
    }
  return p;
}

static void *
cuda_alloc_act (DdpmBackend *be, size_t n, GError **error)
{
  CudaBackend *cb = cuda_backend (be);
  return device_alloc (cb, n * cb->act_size, "activations", error);
}

static void *
cuda_alloc_f32 (DdpmBackend *be, size_t n, GError **error)
{
  return device_alloc (cuda_backend (be), n * sizeof (float), "a float32 buffer", error);
}

static void *
cuda_alloc_bytes (DdpmBackend *be, size_t n, GError **error)
{
  return device_alloc (cuda_backend (be), n, "a buffer", error);
}

static gboolean
arena_owns (const CudaArena *a, const void *p)
{
  for (int i = 0; i < a->n; i++)
    if ((const char *) p >= a->chunk[i] && (const char *) p < a->chunk[i] + a->size[i])
      return TRUE;
  return FALSE;
}

/* bytes from the arena, 256-byte aligned; a new chunk when the current one is full. */
static void *
arena_alloc (CudaBackend *cb, CudaArena *a, size_t bytes, const char *what, GError **error)
{
  bytes = (bytes + 255) & ~(size_t) 255;
  if (a->n == 0 || a->used + bytes > a->size[a->n - 1])
    {
      if (a->n == CUDA_ARENA_MAX_CHUNKS)
        {
          g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT, "CUDA backend: more than %d weight chunks",
                       CUDA_ARENA_MAX_CHUNKS);
          return NULL;
        }
      size_t size = bytes > CUDA_ARENA_CHUNK_BYTES ? bytes : CUDA_ARENA_CHUNK_BYTES;
      char *c = (char *) device_alloc (cb, size, what, error);
      if (c == NULL)
        return NULL;
      a->chunk[a->n] = c;
      a->size[a->n] = size;
      a->n++;
      a->used = 0;
    }
  void *p = a->chunk[a->n - 1] + a->used;
  a->used += bytes;
  return p;
}

static void
arena_clear (CudaArena *a)
{
  for (int i = 0; i < a->n; i++)
    cudaFree (a->chunk[i]);
  a->n = 0;
  a->used = 0;
}

static void
cuda_free (DdpmBackend *be, void *ptr)
{
  CudaBackend *cb = cuda_backend (be);
  cuda_flush_reduce (cb);               /* a held-back split-K sum goes first */
  if (ptr == NULL || arena_owns (&cb->matrices, ptr) || arena_owns (&cb->vectors, ptr))
    return;                        /* weights go with the backend */
  cuda_ok (cb, cudaFree (ptr), "cudaFree");
}

/* Host float32 -> the element type of T (round to nearest even), on the host. */
template <typename T>
static void
convert_host (const float *src, T *dst, size_t n)
{
  for (size_t i = 0; i < n; i++)
    dst[i] = from_f32<T> (src[i]);
}

static void *
cuda_upload_param (DdpmBackend *be, const float *host, DdpmParamKind kind, int ndim, const int64_t *shape,
                   GError **error)
{
  CudaBackend *cb = cuda_backend (be);
  int64_t numel = 1;
  for (int i = 0; i < ndim; i++)
    numel *= shape[i];

  if (kind == DDPM_PARAM_VECTOR)
    {
      /* biases and norm parameters stay float32: the kernels add them in float */
      void *d = arena_alloc (cb, &cb->vectors, (size_t) numel * sizeof (float), "weights", error);
      if (d == NULL)
        return NULL;
      if (!cuda_ok (cb, cudaMemcpy (d, host, (size_t) numel * sizeof (float), cudaMemcpyHostToDevice), "upload"))
        {
          take_error (cb, error);
          return NULL;
        }
      return d;
    }

  /* conv (out, in, k, k) / linear (out, in): rows of in*k*k, stored with row stride weight_ld() in the
   * activation type, zero padded; conv rows in (ky, kx, in) order (conv2d.cu) */
  const int64_t rows = shape[0];
  const int64_t K = rows > 0 ? numel / rows : 0;
  const int64_t ld = (K + 7) & ~(int64_t) 7;
  const size_t bytes = (size_t) (rows * ld) * cb->act_size;
  void *d = arena_alloc (cb, &cb->matrices, bytes, "weights", error);
  if (d == NULL)
    return NULL;
  float *padded = (float *) g_malloc0 ((size_t) (rows * ld) * sizeof (float));
  if (kind == DDPM_PARAM_CONV && ndim == 4 && shape[2] == shape[3] && shape[2] > 1)
    {
      /* (Cout, Cin, ky, kx) -> (Cout, ky, kx, Cin): conv2d.cu's reduction runs over channels fastest */
      const int64_t cin = shape[1], taps = shape[2] * shape[3];
      for (int64_t r = 0; r < rows; r++)
        for (int64_t ci = 0; ci < cin; ci++)
          for (int64_t t = 0; t < taps; t++)
            padded[r * ld + t * cin + ci] = host[r * K + ci * taps + t];
    }
  else
    for (int64_t r = 0; r < rows; r++)
      memcpy (padded + r * ld, host + r * K, (size_t) K * sizeof (float));
  void *staged = g_malloc ((size_t) (rows * ld) * cb->act_size);
  DISPATCH_ACT (cb, T, convert_host<T> (padded, (T *) staged, (size_t) (rows * ld)));
  g_free (padded);
  cudaError_t e = cudaMemcpy (d, staged, bytes, cudaMemcpyHostToDevice);
  g_free (staged);
  if (!cuda_ok (cb, e, "upload"))
    {
      take_error (cb, error);
      return NULL;
    }
  return d;
}

/* A pinned slot for a small copy, once the GPU is done with its previous use. */
static uint8_t *
staging_slot (CudaBackend *cb, cudaEvent_t **event)
{
  int i = cb->staging_next;
  cb->staging_next = (i + 1) % CUDA_STAGING_SLOTS;
  cuda_ok (cb, cudaEventSynchronize (cb->staging_events[i]), "cudaEventSynchronize");
  *event = &cb->staging_events[i];
  return cb->staging + (size_t) i * CUDA_STAGING_SLOT_BYTES;
}

static void
cuda_to_device (DdpmBackend *be, void *dst, const void *src, size_t n)
{
  CudaBackend *cb = cuda_backend (be);
  cuda_flush_reduce (cb);               /* a held-back split-K sum goes first */
  if (cb->capturing)
    {
      cuda_fail (cb, DDPM_ERROR_DEVICE, "to_device called during graph capture (copy before graph_begin)");
      return;
    }
  if (n <= CUDA_STAGING_SLOT_BYTES)
    {
      /* small (timesteps, step parameters): asynchronous through a pinned slot, no host wait */
      cudaEvent_t *ev;
      uint8_t *slot = staging_slot (cb, &ev);
      memcpy (slot, src, n);
      cuda_ok (cb, cudaMemcpyAsync (dst, slot, n, cudaMemcpyHostToDevice, cb->stream), "cudaMemcpyAsync");
      cuda_ok (cb, cudaEventRecord (*ev, cb->stream), "cudaEventRecord");
      return;
    }
  /* large (images, noise): src may be freed when we return, so finish the copy */
  cuda_ok (cb, cudaMemcpyAsync (dst, src, n, cudaMemcpyHostToDevice, cb->stream), "cudaMemcpyAsync");
  cuda_ok (cb, cudaStreamSynchronize (cb->stream), "to_device");
}

static void
cuda_to_host (DdpmBackend *be, void *dst, const void *src, size_t n)
{
  CudaBackend *cb = cuda_backend (be);
  cuda_flush_reduce (cb);               /* a held-back split-K sum goes first */
  if (cb->capturing)
    {
      cuda_fail (cb, DDPM_ERROR_DEVICE, "to_host called during graph capture");
      return;
    }
  gboolean ok = cuda_ok (cb, cudaMemcpyAsync (dst, src, n, cudaMemcpyDeviceToHost, cb->stream), "cudaMemcpyAsync");
  ok = cuda_ok (cb, cudaStreamSynchronize (cb->stream), "to_host") && ok;
  if (cb->profile != NULL)
    cuda_profile_flush (cb);
  if (!ok || cb->error != NULL)
    {
      /* The device failed: hand back NaN rather than stale bytes, so a caller that only checks values
       * still notices (float32 buffers); check_error has the reason. */
      if (n % sizeof (float) == 0)
        {
          float *f = (float *) dst;
          for (size_t i = 0; i < n / sizeof (float); i++)
            f[i] = NAN;
        }
    }
}

static void
cuda_graph_reset (DdpmBackend *be);

static gboolean
cuda_reserve_scratch (DdpmBackend *be, size_t n, GError **error)
{
  CudaBackend *cb = cuda_backend (be);
  cuda_flush_reduce (cb);               /* a held-back split-K sum goes first */
  if (!take_error (cb, error))
    return FALSE;
  if (n <= cb->scratch_bytes)
    return TRUE;
  if (cb->capturing)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_DEVICE, "CUDA backend: reserve_scratch during graph capture");
      return FALSE;
    }
  /* a captured graph points into the old arena */
  cuda_graph_reset (be);
  cudaStreamSynchronize (cb->stream);
  cudaFree (cb->scratch);
  cb->scratch = NULL;
  cb->scratch_bytes = 0;
  cb->scratch = device_alloc (cb, n, "scratch", error);
  if (cb->scratch == NULL)
    return FALSE;
  cb->scratch_bytes = n;
  return TRUE;
}

static void
cuda_synchronize (DdpmBackend *be)
{
  CudaBackend *cb = cuda_backend (be);
  cuda_flush_reduce (cb);               /* a held-back split-K sum goes first */
  if (cb->capturing)
    {
      cuda_fail (cb, DDPM_ERROR_DEVICE, "synchronize called during graph capture");
      return;
    }
  cuda_ok (cb, cudaStreamSynchronize (cb->stream), "synchronize");
  if (cb->profile != NULL)
    cuda_profile_flush (cb);
}

/* ---- sampler parameters ---- */

static void
cuda_write_params (DdpmBackend *be, void *params_dev, const DdpmStepParams *host)
{
  cuda_to_device (be, params_dev, host, sizeof *host);
}

/* ---- tuning variants (cuda_switches.cu) ---- */

static void
use_variant (CudaBackend *cb, const char *settings)
{
  char *copy = g_strdup (settings);      /* settings may be cb->variant_settings itself */
  g_free (cb->variant_settings);
  g_strfreev (cb->variant_tokens);
  cb->variant_settings = copy;
  cb->variant_tokens = g_strsplit_set (copy, " \t", -1);
  cuda_switches_read (cb);
}

static const char *
cuda_variant_name (DdpmBackend *be, int i)
{
  CudaBackend *cb = cuda_backend (be);
  return i >= 0 && i < (int) g_strv_length (cb->variants) ? cb->variants[i] : NULL;
}

static gboolean
cuda_set_variant (DdpmBackend *be, const char *settings, GError **error)
{
  CudaBackend *cb = cuda_backend (be);
  if (cb->capturing || !cuda_settings_well_formed (settings))
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT, "CUDA backend: settings '%s' %s", settings,
                   cb->capturing ? "during a graph capture" : "are not NAME=value ...");
      return FALSE;
    }
  cuda_flush_reduce (cb);               /* a held-back sum is launched under the settings that held it */
  if (!take_error (cb, error))
    return FALSE;
  cuda_graph_reset (be);                /* a captured graph holds the old settings' kernels */
  g_autofree char *previous = g_strdup (cb->variant_settings);
  const char *unmet_before = cuda_switches_unmet (cb);   /* the environment's own, not these settings' */
  use_variant (cb, settings);
  const char *unmet = cuda_switches_unmet (cb);
  if (unmet != NULL && g_strcmp0 (unmet, unmet_before) != 0)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED, "%s", unmet);
      use_variant (cb, previous);
      return FALSE;
    }
  return take_error (cb, error);
}

/* The settings with the convolution plans picked while planning ("CONV_PICKS=..."; conv_pick.cu) in place of any
 * given before. */
static const char *
cuda_variant_frozen (DdpmBackend *be)
{
  CudaBackend *cb = cuda_backend (be);
  GString *s = g_string_new (NULL);
  for (char **t = cb->variant_tokens; t != NULL && *t != NULL; t++)
    if (**t != '\0' && !g_str_has_prefix (*t, "CONV_PICKS="))
      g_string_append_printf (s, "%s%s", s->len ? " " : "", *t);
  g_autofree char *picks = cuda_conv_picks_text (cb);
  if (picks != NULL)
    g_string_append_printf (s, "%sCONV_PICKS=%s", s->len ? " " : "", picks);
  g_free (cb->variant_frozen);
  cb->variant_frozen = g_string_free (s, FALSE);
  return cb->variant_frozen;
}

/* ---- graphs: one stream capture, replayed per step ---- */

static gboolean
cuda_graph_begin (DdpmBackend *be, GError **error)
{
  CudaBackend *cb = cuda_backend (be);
  cuda_flush_reduce (cb);               /* a held-back split-K sum goes first */
  if (!take_error (cb, error))
    return FALSE;
  if (cb->capturing)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_DEVICE, "CUDA backend: graph_begin while already capturing");
      return FALSE;
    }
  cuda_graph_reset (be);
  cudaError_t e = cudaStreamBeginCapture (cb->stream, cudaStreamCaptureModeThreadLocal);
  if (e != cudaSuccess)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_DEVICE, "cudaStreamBeginCapture failed: %s", cudaGetErrorString (e));
      return FALSE;
    }
  cb->capturing = TRUE;
  return TRUE;
}

static gboolean
cuda_graph_end (DdpmBackend *be, GError **error)
{
  CudaBackend *cb = cuda_backend (be);
  cuda_flush_reduce (cb);               /* a held-back split-K sum goes first */
  if (!cb->capturing)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_DEVICE, "CUDA backend: graph_end without graph_begin");
      return FALSE;
    }
  cb->capturing = FALSE;
  cudaGraph_t graph = NULL;
  cudaError_t e = cudaStreamEndCapture (cb->stream, &graph);
  if (!take_error (cb, error))
    {
      if (graph != NULL)
        cudaGraphDestroy (graph);
      cudaGetLastError ();
      return FALSE;
    }
  if (e != cudaSuccess)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_DEVICE, "cudaStreamEndCapture failed: %s", cudaGetErrorString (e));
      cudaGetLastError ();
      return FALSE;
    }
  cudaGraphExec_t exec = NULL;
  e = cudaGraphInstantiate (&exec, graph, 0);
  if (e != cudaSuccess)
    {
      cudaGraphDestroy (graph);
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_DEVICE, "cudaGraphInstantiate failed: %s", cudaGetErrorString (e));
      cudaGetLastError ();
      return FALSE;
    }
  cb->graph = graph;
  cb->graph_exec = exec;
  return TRUE;
}

static gboolean
cuda_graph_launch (DdpmBackend *be, GError **error)
{
  CudaBackend *cb = cuda_backend (be);
  cuda_flush_reduce (cb);               /* a held-back split-K sum goes first */
  if (!take_error (cb, error))
    return FALSE;
  if (cb->graph_exec == NULL)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_DEVICE, "CUDA backend: graph_launch without a captured graph");
      return FALSE;
    }
  cudaError_t e = cudaGraphLaunch (cb->graph_exec, cb->stream);
  if (e != cudaSuccess)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_DEVICE, "cudaGraphLaunch failed: %s", cudaGetErrorString (e));
      return FALSE;
    }
  return TRUE;
}

static void
cuda_graph_reset (DdpmBackend *be)
{
  CudaBackend *cb = cuda_backend (be);
  if (cb->graph_exec != NULL)
    cudaGraphExecDestroy (cb->graph_exec);
  if (cb->graph != NULL)
    cudaGraphDestroy (cb->graph);
  cb->graph_exec = NULL;
  cb->graph = NULL;
}

/* ---- life cycle ---- */

static void
cuda_destroy (DdpmBackend *be)
{
  CudaBackend *cb = cuda_backend (be);
  cuda_flush_reduce (cb);               /* a held-back split-K sum goes first */
  if (cb->capturing)
    {
      cudaGraph_t g = NULL;
      cudaStreamEndCapture (cb->stream, &g);
      if (g != NULL)
        cudaGraphDestroy (g);
      cb->capturing = FALSE;
    }
  if (cb->stream != NULL)
    cudaStreamSynchronize (cb->stream);
  cuda_profile_report_and_free (cb);
  cuda_graph_reset (be);
  if (cb->blas_handle != NULL)
    cb->blas.destroy (cb->blas_handle);
  ddpm_cublas_unload (&cb->blas);
  cudaFree (cb->blas_workspace);
  cudaFree (cb->scratch);
  arena_clear (&cb->matrices);
  arena_clear (&cb->vectors);
  cudaFree (cb->gn_stats);
  cudaFree (cb->counter);
  cudaFree (cb->conv_counters);
  for (int i = 0; i < CUDA_STAGING_SLOTS; i++)
    if (cb->staging_events[i] != NULL)
      cudaEventDestroy (cb->staging_events[i]);
  if (cb->staging != NULL)
    cudaFreeHost (cb->staging);
  if (cb->stream != NULL)
    cudaStreamDestroy (cb->stream);
  g_strfreev (cb->variants);
  g_strfreev (cb->variant_tokens);
  g_free (cb->variant_settings);
  g_free (cb->variant_frozen);
  cuda_conv_picks_clear (cb, TRUE);
  g_clear_error (&cb->error);
  g_free (cb);
}

/* The ops table, without and with graphs: profiling ($DDPM_CUDA_PROFILE) times kernels one by one, so it
 * leaves graph_* NULL and the engine runs every forward eagerly. */
#define CUDA_OPS_COMMON \
  .name = "cuda", \
  .destroy = cuda_destroy, \
  .alloc_act = cuda_alloc_act, \
  .alloc_f32 = cuda_alloc_f32, \
  .alloc_bytes = cuda_alloc_bytes, \
  .free = cuda_free, \
  .upload_param = cuda_upload_param, \
  .to_device = cuda_to_device, \
  .to_host = cuda_to_host, \
  .reserve_scratch = cuda_reserve_scratch, \
  .synchronize = cuda_synchronize, \
  .conv2d_scratch = cuda_conv2d_scratch, \
  .attention_scratch = cuda_attention_scratch, \
  .cast_in = cuda_cast_in, \
  .cast_out = cuda_cast_out, \
  .timestep_embedding = cuda_timestep_embedding, \
  .linear = cuda_linear, \
  .conv2d = cuda_conv2d, \
  .group_norm = cuda_group_norm, \
  .add_channel_bias = cuda_add_channel_bias, \
  .add_scaled = cuda_add_scaled, \
  .concat_channels = cuda_concat_channels, \
  .upsample_nearest2x = cuda_upsample_nearest2x, \
  .attention = cuda_attention, \
  .write_params = cuda_write_params, \
  .scheduler_step = cuda_scheduler_step, \
  .randn = cuda_randn, \
  .count_nonfinite = cuda_count_nonfinite, \
  .group_norm_conv2d = cuda_group_norm_conv2d, \
  .upsample_conv2d = cuda_upsample_conv2d, \
  .conv2d_f32_ends = cuda_conv2d_f32_ends, \
  .gather_rows = cuda_gather_rows

static const DdpmBackendOps cuda_ops = {
  CUDA_OPS_COMMON,
  .graph_begin = cuda_graph_begin,
  .graph_end = cuda_graph_end,
  .graph_launch = cuda_graph_launch,
  .graph_reset = cuda_graph_reset,
  .check_error = cuda_check_error,
  .variant_name = cuda_variant_name,
  .set_variant = cuda_set_variant,
  .variant_frozen = cuda_variant_frozen,
};

static const DdpmBackendOps cuda_ops_eager = {
  CUDA_OPS_COMMON,
  .graph_begin = NULL,
  .graph_end = NULL,
  .graph_launch = NULL,
  .graph_reset = NULL,
  .check_error = cuda_check_error,
  .variant_name = cuda_variant_name,
  .set_variant = cuda_set_variant,
  .variant_frozen = cuda_variant_frozen,
};

/* Why the runtime cannot reach a device, in words a user can act on. */
static void
set_no_device (GError **error, cudaError_t e)
{
  int driver = 0;
  cudaDriverGetVersion (&driver);
  if (driver == 0)
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_DEVICE,
                 "no NVIDIA driver found (libcuda.so.1 is not installed or not loadable)");
  else if (e == cudaErrorInsufficientDriver)
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_DEVICE,
                 "the NVIDIA driver (CUDA %d.%d) is older than this build needs (CUDA 13.0): update the driver",
                 driver / 1000, driver % 1000 / 10);
  else if (e == cudaErrorNoDevice || e == cudaSuccess)
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_DEVICE, "no CUDA device found (driver CUDA %d.%d)", driver / 1000,
                 driver % 1000 / 10);
  else
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_DEVICE, "CUDA is unavailable: %s (%s)", cudaGetErrorString (e),
                 cudaGetErrorName (e));
}

static gboolean
setup_blas (CudaBackend *cb, char **note)
{
  const char *gemm = g_getenv ("DDPM_CUDA_GEMM");
  if (gemm != NULL && strcmp (gemm, "fallback") == 0)
    {
      *note = g_strdup ("own GEMM ($DDPM_CUDA_GEMM=fallback)");
      return FALSE;
    }
  char *reason = NULL;
  if (!ddpm_cublas_load (&cb->blas, &reason))
    {
      *note = g_strdup_printf ("cuBLAS not loaded (%s): slow fallback GEMM", reason);
      /* a note, not a warning: GTest programs make warnings fatal, and the backend still works */
      g_message ("CUDA backend: cuBLAS not loaded (%s); using the slow fallback GEMM kernel", reason);
      g_free (reason);
      return FALSE;
    }
  if (cb->blas.create (&cb->blas_handle) != DDPM_CUBLAS_STATUS_SUCCESS)
    {
      cb->blas_handle = NULL;
      *note = g_strdup ("cublasCreate failed: slow fallback GEMM");
      return FALSE;
    }
  /* Our own workspace, so that cuBLAS never allocates while a graph is being captured. */
  if (cudaMalloc (&cb->blas_workspace, CUDA_BLAS_WORKSPACE_BYTES) != cudaSuccess)
    {
      cudaGetLastError ();
      cb->blas_workspace = NULL;
    }
  gboolean fp32 = cb->act_type == CT_F32;
  if (cb->blas.set_stream (cb->blas_handle, cb->stream) != DDPM_CUBLAS_STATUS_SUCCESS
      || (cb->blas_workspace != NULL
          && cb->blas.set_workspace (cb->blas_handle, cb->blas_workspace, CUDA_BLAS_WORKSPACE_BYTES)
               != DDPM_CUBLAS_STATUS_SUCCESS)
      /* fp32 is the exact reference mode: no TF32, no reduced-precision reductions */
      || cb->blas.set_math_mode (cb->blas_handle, fp32 ? DDPM_CUBLAS_PEDANTIC_MATH : DDPM_CUBLAS_DEFAULT_MATH)
           != DDPM_CUBLAS_STATUS_SUCCESS)
    {
      cb->blas.destroy (cb->blas_handle);
      cb->blas_handle = NULL;
      *note = g_strdup ("cuBLAS setup failed: slow fallback GEMM");
      return FALSE;
    }
  *note = g_strdup ("cuBLAS");
  return TRUE;
}

#ifndef DDPM_CUDA_EMU
/* Adds 1 to *count once per block, after waiting for the previous grid. */
__global__ void
pdl_probe_kernel (unsigned long long *count)
{
  grid_dependency_wait ();
  if (threadIdx.x == 0)
    atomicAdd (count, 1ull);
}
#endif

/* Whether programmatic dependent launch works here, inside a captured graph as the sampler uses it: two
 * dependent launches captured, instantiated and run must count 2 x 4 blocks. Any failure (an older
 * driver, a device below sm_90) leaves it off, with no error kept. */
static gboolean
probe_pdl (CudaBackend *cb)
{
#ifdef DDPM_CUDA_EMU
  (void) cb;
  return FALSE;                          /* the emulator runs kernels in order: nothing to overlap */
#else
  if (cb->cc_major < 9)
    return FALSE;
  unsigned long long count = 0;
  cudaGraph_t graph = NULL;
  cudaGraphExec_t exec = NULL;
  cudaLaunchAttribute attr;
  const cudaLaunchConfig_t config = pdl_config (cb, dim3 (4), dim3 (32), 0, &attr);
  gboolean ok = cudaMemsetAsync (cb->counter, 0, sizeof count, cb->stream) == cudaSuccess
                && cudaStreamBeginCapture (cb->stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
  if (ok)
    {
      ok = cudaLaunchKernelEx (&config, pdl_probe_kernel, cb->counter) == cudaSuccess
           && cudaLaunchKernelEx (&config, pdl_probe_kernel, cb->counter) == cudaSuccess;
      ok = cudaStreamEndCapture (cb->stream, &graph) == cudaSuccess && ok;
    }
  ok = ok && cudaGraphInstantiate (&exec, graph, 0) == cudaSuccess && cudaGraphLaunch (exec, cb->stream) == cudaSuccess
       && cudaMemcpyAsync (&count, cb->counter, sizeof count, cudaMemcpyDeviceToHost, cb->stream) == cudaSuccess
       && cudaStreamSynchronize (cb->stream) == cudaSuccess && count == 8;
  if (exec != NULL)
    cudaGraphExecDestroy (exec);
  if (graph != NULL)
    cudaGraphDestroy (graph);
  cudaGetLastError ();                   /* a failed probe leaves no error behind */
  return ok;
#endif
}

/* $name as a number (atoi), 0 when unset: the run-time switches of tests and tuning runs */
static int
env_int (const char *name)
{
  const char *v = g_getenv (name);
  return v != NULL ? atoi (v) : 0;
}

extern "C" __attribute__ ((visibility ("default"))) DdpmBackend *
ddpm_cuda_backend_create (DdpmPrecision precision, GError **error)
{
  int count = 0;
  cudaError_t e = cudaGetDeviceCount (&count);
  if (e != cudaSuccess || count == 0)
    {
      set_no_device (error, e);
      cudaGetLastError ();
      return NULL;
    }
  const int device = env_int ("DDPM_CUDA_DEVICE");
  if (device < 0 || device >= count)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_DEVICE, "DDPM_CUDA_DEVICE=%d but only %d CUDA device(s) exist",
                   device, count);
      return NULL;
    }
  struct cudaDeviceProp prop;
  if (cudaSetDevice (device) != cudaSuccess || cudaGetDeviceProperties (&prop, device) != cudaSuccess)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_DEVICE, "CUDA device %d cannot be opened: %s", device,
                   cudaGetErrorString (cudaGetLastError ()));
      return NULL;
    }
  if (prop.major < 8)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_DEVICE,
                   "%s has compute capability %d.%d; the CUDA backend needs 8.0 or newer (Ampere, Ada, Hopper)",
                   prop.name, prop.major, prop.minor);
      return NULL;
    }

  CudaBackend *cb = g_new0 (CudaBackend, 1);
  cb->base.ops = &cuda_ops;
  cb->base.precision = precision == DDPM_PRECISION_DEFAULT ? DDPM_PRECISION_FP16 : precision;
  cb->act_type = cb->base.precision == DDPM_PRECISION_FP32 ? CT_F32
                 : cb->base.precision == DDPM_PRECISION_BF16 ? CT_BF16 : CT_F16;
  cb->act_size = cb->act_type == CT_F32 ? 4 : 2;
  cb->device = device;
  cb->sm_count = prop.multiProcessorCount;
  cb->smem_per_block_optin = prop.sharedMemPerBlockOptin;
  const int limit = env_int ("DDPM_CUDA_SMEM_LIMIT");   /* tests: a smaller GPU's limit */
  if (limit > 0 && (size_t) limit < cb->smem_per_block_optin)
    cb->smem_per_block_optin = (size_t) limit;
  cb->cc_major = prop.major;
  cb->cc_minor = prop.minor;
  g_snprintf (cb->base.description, sizeof cb->base.description, "cuda: %s", prop.name);

  /* each forward looks its time projections up (engine/unet.h ddpm_unet_prepare_timesteps): 3 launches fewer */
  cb->base.time_table = g_strcmp0 (g_getenv ("DDPM_CUDA_TIME_TABLE"), "0") != 0;

  GError *local = NULL;
  if (!cuda_ok (cb, cudaStreamCreateWithFlags (&cb->stream, cudaStreamNonBlocking), "cudaStreamCreate")
      || (cb->gn_stats = (float *) device_alloc (cb, CUDA_GN_STATS_ENTRIES * 3 * sizeof (float), "GroupNorm "
                                                 "statistics", &local)) == NULL
      || (cb->counter = (unsigned long long *) device_alloc (cb, sizeof (unsigned long long), "a counter",
                                                             &local)) == NULL
      || (cb->conv_counters = (int *) device_alloc (cb, CUDA_CONV_COUNTERS * sizeof (int), "split-K counters",
                                                    &local)) == NULL
      || !cuda_ok (cb, cudaMemset (cb->conv_counters, 0, CUDA_CONV_COUNTERS * sizeof (int)), "cudaMemset")
      || !cuda_ok (cb, cudaMallocHost ((void **) &cb->staging, (size_t) CUDA_STAGING_SLOTS * CUDA_STAGING_SLOT_BYTES),
                   "cudaMallocHost"))
    {
      if (local == NULL)
        take_error (cb, &local);
      g_propagate_error (error, local);
      cuda_destroy (&cb->base);
      return NULL;
    }
  for (int i = 0; i < CUDA_STAGING_SLOTS; i++)
    if (!cuda_ok (cb, cudaEventCreateWithFlags (&cb->staging_events[i], cudaEventDisableTiming), "cudaEventCreate"))
      {
        take_error (cb, error);
        cuda_destroy (&cb->base);
        return NULL;
      }

  cuda_flash_mma_prepare (cb);
  cuda_profile_init (cb);
  if (cb->profile != NULL)
    cb->base.ops = &cuda_ops_eager;
  /* programmatic dependent launch where it works, unless $DDPM_CUDA_PDL=0 or profiling (the profile's events
   * between kernels would serialise them anyway) */
  cb->pdl = cb->profile == NULL && g_strcmp0 (g_getenv ("DDPM_CUDA_PDL"), "0") != 0 && probe_pdl (cb);
  char *blas_note = NULL;
  cb->have_blas = setup_blas (cb, &blas_note);
  g_strlcpy (cb->blas_note, blas_note, sizeof cb->blas_note);
  g_free (blas_note);
  g_strlcpy (cb->device_name, prop.name, sizeof cb->device_name);
  /* the switches after PDL is decided (the convolution cluster probe launches as a graph would) */
  cuda_variants_init (cb);
  use_variant (cb, "");
  const char *unmet = cuda_switches_unmet (cb);
  if (unmet != NULL)
    g_message ("CUDA backend: %s; the defaults run instead", unmet);
  return &cb->base;
}
