/* rng.c: ddpm_randn, the host side of the engine's counter-based RNG (philox.h).
 *
 * Element e of stream s under key k is a pure function of (k, s, e), so the output does not depend on
 * how the range is split between threads, on the offset it is requested at, or on the device. */
#include "ddpm.h"
#include "philox.h"

/* Below this a parallel region costs more than it saves (~50 ns per draw). */
#define RANDN_PARALLEL_MIN 65536

void
ddpm_randn (uint64_t seed, uint64_t stream, uint64_t offset, size_t n, float *out)
{
  g_return_if_fail (out != NULL || n == 0);
#pragma omp parallel for schedule(static) if (n >= RANDN_PARALLEL_MIN)
  for (size_t i = 0; i < n; i++)
    out[i] = ddpm_philox_normal (seed, stream, offset + i);
}
