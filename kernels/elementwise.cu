/* elementwise.cu: the memory-bound ops (casts, channel bias, residual add, concatenation, nearest
 * upsampling, non-finite count). NCHW; arithmetic in float, one rounding to the activation type.
 *
 * Every kernel is a grid-stride loop over output elements, so any size runs on a bounded grid. Where a
 * row length allows, threads move 8 elements (16 bytes at fp16) at a time: these ops are pure bandwidth. */
#include "cuda_backend.cuh"

#define EW_THREADS 256

/* ---- casts ---- */

template <typename T>
__global__ void __launch_bounds__ (EW_THREADS) cast_in_kernel (const float *__restrict__ x, T *__restrict__ y, size_t n)
{
  grid_dependency_wait ();
  GRID_STRIDE (i, n) y[i] = from_f32<T> (x[i]);
}

template <typename T>
__global__ void __launch_bounds__ (EW_THREADS) cast_out_kernel (const T *__restrict__ x, float *__restrict__ y, size_t n)
{
  grid_dependency_wait ();
  GRID_STRIDE (i, n) y[i] = to_f32<T> (x[i]);
}

void
cuda_cast_in (DdpmBackend *be, const float *x, void *y, size_t n)
{
  CudaBackend *cb = cuda_backend (be);
  if (n == 0)
    return;
  if (cb->act_type == CT_F32)
    {
      cuda_flush_reduce (cb);
      if ((const void *) x != y)
        cuda_ok (cb, cudaMemcpyAsync (y, x, n * sizeof (float), cudaMemcpyDeviceToDevice, cb->stream), "cast_in");
      return;
    }
  DISPATCH_ACT (cb, T, launch (cb, "cast_in", elementwise_blocks (cb, n, EW_THREADS), EW_THREADS, 0,
                               cast_in_kernel<T>, x, (T *) y, n));
}

void
cuda_cast_out (DdpmBackend *be, const void *x, float *y, size_t n)
{
  CudaBackend *cb = cuda_backend (be);
  if (n == 0)
    return;
  if (cb->act_type == CT_F32)
    {
      if (x != (const void *) y)
        cuda_ok (cb, cudaMemcpyAsync (y, x, n * sizeof (float), cudaMemcpyDeviceToDevice, cb->stream), "cast_out");
      return;
    }
  DISPATCH_ACT (cb, T, launch (cb, "cast_out", elementwise_blocks (cb, n, EW_THREADS), EW_THREADS, 0,
                               cast_out_kernel<T>, (const T *) x, y, n));
}

/* ---- row gather (the time table's lookup) ---- */

/* y (B, row_elems) = row row_of[clamp((int) index[b], 0, n - 1)] of table, NaN where that row is negative (a
 * timestep never prepared); element by element (a forward gathers B rows of ~5000-10000 values: one small
 * launch). */
template <typename T>
__global__ void __launch_bounds__ (EW_THREADS)
gather_rows_kernel (const T *__restrict__ table, const float *__restrict__ row_of, int n,
                    const float *__restrict__ index, T *__restrict__ y, int row_elems, size_t total)
{
  grid_dependency_wait ();
  GRID_STRIDE (i, total)
    {
      const size_t b = i / (size_t) row_elems;
      const int r = (int) row_of[imin (imax ((int) index[b], 0), n - 1)];
      y[i] = r >= 0 ? table[(size_t) r * row_elems + i % (size_t) row_elems] : from_f32<T> (NAN);
    }
}

void
cuda_gather_rows (DdpmBackend *be, const void *table, const float *row_of, int n, const float *index, void *y, int B,
                  int row_elems)
{
  CudaBackend *cb = cuda_backend (be);
  const size_t total = (size_t) B * row_elems;
  if (total == 0 || n < 1)
    return;
  DISPATCH_ACT (cb, T, launch (cb, "gather_rows", elementwise_blocks (cb, total, EW_THREADS), EW_THREADS, 0,
                               gather_rows_kernel<T>, (const T *) table, row_of, n, index, (T *) y, row_elems, total));
}

/* ---- per-channel additions ---- */

/* Index into v of channel plane b * C + c: per image, C values stride apart; else v (C) shared by all. */
__device__ __forceinline__ size_t
channel_index (size_t plane, int C, bool per_image, int stride)
{
  return per_image ? plane / (size_t) C * (size_t) stride + plane % (size_t) C : plane % (size_t) C;
}

/* h (B, C, HW) += v[channel_index]; v of type V (act for add_channel_bias, float for conv biases with
 * per_image = false). */
template <typename T, typename V>
__global__ void __launch_bounds__ (EW_THREADS)
channel_add_kernel (T *__restrict__ h, const V *__restrict__ v, int C, int HW, size_t n, bool per_image, int stride)
{
  grid_dependency_wait ();
  GRID_STRIDE (i, n)
    {
      size_t plane = i / (size_t) HW;                 /* b * C + c */
      size_t vi = channel_index (plane, C, per_image, stride);
      h[i] = from_f32<T> (to_f32<T> (h[i]) + to_f32<V> (v[vi]));
    }
}

/* The same on 16-byte vectors (HW a multiple of Vec16<T>::N, so a vector lies in one channel plane). */
template <typename T, typename V>
__global__ void __launch_bounds__ (EW_THREADS)
channel_add_vec_kernel (T *__restrict__ h, const V *__restrict__ v, int C, int HW, size_t nv, bool per_image,
                        int stride)
{
  grid_dependency_wait ();
  constexpr int N = Vec16<T>::N;
  GRID_STRIDE (k, nv)
    {
      const size_t i = k * N, plane = i / (size_t) HW;
      add16<T> (h + i, to_f32<V> (v[channel_index (plane, C, per_image, stride)]));
    }
}

template <typename T, typename V>
static void
channel_add (CudaBackend *cb, const char *name, T *h, const V *v, int B, int C, int HW, bool per_image, int stride)
{
  const size_t n = (size_t) B * C * HW;
  constexpr int N = Vec16<T>::N;
  if (HW % N == 0 && aligned16 (h))
    launch (cb, name, elementwise_blocks (cb, n / N, EW_THREADS), EW_THREADS, 0, channel_add_vec_kernel<T, V>, h, v, C,
            HW, n / N, per_image, stride);
  else
    launch (cb, name, elementwise_blocks (cb, n, EW_THREADS), EW_THREADS, 0, channel_add_kernel<T, V>, h, v, C, HW, n,
            per_image, stride);
}

void
cuda_add_channel_bias_strided (CudaBackend *cb, void *h, const void *v, int B, int C, int HW, int stride)
{
  if ((size_t) B * C * HW == 0)
    return;
  DISPATCH_ACT (cb, T, channel_add<T, T> (cb, "add_channel_bias", (T *) h, (const T *) v, B, C, HW, true, stride));
}

void
cuda_add_channel_bias (DdpmBackend *be, void *h, const void *v, int B, int C, int HW)
{
  cuda_add_channel_bias_strided (cuda_backend (be), h, v, B, C, HW, C);
}

void
cuda_add_bias (CudaBackend *cb, void *y, const float *bias, int B, int C, int HW)
{
  if ((size_t) B * C * HW == 0 || bias == NULL)
    return;
  DISPATCH_ACT (cb, T, channel_add<T, float> (cb, "add_bias", (T *) y, bias, B, C, HW, false, C));
}

/* ---- y = (a + b) * scale ---- */

template <typename T>
__global__ void __launch_bounds__ (EW_THREADS)
add_scaled_kernel (const T *a, const T *b, T *y, size_t n, float scale)
{
  grid_dependency_wait ();
  /* no __restrict__: y may alias a or b (each element is read before it is written by the same thread) */
  GRID_STRIDE (i, n) y[i] = from_f32<T> ((to_f32<T> (a[i]) + to_f32<T> (b[i])) * scale);
}

/* The same on 16-byte vectors: nv = n / Vec16<T>::N vectors. */
template <typename T>
__global__ void __launch_bounds__ (EW_THREADS)
add_scaled_vec_kernel (const T *a, const T *b, T *y, size_t nv, float scale)
{
  grid_dependency_wait ();
  constexpr int N = Vec16<T>::N;
  GRID_STRIDE (v, nv)
    {
      float fa[N], fb[N];
      load16<T> (a + v * N, fa);
      load16<T> (b + v * N, fb);
#pragma unroll
      for (int j = 0; j < N; j++)
        fa[j] = (fa[j] + fb[j]) * scale;
      store16<T> (y + v * N, fa);
    }
}

void
cuda_add_scaled (DdpmBackend *be, const void *a, const void *b, void *y, size_t n, float scale)
{
  CudaBackend *cb = cuda_backend (be);
  if (n == 0)
    return;
  DISPATCH_ACT (cb, T, {
    constexpr int N = Vec16<T>::N;
    if (n % N == 0 && aligned16 (a) && aligned16 (b) && aligned16 (y))
      launch (cb, "add_scaled", elementwise_blocks (cb, n / N, EW_THREADS), EW_THREADS, 0, add_scaled_vec_kernel<T>,
              (const T *) a, (const T *) b, (T *) y, n / N, scale);
    else
      launch (cb, "add_scaled", elementwise_blocks (cb, n, EW_THREADS), EW_THREADS, 0, add_scaled_kernel<T>,
              (const T *) a, (const T *) b, (T *) y, n, scale);
  });
}

/* ---- concatenation along channels ---- */

/* Copies in units of U (uint4 = 16 bytes when every plane boundary allows, else T). */
template <typename U>
__global__ void __launch_bounds__ (EW_THREADS)
concat_kernel (const U *__restrict__ a, size_t na, const U *__restrict__ b, size_t nb, U *__restrict__ y, size_t n)
{
  grid_dependency_wait ();
  /* na, nb: units per image of a and b; n = B * (na + nb) */
  GRID_STRIDE (i, n)
    {
      size_t img = i / (na + nb), r = i % (na + nb);
      y[i] = r < na ? a[img * na + r] : b[img * nb + (r - na)];
    }
}

void
cuda_concat_channels (DdpmBackend *be, const void *a, int Ca, const void *b, int Cb, void *y, int B, int HW)
{
  CudaBackend *cb = cuda_backend (be);
  size_t na_bytes = (size_t) Ca * HW * cb->act_size, nb_bytes = (size_t) Cb * HW * cb->act_size;
  size_t n_bytes = (size_t) B * (na_bytes + nb_bytes);
  if (n_bytes == 0)
    return;
  bool vec = na_bytes % 16 == 0 && nb_bytes % 16 == 0 && ((uintptr_t) a | (uintptr_t) b | (uintptr_t) y) % 16 == 0;
  if (vec)
    {
      size_t n = n_bytes / 16;
      launch (cb, "concat_channels", elementwise_blocks (cb, n, EW_THREADS), EW_THREADS, 0, concat_kernel<uint4>,
              (const uint4 *) a, na_bytes / 16, (const uint4 *) b, nb_bytes / 16, (uint4 *) y, n);
    }
  else
    {
      size_t n = n_bytes / 2;   /* act_size is 2 or 4: copy 16-bit units */
      launch (cb, "concat_channels", elementwise_blocks (cb, n, EW_THREADS), EW_THREADS, 0, concat_kernel<uint16_t>,
              (const uint16_t *) a, na_bytes / 2, (const uint16_t *) b, nb_bytes / 2, (uint16_t *) y, n);
    }
}

/* ---- nearest-neighbour x2 ---- */

template <typename T>
__global__ void __launch_bounds__ (EW_THREADS)
upsample2x_kernel (const T *__restrict__ x, T *__restrict__ y, int H, int W, size_t n)
{
  grid_dependency_wait ();
  /* one thread per output element; n = B * C * 2H * 2W */
  const int W2 = 2 * W, H2 = 2 * H;
  GRID_STRIDE (i, n)
    {
      int ox = (int) (i % (size_t) W2);
      size_t r = i / (size_t) W2;
      int oy = (int) (r % (size_t) H2);
      size_t plane = r / (size_t) H2;
      y[i] = x[(plane * H + (size_t) (oy >> 1)) * W + (size_t) (ox >> 1)];
    }
}

/* The same, a 16-byte vector of one output row per thread (2W a multiple of Vec16<T>::N): half as many
 * inputs, each written twice; one set of index divisions per vector. Conversions to float and back are
 * exact, so the bits are those of the copy. */
template <typename T>
__global__ void __launch_bounds__ (EW_THREADS)
upsample2x_vec_kernel (const T *__restrict__ x, T *__restrict__ y, int H, int W, size_t nv)
{
  grid_dependency_wait ();
  constexpr int N = Vec16<T>::N;
  const int H2 = 2 * H, per_row = 2 * W / N;
  GRID_STRIDE (k, nv)
    {
      const int vx = (int) (k % (size_t) per_row);
      const size_t r = k / (size_t) per_row;
      const int oy = (int) (r % (size_t) H2);
      const size_t plane = r / (size_t) H2;
      const T *src = x + (plane * H + (size_t) (oy >> 1)) * W + (size_t) vx * (N / 2);
      float f[N];
#pragma unroll
      for (int j = 0; j < N; j++)
        f[j] = to_f32<T> (src[j >> 1]);
      store16<T> (y + k * N, f);
    }
}

void
cuda_upsample_nearest2x (DdpmBackend *be, const void *x, void *y, int B, int C, int H, int W)
{
  CudaBackend *cb = cuda_backend (be);
  size_t n = (size_t) B * C * 4 * H * W;
  if (n == 0)
    return;
  DISPATCH_ACT (cb, T, {
    constexpr int N = Vec16<T>::N;
    if ((2 * W) % N == 0 && aligned16 (y))
      launch (cb, "upsample_nearest2x", elementwise_blocks (cb, n / N, EW_THREADS), EW_THREADS, 0,
              upsample2x_vec_kernel<T>, (const T *) x, (T *) y, H, W, n / N);
    else
      launch (cb, "upsample_nearest2x", elementwise_blocks (cb, n, EW_THREADS), EW_THREADS, 0, upsample2x_kernel<T>,
              (const T *) x, (T *) y, H, W, n);
  });
}

/* ---- non-finite count (synchronous) ---- */

__global__ void __launch_bounds__ (EW_THREADS)
count_nonfinite_kernel (const float *__restrict__ x, size_t n, unsigned long long *count)
{
  grid_dependency_wait ();
  __shared__ float red[32];
  float local = 0.0f;
  GRID_STRIDE (i, n) local += isfinite (x[i]) ? 0.0f : 1.0f;
  /* per-thread counts are small integers, exact in float; the block total too (< 2^24 per block pass) */
  float total = block_sum (local, red);
  if (threadIdx.x == 0 && total > 0.0f)
    atomicAdd (count, (unsigned long long) total);
}

size_t
cuda_count_nonfinite (DdpmBackend *be, const float *x, size_t n)
{
  CudaBackend *cb = cuda_backend (be);
  if (cb->capturing)
    {
      cuda_fail (cb, DDPM_ERROR_DEVICE, "count_nonfinite called during graph capture");
      return n;
    }
  if (n == 0)
    return 0;
  unsigned long long count = 0;
  cuda_flush_reduce (cb);
  cuda_ok (cb, cudaMemsetAsync (cb->counter, 0, sizeof count, cb->stream), "cudaMemsetAsync");
  launch (cb, "count_nonfinite", elementwise_blocks (cb, n, EW_THREADS), EW_THREADS, 0, count_nonfinite_kernel, x, n,
          cb->counter);
  cuda_ok (cb, cudaMemcpyAsync (&count, cb->counter, sizeof count, cudaMemcpyDeviceToHost, cb->stream),
           "cudaMemcpyAsync");
  cuda_ok (cb, cudaStreamSynchronize (cb->stream), "count_nonfinite");
  /* After a device failure nothing computed can be trusted: report every value as bad (the warning and
   * check_error carry the reason). */
  return cb->error != NULL ? n : (size_t) count;
}
