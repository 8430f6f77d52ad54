/* wgmma.cuh: Hopper's warpgroup-level tensor-core instructions (sm_90a only) for conv2d_wgmma.cu, as inline PTX;
 * the emulator runs them thread by thread with the same fragment layout and operand addressing
 * (emu/cuda_emu.h).
 *
 * wgmma.mma_async: the 128 threads of a warpgroup together compute D (64 x N, float, in registers) += A (64 x
 * 16) B (16 x N), A and B read by the tensor cores straight from shared memory through 64-bit matrix
 * descriptors, asynchronously: issue (after wgmma_fence), commit the group, and wait for it before d or the
 * shared operands are touched again. Why: mma.sync feeds the tensor cores from registers a warp at a time
 * (ldmatrix, then 32 mma per 16 of K in the 128 x 128 tile) and on an H100/H200 reaches about half of what
 * wgmma does (~100-130 TFLOP/s measured for our mma.sync / WMMA convolutions, against ~990 peak).
 *
 * Operand layout used here (the one descriptor form the emulator knows): K-major, 128-byte swizzle. A row
 * of 64 16-bit values (128 bytes) per M (A) or N (B) index; rows 128 bytes apart, 8-row groups 1024 bytes
 * apart (the stride byte offset); 16-byte chunk c of row r stored at chunk c ^ (r % 8). The hardware applies
 * the swizzle to address bits (bits 4..6 ^= bits 7..9), so a tile must start 1024-byte aligned; the k-th 16
 * values of K start 32 k bytes into the rows (descriptor start + 32 k). Accumulator fragment (m64nNk16,
 * f32): warp w of the warpgroup holds rows 16 w + lane / 4 and + 8; register 4 j + e is column 8 j + 2 (lane
 * % 4) + (e & 1), row + 8 when e >= 2. */
#pragma once

#include "cuda_compat.cuh"

/* WGMMA_COMPILED: 1 where this compilation has wgmma (the sm_90a machine code, and the emulator). Kernels
 * keep their bodies under it; the host asks cuda_wgmma_probe before it launches them. */
#if defined(DDPM_CUDA_EMU) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WGMMA_COMPILED 1
#else
#define WGMMA_COMPILED 0
#endif

/* The shared-window address of p (in dynamic shared memory). */
__device__ __forceinline__ uint32_t
smem_address (const void *p)
{
#ifdef DDPM_CUDA_EMU
  return emu_smem_address (p);
#else
  return (uint32_t) __cvta_generic_to_shared (p);
#endif
}

/* Descriptor of a K-major, 128-byte-swizzled operand whose first row starts at shared address addr: start
 * >> 4 in bits 0..13, leading byte offset 16 (unused by this layout) in 16..29, stride byte offset 1024 >> 4
 * in 32..45, base offset 0, swizzle mode 1 (128 bytes) in bits 62..63. */
__device__ __forceinline__ uint64_t
wgmma_desc_sw128 (uint32_t addr)
{
  return (uint64_t) ((addr & 0x3ffff) >> 4) | ((uint64_t) 1 << 16) | ((uint64_t) (1024 >> 4) << 32)
         | ((uint64_t) 1 << 62);
}

#ifdef DDPM_CUDA_EMU
static inline void wgmma_fence (void) {}
static inline void fence_proxy_async_shared (void) { emu_fence_proxy_async (); }
static inline void wgmma_commit (void) { emu_wgmma_commit (); }
template <int N> static inline void wgmma_wait (void) { emu_wgmma_wait (N); }
template <typename T, int NR>
static inline void
wgmma_m64k16 (float (&d)[NR], uint64_t desc_a, uint64_t desc_b, int scale_d)
{
  static_assert (NR == 64 || NR == 128, "m64n128k16 or m64n256k16");
  emu_wgmma_m64nNk16 (d, 2 * NR, desc_a, desc_b, scale_d, std::is_same<T, __nv_bfloat16>::value);
}
template <int N> static inline void wgmma_fence_regs (float (&)[N]) {}
#else
/* Orders the warpgroup's earlier register accesses (of the accumulators) before the next wgmma.mma_async. */
__device__ __forceinline__ void
wgmma_fence (void)
{
#if WGMMA_COMPILED
  asm volatile ("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

/* Makes this thread's completed writes to shared memory (stores, landed cp.async) visible to the async proxy
 * that wgmma reads through: after the copies' wait, before the barrier that lets wgmma read them. */
__device__ __forceinline__ void
fence_proxy_async_shared (void)
{
#if WGMMA_COMPILED
  asm volatile ("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void
wgmma_commit (void)
{
#if WGMMA_COMPILED
  asm volatile ("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

/* Waits until at most N committed groups of this warpgroup are still in flight. */
template <int N>
__device__ __forceinline__ void
wgmma_wait (void)
{
#if WGMMA_COMPILED
  asm volatile ("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

/* Tells the compiler the accumulators may change here (around wgmma issue and wait), so it neither moves
 * their reads before a wait nor keeps copies across one. */
template <int N>
__device__ __forceinline__ void
wgmma_fence_regs (float (&d)[N])
{
#pragma unroll
  for (int i = 0; i < N; i++)
    asm volatile ("" : "+f"(d[i])::"memory");
}

/* The accumulator operand lists of m64n128k16 (64 floats: registers 0..63) and m64n256k16 (128: the same
 * 64, then 64..127). */
#define WGMMA_REGS_0_63 \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, " \
  "%23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, " \
  "%44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define WGMMA_REGS_64_127 \
  "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, " \
  "%85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, " \
  "%105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, " \
  "%122, %123, %124, %125, %126, %127"
#define WGMMA_OPERANDS_0_63(d) \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), \
    "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), \
    "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), \
    "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), \
    "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), \
    "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), \
    "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), \
    "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
#define WGMMA_OPERANDS_64_127(d) \
    "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), \
    "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), \
    "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), \
    "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), \
    "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), \
    "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), \
    "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), \
    "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), \
    "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
#define WGMMA_D64 "{" WGMMA_REGS_0_63 "}"
#define WGMMA_D64_OPERANDS(d) WGMMA_OPERANDS_0_63 (d)
#define WGMMA_D128 "{" WGMMA_REGS_0_63 ", " WGMMA_REGS_64_127 "}"
#define WGMMA_D128_OPERANDS(d) WGMMA_OPERANDS_0_63 (d), WGMMA_OPERANDS_64_127 (d)

/* One wgmma.mma_async: SHAPE (m64nNk16), TYPES (f16.f16 or bf16.bf16), D / OPERANDS the accumulator list; the
 * descriptors and scale-d are operands IA, IB and IS (right after the accumulators). Both immediate scales 1,
 * no transposes. */
#define WGMMA_ASYNC(SHAPE, TYPES, D, OPERANDS, IA, IB, IS)                                                          \
  asm volatile ("{\n.reg .pred p;\nsetp.ne.b32 p, %" #IS ", 0;\n"                                                \
                "wgmma.mma_async.sync.aligned." SHAPE ".f32." TYPES " " D ", %" #IA ", %" #IB ", p, 1, 1, 0, 0;\n}\n"  \
                : OPERANDS (d)                                                                                      \
                : "l"(desc_a), "l"(desc_b), "r"(scale_d))

/* d (64 x N, this thread's N / 2 = NR of it) = A B^T + (scale_d ? d : 0); A: 64 rows, B: N rows of 16 K
 * values, both K-major descriptors; N = 128 (NR 64) or 256 (NR 128). */
template <typename T, int NR>
__device__ __forceinline__ void
wgmma_m64k16 (float (&d)[NR], uint64_t desc_a, uint64_t desc_b, int scale_d)
{
  static_assert (NR == 64 || NR == 128, "m64n128k16 or m64n256k16");
  static_assert (std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value, "fp16 or bf16");
#if WGMMA_COMPILED
  constexpr bool bf16 = std::is_same<T, __nv_bfloat16>::value;
  if constexpr (NR == 64 && !bf16)
    WGMMA_ASYNC ("m64n128k16", "f16.f16", WGMMA_D64, WGMMA_D64_OPERANDS, 64, 65, 66);
  else if constexpr (NR == 64)
    WGMMA_ASYNC ("m64n128k16", "bf16.bf16", WGMMA_D64, WGMMA_D64_OPERANDS, 64, 65, 66);
  else if constexpr (!bf16)
    WGMMA_ASYNC ("m64n256k16", "f16.f16", WGMMA_D128, WGMMA_D128_OPERANDS, 128, 129, 130);
  else
    WGMMA_ASYNC ("m64n256k16", "bf16.bf16", WGMMA_D128, WGMMA_D128_OPERANDS, 128, 129, 130);
#endif
}
#endif
