/* profile.cu: per-kernel GPU times, for finding where a forward's time goes ($DDPM_CUDA_PROFILE=1).
 *
 * Why: the lent GPU machine has minutes, not hours, and a whole-forward time does not say which of ~250
 * kernels to work on. With the variable set, the backend runs eagerly (no graphs: their kernels cannot be
 * timed one by one) and launch() puts an event before and after every kernel and cuBLAS call. A "round"
 * is the GPU work between two host waits (to_host, synchronize: one forward in `ddpm bench`). Each round
 * starts with a spin kernel of ~20 ms, so the host queues the whole round before the GPU reaches it and an
 * event pair measures its kernel, not the host's launch latency. At destroy, stderr gets a table per
 * kernel name (calls, ms and share per round, mean and max us), the first (cold) round left out.
 *
 * Times include the ~1 us gap between back-to-back kernels; a graph replay has the same gaps. */
#include "cuda_backend.cuh"

#include <stdio.h>
#include <string.h>

#define PROFILE_PAIRS 8192                      /* events pairs per round before an early flush */
#define PROFILE_SPIN_NS 20000000LL              /* the spin that lets the host run ahead, per round */

struct ProfileStat {
  const char *name;
  double total_ms, max_ms;
  long calls;
};

struct CudaProfile {
  cudaEvent_t start[PROFILE_PAIRS], end[PROFILE_PAIRS];
  const char *name[PROFILE_PAIRS];
  int pending;                                  /* pairs recorded this round */
  bool open;                                    /* a pair's start is recorded, its end not yet */
  int rounds;                                   /* flushed rounds counted (after the cold one) */
  bool cold_done;
  double span_ms;                               /* first start to last end, summed over rounds */
  GHashTable *stats;                            /* name -> ProfileStat */
};

/* Sleeps on the GPU for about ns nanoseconds (the global timer; the emulator returns at once). */
__global__ void
profile_spin_kernel (long long ns)
{
  grid_dependency_wait ();
#ifndef DDPM_CUDA_EMU
  unsigned long long t0, t;
  asm volatile ("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do
    asm volatile ("mov.u64 %0, %%globaltimer;" : "=l"(t));
  while ((long long) (t - t0) < ns);
#endif
}

void
cuda_spin (CudaBackend *cb, long long ns)
{
  launch_raw (cb, "profile_spin", 1, 32, 0, profile_spin_kernel, ns);
}

void
cuda_profile_init (CudaBackend *cb)
{
  const char *v = g_getenv ("DDPM_CUDA_PROFILE");
  if (v == NULL || *v == '\0' || strcmp (v, "0") == 0)
    return;
  CudaProfile *p = g_new0 (CudaProfile, 1);
  for (int i = 0; i < PROFILE_PAIRS; i++)
    if (!cuda_ok (cb, cudaEventCreateWithFlags (&p->start[i], cudaEventDefault), "cudaEventCreate")
        || !cuda_ok (cb, cudaEventCreateWithFlags (&p->end[i], cudaEventDefault), "cudaEventCreate"))
      break;
  p->stats = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, g_free);
  cb->profile = p;
  g_message ("CUDA backend: DDPM_CUDA_PROFILE is set: kernels run eagerly, each timed with events");
}

void
cuda_profile_begin (CudaBackend *cb, const char *name)
{
  CudaProfile *p = cb->profile;
  if (cb->capturing || p->open)
    return;
  if (p->pending == PROFILE_PAIRS)
    {
      cudaStreamSynchronize (cb->stream);
      cuda_profile_flush (cb);
    }
  if (p->pending == 0)
    cuda_spin (cb, PROFILE_SPIN_NS);
  p->name[p->pending] = name;
  cudaEventRecord (p->start[p->pending], cb->stream);
  p->open = true;
}

void
cuda_profile_end (CudaBackend *cb)
{
  CudaProfile *p = cb->profile;
  if (cb->capturing || !p->open)
    return;
  cudaEventRecord (p->end[p->pending], cb->stream);
  p->pending++;
  p->open = false;
}

/* After the stream was synchronised: one round's times into the table. */
void
cuda_profile_flush (CudaBackend *cb)
{
  CudaProfile *p = cb->profile;
  if (p == NULL || p->pending == 0 || p->open)
    return;
  const bool keep = p->cold_done;
  p->cold_done = true;
  for (int i = 0; keep && i < p->pending; i++)
    {
      float ms = 0.0f;
      if (cudaEventElapsedTime (&ms, p->start[i], p->end[i]) != cudaSuccess)
        continue;
      ProfileStat *s = (ProfileStat *) g_hash_table_lookup (p->stats, p->name[i]);
      if (s == NULL)
        {
          s = g_new0 (ProfileStat, 1);
          s->name = p->name[i];
          g_hash_table_insert (p->stats, (gpointer) s->name, s);
        }
      s->calls++;
      s->total_ms += ms;
      if (ms > s->max_ms)
        s->max_ms = ms;
    }
  float span = 0.0f;
  if (keep && cudaEventElapsedTime (&span, p->start[0], p->end[p->pending - 1]) == cudaSuccess)
    p->span_ms += span;
  if (keep)
    p->rounds++;
  p->pending = 0;
  cudaGetLastError ();                          /* a failed query must not become the sticky error */
}

static gint
by_total_desc (gconstpointer a, gconstpointer b)
{
  const ProfileStat *x = *(const ProfileStat *const *) a, *y = *(const ProfileStat *const *) b;
  return (x->total_ms < y->total_ms) - (x->total_ms > y->total_ms);
}

void
cuda_profile_report_and_free (CudaBackend *cb)
{
  CudaProfile *p = cb->profile;
  if (p == NULL)
    return;
  if (cb->stream != NULL)
    cudaStreamSynchronize (cb->stream);
  cuda_profile_flush (cb);
  GPtrArray *rows = g_ptr_array_new ();
  GList *values = g_hash_table_get_values (p->stats);
  for (GList *l = values; l != NULL; l = l->next)
    g_ptr_array_add (rows, l->data);
  g_list_free (values);
  g_ptr_array_sort (rows, by_total_desc);
  double kernels_ms = 0.0;
  for (guint i = 0; i < rows->len; i++)
    kernels_ms += ((ProfileStat *) rows->pdata[i])->total_ms;
  const double r = p->rounds > 0 ? p->rounds : 1;
  fprintf (stderr,
           "ddpm cuda profile (%s): %d rounds after 1 cold one; per round %.3f ms in kernels, %.3f ms from the "
           "first kernel's start to the last one's end\n",
           cb->base.description, p->rounds, kernels_ms / r, p->span_ms / r);
  fprintf (stderr, "  %-28s %12s %10s %7s %9s %9s\n", "kernel", "calls/round", "ms/round", "share", "mean_us",
           "max_us");
  for (guint i = 0; i < rows->len; i++)
    {
      const ProfileStat *s = (const ProfileStat *) rows->pdata[i];
      fprintf (stderr, "  %-28s %12.1f %10.4f %6.1f%% %9.2f %9.2f\n", s->name, s->calls / r, s->total_ms / r,
               kernels_ms > 0 ? 100.0 * s->total_ms / kernels_ms : 0.0, 1e3 * s->total_ms / s->calls,
               1e3 * s->max_ms);
    }
  g_ptr_array_unref (rows);
  for (int i = 0; i < PROFILE_PAIRS; i++)
    {
      if (p->start[i] != NULL)
        cudaEventDestroy (p->start[i]);
      if (p->end[i] != NULL)
        cudaEventDestroy (p->end[i]);
    }
  g_hash_table_unref (p->stats);
  g_free (p);
  cb->profile = NULL;
}
