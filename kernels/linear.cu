/* linear.cu: y (M, N) = act(x (M, K)) W^T + b, W (N, K) stored with row stride weight_ld (act type), b
 * float32; act = SiLU when silu_in.
 *
 * In the UNet, M is the batch and this is the time-embedding MLP and the ResNets' stacked time_emb_proj: at
 * batch 1 a matrix-vector product bound by reading W once. One warp per output column reads W's row
 * coalesced against MT rows of x, so W is read ceil(M / MT) times (from L2 after the first). A block first
 * puts its MT rows of act(x) in shared memory: SiLU is evaluated once per block, not once per output
 * column (at batch 128 the stacked projection, 5632 columns, spent most of its 176-454 us on the H200 in
 * expf). Batch <= 4: 4 rows, one column per warp (many blocks); larger: 8 rows and 8 columns per warp, so W
 * is read half as often and each block's SiLU serves 64 columns. Every output is the same lane-strided
 * sum and warp reduction whichever shape runs, so the bits do not depend on it. Rows longer than the
 * shared copy read x from global memory and apply SiLU per use. */
#include "cuda_backend.cuh"

#define LINEAR_WARPS 8                 /* warps per block */
#define LINEAR_SMEM_FLOATS 8192        /* act(x) rows in shared memory: MT * K <= this */

template <typename T, int MT, int CPW, bool STAGED>
__global__ void __launch_bounds__ (LINEAR_WARPS * 32)
linear_kernel (const T *__restrict__ W, int ld, const float *__restrict__ bias, const T *__restrict__ x,
               T *__restrict__ y, int M, int N, int K, bool silu)
{
  grid_dependency_wait ();
  __shared__ float xs[STAGED ? LINEAR_SMEM_FLOATS : 1];     /* [MT][K] act(x) */
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int m0 = blockIdx.y * MT, mt = imin (MT, M - m0);
  if (STAGED)
    {
      for (int i = threadIdx.x; i < mt * K; i += blockDim.x)
        {
          const float v = to_f32<T> (x[(size_t) m0 * K + i]);
          xs[i] = silu ? silu_f (v) : v;
        }
      __syncthreads ();
    }
  for (int c = 0; c < CPW; c++)
    {
      const int n = (blockIdx.x * CPW + c) * LINEAR_WARPS + warp;
      if (n >= N)
        break;                         /* warp-uniform; no barrier follows */
      const T *w = W + (size_t) n * ld;
      float acc[MT];
#pragma unroll
      for (int j = 0; j < MT; j++)
        acc[j] = 0.0f;
      for (int k = lane; k < K; k += 32)
        {
          const float wv = to_f32<T> (w[k]);
#pragma unroll
          for (int j = 0; j < MT; j++)
            if (j < mt)
              {
                float xv;
                if (STAGED)
                  xv = xs[j * K + k];
                else
                  {
                    xv = to_f32<T> (x[(size_t) (m0 + j) * K + k]);
                    if (silu)
                      xv = silu_f (xv);
                  }
                acc[j] += wv * xv;
              }
        }
      const float b = bias != NULL ? bias[n] : 0.0f;
#pragma unroll
      for (int j = 0; j < MT; j++)
        {
          const float s = warp_sum (acc[j]);
          if (lane == 0 && j < mt)
            y[(size_t) (m0 + j) * N + n] = from_f32<T> (s + b);
        }
    }
}

template <typename T, int MT, int CPW>
static void
launch_linear (CudaBackend *cb, const DdpmLinearW *w, const void *x, void *y, int M, bool silu)
{
  const int N = w->out, K = w->in;
  const dim3 grid (ceil_div (N, LINEAR_WARPS * CPW), ceil_div (M, MT));
  if (MT * K <= LINEAR_SMEM_FLOATS)
    launch (cb, "linear", grid, LINEAR_WARPS * 32, 0, linear_kernel<T, MT, CPW, true>, (const T *) w->weight,
            weight_ld (w), (const float *) w->bias, (const T *) x, (T *) y, M, N, K, silu);
  else
    launch (cb, "linear", grid, LINEAR_WARPS * 32, 0, linear_kernel<T, MT, CPW, false>, (const T *) w->weight,
            weight_ld (w), (const float *) w->bias, (const T *) x, (T *) y, M, N, K, silu);
}

void
cuda_linear (DdpmBackend *be, const DdpmLinearW *w, const void *x, void *y, int M, gboolean silu_in)
{
  CudaBackend *cb = cuda_backend (be);
  if (M <= 0 || w->out <= 0)
    return;
  if (ceil_div (M, 4) > 65535)
    {
      cuda_fail (cb, DDPM_ERROR_LIMIT, "linear: %d rows exceed the kernel's grid limit", M);
      return;
    }
  if (M <= 4)
    DISPATCH_ACT (cb, T, (launch_linear<T, 4, 1> (cb, w, x, y, M, silu_in)));
  else
    DISPATCH_ACT (cb, T, (launch_linear<T, 8, 8> (cb, w, x, y, M, silu_in)));
}
