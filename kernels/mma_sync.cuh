/* mma_sync.cuh: the warp-level tensor-core instructions of the 128 x 128 convolution tile (conv2d_nhwc.cu) and the
 * attention core (flash_attention.cu), as inline PTX (sm_80+; the emulator has lane-by-lane versions with the same
 * fragment layouts in emu/cuda_emu.h).
 *
 * ldmatrix_x4: four 8 x 8 matrices of 16-bit values from shared memory; lanes 8q .. 8q + 7 give the
 *   addresses of matrix q's eight 16-byte rows, and r[q] receives row lane / 4, elements 2 (lane % 4) and
 *   2 (lane % 4) + 1 of matrix q. ldmatrix_x4_trans: the same of each matrix's transpose (r[q] gets rows
 *   2 (lane % 4) and 2 (lane % 4) + 1, element lane / 4): a fragment whose pairs run down a stored column.
 * mma_m16n8k16<T>: d (16 x 8, float) += A (16 x 16) B (16 x 8) with T = __half or __nv_bfloat16; with
 *   g = lane / 4, t = lane % 4: a = A[g][2t..], A[g+8][2t..], A[g][2t+8..], A[g+8][2t+8..];
 *   b = B[2t..][g], B[2t+8..][g]; d = D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1].
 * Why not WMMA: its fragments are opaque, so a kernel cannot feed them from a swizzled shared layout with
 * one ldmatrix per 16 x 16 operand, nor write results straight from registers. */
#pragma once

#include "cuda_compat.cuh"

#ifndef DDPM_CUDA_EMU
__device__ __forceinline__ void
ldmatrix_x4 (uint32_t (&r)[4], const void *row)
{
  const unsigned addr = (unsigned) __cvta_generic_to_shared (row);
  asm volatile ("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                : "r"(addr));
}

__device__ __forceinline__ void
ldmatrix_x4_trans (uint32_t (&r)[4], const void *row)
{
  const unsigned addr = (unsigned) __cvta_generic_to_shared (row);
  asm volatile ("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                : "r"(addr));
}

template <typename T>
__device__ __forceinline__ void mma_m16n8k16 (float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);

template <>
__device__ __forceinline__ void
mma_m16n8k16<__half> (float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2])
{
  asm volatile ("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                "{%0, %1, %2, %3};\n"
                : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <>
__device__ __forceinline__ void
mma_m16n8k16<__nv_bfloat16> (float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2])
{
  asm volatile ("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                "{%0, %1, %2, %3};\n"
                : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif
