/* timestep_embedding.cu: diffusers' get_timestep_embedding, bit-compatible with the CPU backend.
 *
 * exponent_i = (-ln(10000) * i) / (half - freq_shift) in float32; freq_i = exp(exponent_i) and
 * sin/cos(t * freq_i) evaluated in double and rounded to float, i.e. correctly rounded float32 values as the
 * CPU computes them (arguments reach ~1000, where float sinf/cosf of the GPU would differ by an ulp of the
 * argument's scale). y (B, dim) = [sin, cos], or [cos, sin] with flip. B * dim is tiny: speed is moot. */
#include "cuda_backend.cuh"

template <typename T>
__global__ void __launch_bounds__ (256)
timestep_embedding_kernel (const float *__restrict__ t, T *__restrict__ y, int B, int dim, bool flip, float freq_shift)
{
  grid_dependency_wait ();
  const int half = dim / 2;
  const float neg_log_max = (float) -9.210340371976184; /* (float) -log(10000.0) */
  GRID_STRIDE (idx, (size_t) B * half)
    {
      const int b = (int) (idx / (size_t) half), i = (int) (idx % (size_t) half);
      float exponent = __fdiv_rn (__fmul_rn (neg_log_max, (float) i), __fsub_rn ((float) half, freq_shift));
      float freq = (float) exp ((double) exponent);
      float arg = __fmul_rn (t[b], freq);
      float s = (float) sin ((double) arg), c = (float) cos ((double) arg);
      T *row = y + (size_t) b * dim;
      row[flip ? half + i : i] = from_f32<T> (s);
      row[flip ? i : half + i] = from_f32<T> (c);
    }
}

void
cuda_timestep_embedding (DdpmBackend *be, const float *t, void *y, int B, int dim, gboolean flip, float freq_shift)
{
  CudaBackend *cb = cuda_backend (be);
  size_t n = (size_t) B * (dim / 2);
  if (n == 0)
    return;
  DISPATCH_ACT (cb, T, launch (cb, "timestep_embedding", elementwise_blocks (cb, n, 256), 256, 0,
                               timestep_embedding_kernel<T>, t, (T *) y, B, dim, (bool) flip, freq_shift));
}
