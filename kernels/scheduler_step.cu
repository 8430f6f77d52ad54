/* scheduler_step.cu: the DDPM/DDIM update (scheduler.h) and Philox Gaussian noise, bit-compatible with
 * the CPU (ddpm_step_cpu, ddpm_randn): the same float operations in the same order, each rounded (the
 * __f*_rn intrinsics keep nvcc from fusing them into FMAs), and the same Philox draw from philox.h.
 * The step reads its coefficients from device memory (params_dev, written by write_params outside the
 * graph), so one captured graph serves every step. */
#include "cuda_backend.cuh"

#include "philox.h"

#define STEP_THREADS 256

__global__ void __launch_bounds__ (STEP_THREADS)
scheduler_step_kernel (const DdpmStepParams *__restrict__ params, float *__restrict__ x,
                       const float *__restrict__ model_out, const float *__restrict__ noise,
                       float *__restrict__ x0_out, size_t n_per_image, int batch)
{
  grid_dependency_wait ();
  const DdpmStepParams p = *params;
  const size_t n = n_per_image * (size_t) batch;
  GRID_STRIDE (k, n)
    {
      const size_t b = k / n_per_image, e = k % n_per_image;
      const float xv = x[k], m = model_out[k];
      float z = 0.0f;
      if (noise != NULL)
        z = noise[k];
      else if (p.draw_noise)
        z = ddpm_philox_normal (p.seed + (uint64_t) b, p.stream, (uint64_t) e);
      float x0 = __fdiv_rn (__fadd_rn (__fmul_rn (p.pred_x, xv), __fmul_rn (p.pred_m, m)), p.pred_div);
      if (p.clip > 0.0f)
        {
          if (x0 < -p.clip)
            x0 = -p.clip;
          else if (x0 > p.clip)
            x0 = p.clip;             /* NaN passes through, as torch.clamp */
        }
      const float eps = __fdiv_rn (__fadd_rn (__fmul_rn (p.eps_x, xv), __fmul_rn (p.eps_m, m)), p.eps_div);
      float y = __fadd_rn (__fadd_rn (__fmul_rn (p.c_x0, x0), __fmul_rn (p.c_x, xv)), __fmul_rn (p.c_eps, eps));
      if (p.draw_noise)
        y = __fadd_rn (y, __fmul_rn (p.sigma, z));
      x[k] = y;
      if (x0_out != NULL)
        x0_out[k] = x0;
    }
}

void
cuda_scheduler_step (DdpmBackend *be, const void *params_dev, float *x, const float *model_out, const float *noise,
                     float *x0_out, size_t n_per_image, int batch)
{
  CudaBackend *cb = cuda_backend (be);
  size_t n = n_per_image * (size_t) batch;
  if (n == 0)
    return;
  launch (cb, "scheduler_step", elementwise_blocks (cb, n, STEP_THREADS), STEP_THREADS, 0, scheduler_step_kernel,
          (const DdpmStepParams *) params_dev, x, model_out, noise, x0_out, n_per_image, batch);
}

__global__ void __launch_bounds__ (STEP_THREADS)
randn_kernel (float *__restrict__ y, uint64_t seed, uint64_t stream, size_t n_per_image, int batch)
{
  grid_dependency_wait ();
  const size_t n = n_per_image * (size_t) batch;
  GRID_STRIDE (k, n)
    {
      const size_t b = k / n_per_image, e = k % n_per_image;
      y[k] = ddpm_philox_normal (seed + (uint64_t) b, stream, (uint64_t) e);
    }
}

void
cuda_randn (DdpmBackend *be, float *y, uint64_t seed, uint64_t stream, size_t n_per_image, int batch)
{
  CudaBackend *cb = cuda_backend (be);
  size_t n = n_per_image * (size_t) batch;
  if (n == 0)
    return;
  launch (cb, "randn", elementwise_blocks (cb, n, STEP_THREADS), STEP_THREADS, 0, randn_kernel, y, seed, stream,
          n_per_image, batch);
}
