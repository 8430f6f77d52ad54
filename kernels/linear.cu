/* linear.cu: y (M, N) = act(x (M, K)) W^T + b, W (N, K) stored with row stride weight_ld (act type), b
 * float32; act = SiLU when silu_in.
 *
 * In the UNet, M is the batch and this is the time-embedding MLP and the ResNets' time_emb_proj: a
 * matrix-vector product bound by reading W once. One warp per output column n reads W's row n coalesced and
 * keeps LINEAR_MT rows of x in flight, so W is read ceil(M / LINEAR_MT) times (from L2 after the first).
 * SiLU is applied on the fly, so no scratch is needed. */
#include "cuda_backend.cuh"

#define LINEAR_WARPS 8                 /* output columns per block */
#define LINEAR_MT 4                    /* rows of x per warp */

template <typename T>
__global__ void __launch_bounds__ (LINEAR_WARPS * 32)
linear_kernel (const T *__restrict__ W, int ld, const float *__restrict__ bias, const T *__restrict__ x,
               T *__restrict__ y, int M, int N, int K, bool silu)
{
  grid_dependency_wait ();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n = blockIdx.x * LINEAR_WARPS + warp;
  const int m0 = blockIdx.y * LINEAR_MT;
  if (n >= N)
    return;                            /* the whole warp leaves together: no barrier follows */
  const T *w = W + (size_t) n * ld;
  float acc[LINEAR_MT];
#pragma unroll
  for (int j = 0; j < LINEAR_MT; j++)
    acc[j] = 0.0f;
  for (int k = lane; k < K; k += 32)
    {
      const float wv = to_f32<T> (w[k]);
#pragma unroll
      for (int j = 0; j < LINEAR_MT; j++)
        if (m0 + j < M)
          {
            float xv = to_f32<T> (x[(size_t) (m0 + j) * K + k]);
            if (silu)
              xv = silu_f (xv);
            acc[j] += wv * xv;
          }
    }
  const float b = bias != NULL ? bias[n] : 0.0f;
#pragma unroll
  for (int j = 0; j < LINEAR_MT; j++)
    {
      const float s = warp_sum (acc[j]);
      if (lane == 0 && m0 + j < M)
        y[(size_t) (m0 + j) * N + n] = from_f32<T> (s + b);
    }
}

void
cuda_linear (DdpmBackend *be, const DdpmLinearW *w, const void *x, void *y, int M, gboolean silu_in)
{
  CudaBackend *cb = cuda_backend (be);
  const int N = w->out, K = w->in;
  if (M <= 0 || N <= 0)
    return;
  if (ceil_div (M, LINEAR_MT) > 65535)
    {
      cuda_fail (cb, DDPM_ERROR_LIMIT, "linear: %d rows exceed the kernel's grid limit", M);
      return;
    }
  dim3 grid (ceil_div (N, LINEAR_WARPS), ceil_div (M, LINEAR_MT));
  DISPATCH_ACT (cb, T, launch (cb, "linear", grid, LINEAR_WARPS * 32, 0, linear_kernel<T>, (const T *) w->weight,
                               weight_ld (w), (const float *) w->bias, (const T *) x, (T *) y, M, N, K,
                               (bool) silu_in));
}
