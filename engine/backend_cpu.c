/* backend_cpu.c: the CPU backend, the reference every other backend is tested against.
 * float32 activations (act == f32), NCHW; OpenBLAS for the GEMMs, OpenMP for all parallelism (the
 * threading model is described in cpu_ops.h). Memory is host memory, 64-byte aligned; device copies are
 * memcpy and synchronize is a no-op. */
#include "cpu_ops.h"
#include "fault.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* OpenBLAS' own thread control (cblas.h of the pthread and openmp builds both export it). */
void openblas_set_num_threads (int num_threads);

static void *
cpu_alloc_aligned (size_t n_bytes, const char *what, GError **error)
{
  void *p = NULL;
  if (n_bytes == 0)
    n_bytes = CPU_ALIGN;
  if (ddpm_fault_alloc_should_fail ()   /* tests: simulated exhaustion (fault.h) */
      || posix_memalign (&p, CPU_ALIGN, (n_bytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN) != 0)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_NOMEM, "cpu backend: cannot allocate %zu bytes for %s", n_bytes,
                   what);
      return NULL;
    }
  return p;
}

static void *
cpu_alloc_floats (size_t n, const char *what, GError **error)
{
  if (n > SIZE_MAX / sizeof (float) - CPU_ALIGN)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT, "cpu backend: %s of %zu floats exceeds the address space",
                   what, n);
      return NULL;
    }
  return cpu_alloc_aligned (n * sizeof (float), what, error);
}

static void
cpu_destroy (DdpmBackend *be)
{
  CpuBackend *cpu = cpu_backend (be);
  free (cpu->scratch);
  free (cpu->small);
  g_free (cpu);
}

static void *
cpu_alloc_act (DdpmBackend *be, size_t n, GError **error)
{
  return cpu_alloc_floats (n, "an activation buffer", error);
}

static void *
cpu_alloc_f32 (DdpmBackend *be, size_t n, GError **error)
{
  return cpu_alloc_floats (n, "a float32 buffer", error);
}

static void *
cpu_alloc_bytes (DdpmBackend *be, size_t n_bytes, GError **error)
{
  return cpu_alloc_aligned (n_bytes, "a parameter buffer", error);
}

static void
cpu_free (DdpmBackend *be, void *ptr)
{
  free (ptr);
}

/* Conv weights are repacked (cpu_conv_pack_weight); everything else is copied as is. */
static void *
cpu_upload_param (DdpmBackend *be, const float *host, DdpmParamKind kind, int ndim, const int64_t *shape,
                  GError **error)
{
  size_t n = 1;
  for (int i = 0; i < ndim; i++)
    n *= (size_t) shape[i];
  if (kind == DDPM_PARAM_CONV && ndim == 4 && shape[2] == shape[3])
    {
      int out = (int) shape[0], in = (int) shape[1], k = (int) shape[2];
      float *packed = cpu_alloc_floats (cpu_conv_pack_floats (out, in, k), "a conv weight", error);
      if (packed)
        cpu_conv_pack_weight (host, out, in, k, packed);
      return packed;
    }
  float *p = cpu_alloc_floats (n, "a parameter", error);
  if (p)
    memcpy (p, host, n * sizeof (float));
  return p;
}

static void
cpu_copy (DdpmBackend *be, void *dst, const void *src, size_t n_bytes)
{
  if (dst != src)
    memcpy (dst, src, n_bytes);
}

static gboolean
cpu_reserve_scratch (DdpmBackend *be, size_t n_bytes, GError **error)
{
  CpuBackend *cpu = cpu_backend (be);
  if (n_bytes <= cpu->scratch_bytes)
    return TRUE;
  float *p = cpu_alloc_aligned (n_bytes, "scratch", error);
  if (!p)
    return FALSE;
  free (cpu->scratch);
  cpu->scratch = p;
  cpu->scratch_bytes = n_bytes;
  return TRUE;
}

static void
cpu_synchronize (DdpmBackend *be)
{
}

static void
cpu_write_params (DdpmBackend *be, void *params_dev, const DdpmStepParams *host)
{
  memcpy (params_dev, host, sizeof *host);
}

static void
cpu_scheduler_step (DdpmBackend *be, const void *params_dev, float *x, const float *model_out, const float *noise,
                    float *x0_out, size_t n_per_image, int batch)
{
  ddpm_step_cpu (params_dev, x, model_out, noise, x0_out, n_per_image, batch);
}

/* Image b is stream `stream` of key seed + b; Philox is counter based, so chunks draw in parallel. */
static void
cpu_randn (DdpmBackend *be, float *y, uint64_t seed, uint64_t stream, size_t n_per_image, int batch)
{
  const size_t chunk = 16384;
  size_t n_chunks = (n_per_image + chunk - 1) / chunk;
  int64_t total = (int64_t) n_chunks * batch;
#pragma omp parallel for schedule (static) if (total > 1)
  for (int64_t i = 0; i < total; i++)
    {
      int b = (int) (i / (int64_t) n_chunks);
      size_t off = (size_t) (i % (int64_t) n_chunks) * chunk;
      size_t n = n_per_image - off < chunk ? n_per_image - off : chunk;
      ddpm_randn (seed + (uint64_t) b, stream, off, n, y + (size_t) b * n_per_image + off);
    }
}

static const DdpmBackendOps cpu_ops = {
  .name = "cpu",
  .destroy = cpu_destroy,
  .alloc_act = cpu_alloc_act,
  .alloc_f32 = cpu_alloc_f32,
  .alloc_bytes = cpu_alloc_bytes,
  .free = cpu_free,
  .upload_param = cpu_upload_param,
  .to_device = cpu_copy,
  .to_host = cpu_copy,
  .reserve_scratch = cpu_reserve_scratch,
  .synchronize = cpu_synchronize,
  .conv2d_scratch = cpu_conv2d_scratch,
  .attention_scratch = cpu_attention_scratch,
  .cast_in = cpu_cast_in,
  .cast_out = cpu_cast_out,
  .timestep_embedding = cpu_timestep_embedding,
  .linear = cpu_linear,
  .conv2d = cpu_conv2d,
  .group_norm = cpu_group_norm,
  .add_channel_bias = cpu_add_channel_bias,
  .add_scaled = cpu_add_scaled,
  .concat_channels = cpu_concat_channels,
  .upsample_nearest2x = cpu_upsample_nearest2x,
  .attention = cpu_attention,
  .write_params = cpu_write_params,
  .scheduler_step = cpu_scheduler_step,
  .randn = cpu_randn,
  .count_nonfinite = cpu_count_nonfinite,
  .graph_begin = NULL,
  .graph_end = NULL,
  .graph_launch = NULL,
  .graph_reset = NULL,
};

DdpmBackend *
ddpm_backend_cpu_new (GError **error)
{
  CpuBackend *cpu = g_new0 (CpuBackend, 1);
  cpu->base.ops = &cpu_ops;
  cpu->base.precision = DDPM_PRECISION_FP32;
  cpu->n_threads = omp_get_max_threads ();
  if (cpu->n_threads < 1)
    cpu->n_threads = 1;
  cpu->small = cpu_alloc_floats (CPU_SMALL_FLOATS, "the linear-layer buffer", error);
  if (!cpu->small)
    {
      g_free (cpu);
      return NULL;
    }
  /* All parallelism is ours (OpenMP); a second, OpenBLAS pool would spin against it. This is process
   * wide, like OpenBLAS' own OPENBLAS_NUM_THREADS. */
  openblas_set_num_threads (1);
  g_snprintf (cpu->base.description, sizeof cpu->base.description, "cpu (%d thread%s, OpenBLAS)", cpu->n_threads,
              cpu->n_threads == 1 ? "" : "s");
  return &cpu->base;
}
