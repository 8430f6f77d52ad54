/* philox.h: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11) and the
 * Gaussian draw built on it. Header-only so that the CPU engine and the CUDA kernels compute the very same
 * numbers: element e of stream s under key k depends on nothing else (not on threads, batch or device).
 *
 * Normal draw for element e: r = philox({e_lo, e_hi, s_lo, s_hi}, {k_lo, k_hi});
 * u1 = (r0 + 1) / 2^32 in (0, 1], u2 = r1 / 2^32 in [0, 1); z = sqrt(-2 ln u1) cos(2 pi u2), computed in
 * double and rounded to float (so CPU and GPU agree to float rounding). */
#pragma once

#include <stdint.h>
#include <math.h>

#ifdef __CUDACC__
#define DDPM_HD __host__ __device__ __forceinline__
#else
#define DDPM_HD static inline
#endif

#define DDPM_PHILOX_M0 0xD2511F53u
#define DDPM_PHILOX_M1 0xCD9E8D57u
#define DDPM_PHILOX_W0 0x9E3779B9u
#define DDPM_PHILOX_W1 0xBB67AE85u

DDPM_HD void
ddpm_philox4x32_10 (uint32_t ctr[4], uint32_t k0, uint32_t k1)
{
  for (int round = 0; round < 10; round++)
    {
      uint64_t p0 = (uint64_t) DDPM_PHILOX_M0 * ctr[0];
      uint64_t p1 = (uint64_t) DDPM_PHILOX_M1 * ctr[2];
      uint32_t hi0 = (uint32_t) (p0 >> 32), lo0 = (uint32_t) p0;
      uint32_t hi1 = (uint32_t) (p1 >> 32), lo1 = (uint32_t) p1;
      uint32_t c0 = hi1 ^ ctr[1] ^ k0;
      uint32_t c2 = hi0 ^ ctr[3] ^ k1;
      ctr[0] = c0;
      ctr[1] = lo1;
      ctr[2] = c2;
      ctr[3] = lo0;
      k0 += DDPM_PHILOX_W0;
      k1 += DDPM_PHILOX_W1;
    }
}

/* One N(0,1) float for element `element` of stream `stream` under key `key`. */
DDPM_HD float
ddpm_philox_normal (uint64_t key, uint64_t stream, uint64_t element)
{
  uint32_t ctr[4] = { (uint32_t) element, (uint32_t) (element >> 32), (uint32_t) stream, (uint32_t) (stream >> 32) };
  ddpm_philox4x32_10 (ctr, (uint32_t) key, (uint32_t) (key >> 32));
  const double inv_2_32 = 2.3283064365386963e-10; /* 2^-32 */
  double u1 = ((double) ctr[0] + 1.0) * inv_2_32;
  double u2 = (double) ctr[1] * inv_2_32;
  return (float) (sqrt (-2.0 * log (u1)) * cos (6.283185307179586 * u2));
}
