/* conv2d.cuh: what the convolution kernels share (conv2d.cu: implicit GEMM on NCHW and im2col + GEMM;
 * conv2d_nhwc.cu: implicit GEMM on a channels-last copy of the input). */
#pragma once

#include "cuda_backend.cuh"

/* Output tile width (pixels) and K slice of the implicit GEMMs. */
#define IG_BN 64
#define IG_BK 32

struct ConvShape {
  int B, Cin, H, W, Cout, k, stride, pad_top, pad_left, Ho, Wo;
  int K;                                /* Cin * k * k */
  int ldw;                              /* weight row stride (weight_ld) */
};

/* DdpmConvEpilogue, typed: what the implicit GEMM adds to conv + bias (in float) before its one rounding. */
template <typename T>
struct ConvEpi {
  const T *channel_bias;                /* image b's Cout values at b * cb_stride, or NULL */
  const T *residual;                    /* (B, Cout, Ho, Wo) or NULL; never y */
  int cb_stride;
  float scale;
};

/* The typed epilogue of e (NULL: none). */
template <typename T>
static inline ConvEpi<T>
conv_epi (const DdpmConvEpilogue *e, int Cout)
{
  if (e == NULL)
    return ConvEpi<T> { NULL, NULL, Cout, 1.0f };
  return ConvEpi<T> { (const T *) e->channel_bias, (const T *) e->residual,
                      e->channel_bias_stride > 0 ? e->channel_bias_stride : Cout, e->residual_scale };
}

/* y[bb][m][pix] = epilogue(v = conv + bias), in CPU order: + channel bias, then (residual + v) * scale. */
template <typename T>
__device__ __forceinline__ void
conv_store (T *y, const ConvEpi<T> &epi, float v, int Cout, int HoWo, int bb, int m, int pix)
{
  const size_t i = ((size_t) bb * Cout + m) * HoWo + pix;
  if (epi.channel_bias != NULL)
    v = __fadd_rn (v, to_f32<T> (epi.channel_bias[(size_t) bb * epi.cb_stride + m]));
  if (epi.residual != NULL)
    v = __fmul_rn (__fadd_rn (to_f32<T> (epi.residual[i]), v), epi.scale);
  y[i] = from_f32<T> (v);
}

/* conv2d_nhwc.cu: whether the channels-last kernel takes this shape (fp16/bf16, Cin a multiple of IG_BK, k 1
 * or 3), the scratch it needs (the channels-last copy of x), and the convolution itself. */
bool cuda_conv_nhwc_fits (const CudaBackend *cb, const ConvShape &s);
size_t cuda_conv_nhwc_scratch (const CudaBackend *cb, const ConvShape &s);
void cuda_conv_nhwc (CudaBackend *cb, const DdpmLinearW *w, const void *x, void *y, const ConvShape &s,
                     const DdpmConvEpilogue *epi);
