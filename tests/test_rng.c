/* test_rng.c: Philox4x32-10 (philox.h) and ddpm_randn (rng.c).
 *
 * Known answers: the philox4x32 R=10 vectors of Random123's kat_vectors file (Salmon et al.). Then the
 * properties the engine relies on: the same numbers for the same (key, stream, element) whatever the
 * thread count or the offset they are requested at, and N(0,1) statistics (1e6 draws: |mean| < 0.005,
 * |var - 1| < 0.01, Kolmogorov-Smirnov distance below its 0.1% critical value 1.95 / sqrt(n)). */
#include "ddpm.h"
#include "philox.h"
#include "test_util.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  uint32_t ctr[4];
  uint32_t key[2];
  uint32_t want[4];
} PhiloxKat;

static void
test_philox_kat (void)
{
  static const PhiloxKat kat[] = {
    { { 0, 0, 0, 0 }, { 0, 0 }, { 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8 } },
    { { 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff }, { 0xffffffff, 0xffffffff },
      { 0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd } },
    { { 0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344 }, { 0xa4093822, 0x299f31d0 },
      { 0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1 } },
  };
  for (size_t k = 0; k < G_N_ELEMENTS (kat); k++)
    {
      uint32_t c[4];
      memcpy (c, kat[k].ctr, sizeof c);
      ddpm_philox4x32_10 (c, kat[k].key[0], kat[k].key[1]);
      g_test_message ("kat %zu: %08x %08x %08x %08x", k, c[0], c[1], c[2], c[3]);
      for (int j = 0; j < 4; j++)
        g_assert_cmphex (c[j], ==, kat[k].want[j]);
    }
}

/* ddpm_philox_normal's counter layout: {element lo, element hi, stream lo, stream hi}, key {lo, hi}. */
static void
test_normal_layout (void)
{
  const uint64_t key = 0x299f31d0a4093822ULL, stream = 0x0370734413198a2eULL, element = 0x85a308d3243f6a88ULL;
  /* From the third known answer: r0 = 0xd16cfe09, r1 = 0x94fdcceb. */
  const double u1 = ((double) 0xd16cfe09u + 1.0) / 4294967296.0, u2 = (double) 0x94fdccebu / 4294967296.0;
  const float want = (float) (sqrt (-2.0 * log (u1)) * cos (2.0 * G_PI * u2));
  const float got = ddpm_philox_normal (key, stream, element);
  g_test_message ("normal(key, stream, element of kat 3) = %.9g (want %.9g)", (double) got, (double) want);
  g_assert_cmpfloat (got, ==, want);
}

static void
test_determinism (void)
{
  enum { N = 4096 };
  g_autofree float *a = g_new (float, N), *b = g_new (float, N), *c = g_new (float, N), *d = g_new (float, N);
  ddpm_randn (42, 3, 0, N, a);
  ddpm_randn (42, 3, 0, N, b);
  g_assert_cmpmem (a, N * sizeof (float), b, N * sizeof (float));
  for (size_t i = 0; i < N; i++)
    g_assert_cmpfloat (a[i], ==, ddpm_philox_normal (42, 3, i));
  ddpm_randn (43, 3, 0, N, c);
  ddpm_randn (42, 4, 0, N, d);
  int same_seed = 0, same_stream = 0;
  for (size_t i = 0; i < N; i++)
    {
      same_seed += a[i] == c[i];
      same_stream += a[i] == d[i];
    }
  g_assert_cmpint (same_seed, <, 4);
  g_assert_cmpint (same_stream, <, 4);
  ddpm_randn (42, 3, 0, 0, NULL); /* n = 0 writes nothing */
}

/* Large enough to take the OpenMP path (rng.c: >= 65536). */
static void
test_thread_count (void)
{
  const size_t n = (1u << 20) + 17;
  g_autofree float *one = g_new (float, n), *two = g_new (float, n);
  const int saved = omp_get_max_threads ();
  omp_set_num_threads (1);
  ddpm_randn (7, 1, 5, n, one);
  omp_set_num_threads (2);
  ddpm_randn (7, 1, 5, n, two);
  omp_set_num_threads (saved);
  g_assert_cmpmem (one, n * sizeof (float), two, n * sizeof (float));
}

static void
test_offsets (void)
{
  const size_t n = 100000, k = 12345;
  g_autofree float *all = g_new (float, n + k), *part = g_new (float, n);
  ddpm_randn (9, 2, 0, n + k, all);
  ddpm_randn (9, 2, k, n, part);
  g_assert_cmpmem (part, n * sizeof (float), all + k, n * sizeof (float));
  /* Across the 2^32 element boundary the high counter word takes over. */
  float edge[6];
  const uint64_t start = (1ULL << 32) - 3;
  ddpm_randn (9, 2, start, 6, edge);
  for (int i = 0; i < 6; i++)
    g_assert_cmpfloat (edge[i], ==, ddpm_philox_normal (9, 2, start + (uint64_t) i));
  g_assert_cmpfloat (edge[3], !=, ddpm_philox_normal (9, 2, 0)); /* no wrap to element 0 */
}

static int
cmp_float (const void *a, const void *b)
{
  float x = *(const float *) a, y = *(const float *) b;
  return (x > y) - (x < y);
}

static void
test_moments (void)
{
  const size_t n = 1000000;
  g_autofree float *z = g_new (float, n);
  ddpm_randn (20240611, 0, 0, n, z);
  double sum = 0.0, sum2 = 0.0, sum3 = 0.0, sum4 = 0.0, zmax = 0.0;
  for (size_t i = 0; i < n; i++)
    {
      g_assert_true (isfinite (z[i]));
      double v = z[i];
      sum += v;
      sum2 += v * v;
      sum3 += v * v * v;
      sum4 += v * v * v * v;
      zmax = fmax (zmax, fabs (v));
    }
  const double mean = sum / n, var = sum2 / n - mean * mean;
  const double skew = sum3 / n, kurt = sum4 / n;

  /* Kolmogorov-Smirnov distance to Phi. */
  qsort (z, n, sizeof (float), cmp_float);
  double ks = 0.0;
  for (size_t i = 0; i < n; i++)
    {
      const double cdf = 0.5 * erfc (-z[i] / G_SQRT2);
      ks = fmax (ks, fmax (fabs ((double) (i + 1) / n - cdf), fabs ((double) i / n - cdf)));
    }
  const double ks_crit = 1.95 / sqrt ((double) n); /* alpha = 0.001 */

  /* Histogram over [-4, 4] in 0.5-wide bins: each bin within 5 sigma of its binomial expectation. */
  double worst_bin = 0.0;
  for (int b = 0; b < 16; b++)
    {
      const double lo = -4.0 + 0.5 * b, hi = lo + 0.5;
      const double p = 0.5 * erfc (-hi / G_SQRT2) - 0.5 * erfc (-lo / G_SQRT2);
      size_t count = 0;
      for (size_t i = 0; i < n; i++)
        count += z[i] >= lo && z[i] < hi;
      const double expect = p * n, sd = sqrt (n * p * (1.0 - p));
      worst_bin = fmax (worst_bin, fabs (count - expect) / sd);
    }

  g_test_message ("1e6 draws: mean %.5f, var %.5f, E[z^3] %.4f, E[z^4] %.4f, max |z| %.3f, KS %.5f (crit %.5f), "
                  "worst bin %.2f sigma", mean, var, skew, kurt, zmax, ks, ks_crit, worst_bin);
  g_assert_cmpfloat (fabs (mean), <, 0.005);
  g_assert_cmpfloat (fabs (var - 1.0), <, 0.01);
  g_assert_cmpfloat (fabs (skew), <, 0.02);
  g_assert_cmpfloat (fabs (kurt - 3.0), <, 0.05);
  g_assert_cmpfloat (zmax, <=, 6.67); /* sqrt(-2 ln 2^-32): the largest value Box-Muller can give */
  g_assert_cmpfloat (ks, <, ks_crit);
  g_assert_cmpfloat (worst_bin, <, 5.0);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/engine/rng/philox-kat", test_philox_kat);
  g_test_add_func ("/engine/rng/normal-layout", test_normal_layout);
  g_test_add_func ("/engine/rng/determinism", test_determinism);
  g_test_add_func ("/engine/rng/thread-count", test_thread_count);
  g_test_add_func ("/engine/rng/offsets", test_offsets);
  g_test_add_func ("/engine/rng/moments", test_moments);
  return g_test_run ();
}
