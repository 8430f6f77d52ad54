/* kernel_trace.c: exact kernel times inside CUDA graph replays, through CUPTI's activity API.
 *
 * Why: `ddpm bench` replays a forward as one CUDA graph of ~160 short kernels, and DDPM_CUDA_PROFILE
 * (kernels/profile.cu) can only time kernels run eagerly between events, which adds ~3.5 us each and hides
 * the launch gaps and the programmatic-dependent-launch overlap of the graph. CUPTI's concurrent-kernel
 * records carry the GPU's own start and end timestamps (ns) of every kernel, graph nodes included.
 *
 * Use: the CUDA driver loads this library at cuInit and calls InitializeInjection():
 *   LD_LIBRARY_PATH=<dir of libcupti.so.13> CUDA_INJECTION64_PATH=/path/libddpm-kernel-trace.so ddpm bench ...
 * At exit the report goes to stderr, or is appended to the file $DDPM_TRACE_OUT. $DDPM_TRACE_ROUNDS: how
 * many of the last graph launches the tables use (default: all but the first, which is cold).
 *
 * Rounds: one round is the kernels of one cudaGraphLaunch. CUPTI documents a kernel record's correlationId
 * as "identical to the correlation ID in the driver or runtime API activity record that launched the
 * kernel", and for graphs that API call is the cudaGraphLaunch (CUPTI 13.1 Update 1's release notes fix
 * "incorrect correlation IDs for cudaGraphLaunch API calls and their associated kernel launches" in
 * profiling sessions after the first; we have one session). So graph kernels (graphId != 0) are grouped by
 * (graphId, correlationId). Not yet seen on our GPU, so it is checked: if that grouping puts one graph node
 * twice into a round, or gives one-kernel rounds for a graph of several nodes, the rounds are cut instead
 * where a graph node repeats in start order (each node runs once per launch), and the report says which.
 *
 * It must never take the host program down: every CUPTI call is checked and a failure prints one line
 * ("kernel_trace: X failed (CUPTI error N: ...)"); one at start leaves the library inert, one later loses
 * only the records it concerns. Built by tools/gpu_prepare.sh (not by meson: only the lent GPU machine
 * runs it). */
#define _POSIX_C_SOURCE 200809L                /* strdup, strnlen */

#include <cupti.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TRACE_BUFFER_BYTES (4u << 20)           /* one activity buffer: ~20000 kernel records */
#define TRACE_MAX_KERNELS (1u << 21)            /* records kept (~150 MB); a bench needs a few thousand */
#define TRACE_TIMELINE 400                      /* kernels of the median round listed one by one */
#define TRACE_EAGER_ROWS 30

typedef struct {
  uint64_t start_ns, end_ns;
  uint64_t node;                                /* graphNodeId, 0 outside graphs */
  uint32_t corr, graph;
  int32_t grid[3], block[3];
  int32_t smem_bytes;                           /* static + dynamic shared memory per block */
  uint16_t regs;                                /* registers per thread */
  int name;                                     /* index into names */
} Kernel;

typedef struct {
  const char *cupti_ptr;                        /* CUPTI's pointer: the fast path of the lookup */
  char *raw;                                    /* our copy: CUPTI's string may not outlive the session */
  char *pretty;
} Name;

typedef struct {
  size_t first, count;                          /* kernels[first .. first + count), in start order */
  uint32_t graph;
  uint64_t t0_ns, t1_ns;                        /* first start, last end */
} Round;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static bool active;                             /* collecting; false after a failure or the report */
static Kernel *kernels;
static size_t n_kernels, cap_kernels;
static Name *names;
static int n_names, cap_names;
static uint64_t dropped, lost, untimed;         /* records CUPTI dropped, we could not keep, had no times */
static uint32_t cupti_version;

static void
say_failed (const char *what, CUptiResult r)
{
  const char *s = NULL;
  if (cuptiGetResultString (r, &s) != CUPTI_SUCCESS || s == NULL)
    s = "?";
  fprintf (stderr, "kernel_trace: %s failed (CUPTI error %d: %s)\n", what, (int) r, s);
}

static bool
ok (CUptiResult r, const char *what)
{
  if (r == CUPTI_SUCCESS)
    return true;
  say_failed (what, r);
  return false;
}

/* ---- readable kernel names ---- */

/* libstdc++'s demangler (the C++ ABI's; this file is C, the library is on every machine with a CUDA toolkit). */
char *__cxa_demangle (const char *mangled, char *out, size_t *length, int *status);

/* "_Z22flash_attention_kernelI6__halfLi8EEvPKT_..." -> "flash_attention_kernel<__half, 8>": the demangled
 * name without its return type and parameter list; names that are not mangled (extern "C", cuBLAS's) or that
 * do not demangle pass as they are. */
static char *
pretty_name (const char *raw)
{
  int status = -1;
  char *full = strncmp (raw, "_Z", 2) == 0 ? __cxa_demangle (raw, NULL, NULL, &status) : NULL;
  if (full == NULL || status != 0)
    {
      free (full);
      return strdup (raw);
    }
  /* the name ends at the first '(' outside template brackets; a return type ("void ") ends at the last
   * space outside them before that */
  const char *begin = full, *end = full + strlen (full);
  int depth = 0;
  for (const char *c = full; *c != '\0'; c++)
    {
      if (*c == '<')
        depth++;
      else if (*c == '>')
        depth--;
      else if (depth == 0 && *c == ' ')
        begin = c + 1;
      else if (depth == 0 && *c == '(')
        {
          end = c;
          break;
        }
    }
  char *name = strndup (begin, (size_t) (end - begin));
  free (full);
  return name;
}

/* ---- collection (CUPTI's threads and ours) ---- */

static int
intern_name (const char *s)
{
  if (s == NULL)
    s = "(unnamed)";
  for (int i = n_names - 1; i >= 0; i--)
    if (names[i].cupti_ptr == s)
      return i;
  for (int i = 0; i < n_names; i++)
    if (strcmp (names[i].raw, s) == 0)
      return i;
  if (n_names == cap_names)
    {
      int cap = cap_names ? 2 * cap_names : 256;
      Name *n = realloc (names, (size_t) cap * sizeof *n);
      if (n == NULL)
        return -1;
      names = n;
      cap_names = cap;
    }
  char *raw = strdup (s);
  char *pretty = raw ? pretty_name (raw) : NULL;
  if (pretty == NULL)
    {
      free (raw);
      return -1;
    }
  names[n_names] = (Name) { s, raw, pretty };
  return n_names++;
}

static void
keep_kernel (const CUpti_ActivityKernel10 *k)
{
  if (k->start == 0 && k->end == 0)
    {
      untimed++;
      return;
    }
  if (n_kernels == cap_kernels)
    {
      size_t cap = cap_kernels ? 2 * cap_kernels : 4096;
      Kernel *n = cap <= TRACE_MAX_KERNELS ? realloc (kernels, cap * sizeof *n) : NULL;
      if (n == NULL)
        {
          lost++;
          return;
        }
      kernels = n;
      cap_kernels = cap;
    }
  int name = intern_name (k->name);
  if (name < 0)
    {
      lost++;
      return;
    }
  kernels[n_kernels++] = (Kernel) {
    .start_ns = k->start, .end_ns = k->end, .node = k->graphNodeId,
    .corr = k->correlationId, .graph = k->graphId,
    .grid = { k->gridX, k->gridY, k->gridZ }, .block = { k->blockX, k->blockY, k->blockZ },
    .smem_bytes = k->staticSharedMemory + k->dynamicSharedMemory, .regs = k->registersPerThread,
    .name = name,
  };
}

static void CUPTIAPI
buffer_requested (uint8_t **buffer, size_t *size, size_t *max_records)
{
  /* CUPTI wants 8-byte aligned buffers; NULL makes it drop records, which the report counts */
  *buffer = aligned_alloc (8, TRACE_BUFFER_BYTES);
  *size = *buffer != NULL ? TRACE_BUFFER_BYTES : 0;
  *max_records = 0;
}

static void CUPTIAPI
buffer_completed (CUcontext ctx, uint32_t stream, uint8_t *buffer, size_t size, size_t valid)
{
  (void) size;
  pthread_mutex_lock (&lock);
  if (active && buffer != NULL)
    {
      CUpti_Activity *rec = NULL;
      for (;;)
        {
          CUptiResult r = cuptiActivityGetNextRecord (buffer, valid, &rec);
          if (r == CUPTI_ERROR_MAX_LIMIT_REACHED)
            break;
          if (r != CUPTI_SUCCESS)
            {
              say_failed ("cuptiActivityGetNextRecord", r);
              break;
            }
          if (rec->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || rec->kind == CUPTI_ACTIVITY_KIND_KERNEL)
            keep_kernel ((const CUpti_ActivityKernel10 *) rec);
        }
      size_t d = 0;
      if (ok (cuptiActivityGetNumDroppedRecords (ctx, stream, &d), "cuptiActivityGetNumDroppedRecords"))
        dropped += d;
    }
  pthread_mutex_unlock (&lock);
  free (buffer);
}

/* ---- the report ---- */

static int
by_graph_corr_start (const void *a, const void *b)
{
  const Kernel *x = a, *y = b;
  if (x->graph != y->graph)
    return x->graph < y->graph ? -1 : 1;
  if (x->corr != y->corr)
    return x->corr < y->corr ? -1 : 1;
  if (x->start_ns != y->start_ns)
    return x->start_ns < y->start_ns ? -1 : 1;
  return 0;
}

static int
by_graph_start (const void *a, const void *b)
{
  const Kernel *x = a, *y = b;
  if (x->graph != y->graph)
    return x->graph < y->graph ? -1 : 1;
  if (x->start_ns != y->start_ns)
    return x->start_ns < y->start_ns ? -1 : 1;
  return 0;
}

static int
round_by_start (const void *a, const void *b)
{
  const Round *x = a, *y = b;
  if (x->graph != y->graph)
    return x->graph < y->graph ? -1 : 1;
  return x->t0_ns < y->t0_ns ? -1 : x->t0_ns > y->t0_ns;
}

static double
round_span_us (const Round *r)
{
  return (double) (r->t1_ns - r->t0_ns) * 1e-3;
}

static const Round *sort_rounds;                /* for span_order (qsort has no context argument) */

static int
span_order (const void *a, const void *b)
{
  double x = round_span_us (&sort_rounds[*(const size_t *) a]);
  double y = round_span_us (&sort_rounds[*(const size_t *) b]);
  return x < y ? -1 : x > y;
}

static bool
node_in (const Kernel *k, size_t from, size_t to, uint64_t node)
{
  for (size_t i = from; i < to; i++)
    if (k[i].node == node)
      return true;
  return false;
}

/* Cuts g[0 .. n) (sorted for the mode) into rounds; returns how many, or -1 without memory. */
static long
cut_rounds (const Kernel *g, size_t n, bool by_corr, Round *rounds)
{
  long nr = 0;
  for (size_t i = 0; i < n; i++)
    {
      Round *r = nr > 0 ? &rounds[nr - 1] : NULL;
      bool same = r != NULL && g[i].graph == r->graph
                  && (by_corr ? g[i].corr == g[r->first].corr : !node_in (g, r->first, i, g[i].node));
      if (!same)
        {
          r = &rounds[nr++];
          *r = (Round) { i, 0, g[i].graph, g[i].start_ns, g[i].end_ns };
        }
      r->count++;
      if (g[i].end_ns > r->t1_ns)
        r->t1_ns = g[i].end_ns;
    }
  return nr;
}

/* Whether grouping by correlation id looks right: no node twice in a round, and not one-kernel rounds for
 * a graph whose launches run several nodes. */
static bool
corr_rounds_plausible (const Kernel *g, const Round *rounds, long nr)
{
  for (long r = 0; r < nr; r++)
    for (size_t i = rounds[r].first + 1; i < rounds[r].first + rounds[r].count; i++)
      if (node_in (g, rounds[r].first, i, g[i].node))
        return false;
  for (long r = 0; r < nr; r++)
    if (rounds[r].count == 1)
      for (long s = 0; s < nr; s++)
        if (rounds[s].graph == rounds[r].graph && g[rounds[s].first].node != g[rounds[r].first].node)
          return false;
  return true;
}

/* The gap before kernel k of a round (us): from the latest end among the kernels before it (in start order)
 * to its start, so that the positive gaps of a round add up to its idle time and a negative one is overlap
 * with what still runs. *latest_end starts at the round's first start. */
static double
gap_us (const Kernel *k, uint64_t *latest_end)
{
  double gap = ((double) k->start_ns - (double) *latest_end) * 1e-3;
  if (k->end_ns > *latest_end)
    *latest_end = k->end_ns;
  return gap;
}

/* The part of kernel k's run that no kernel before it (in start order) already covered (us): from the later
 * of its start and latest_end to its end, 0 if it ended before. With programmatic dependent launch a kernel
 * starts while the one before it runs and waits for it, so its duration overstates its cost; its own time
 * is what it adds to the round: a round's own times and idle gaps add up to its span. */
static double
own_us (const Kernel *k, uint64_t latest_end)
{
  const uint64_t from = k->start_ns > latest_end ? k->start_ns : latest_end;
  return k->end_ns > from ? (double) (k->end_ns - from) * 1e-3 : 0.0;
}

typedef struct {
  int name;
  long calls, gaps;
  double sum_us, min_us, max_us, gap_sum_us, own_sum_us;
} Stat;

static int
stat_by_time (const void *a, const void *b)
{
  const Stat *x = a, *y = b;
  return x->own_sum_us > y->own_sum_us ? -1 : x->own_sum_us < y->own_sum_us;
}

static void
report_graphs (FILE *out, Kernel *g, size_t n)
{
  Round *rounds = malloc ((n ? n : 1) * sizeof *rounds);
  Stat *stats = calloc ((size_t) (n_names ? n_names : 1), sizeof *stats);
  size_t *order = malloc ((n ? n : 1) * sizeof *order);
  if (rounds == NULL || stats == NULL || order == NULL)
    {
      fprintf (out, "kernel_trace: out of memory for the report\n");
      goto done;
    }
  qsort (g, n, sizeof *g, by_graph_corr_start);
  long nr = cut_rounds (g, n, true, rounds);
  bool by_corr = corr_rounds_plausible (g, rounds, nr);
  if (by_corr)
    fprintf (out, "graph rounds: grouped by the correlation id of the cudaGraphLaunch (each round's kernels share it)\n");
  else
    {
      qsort (g, n, sizeof *g, by_graph_start);
      nr = cut_rounds (g, n, false, rounds);
      fprintf (out, "graph rounds: the kernels of one launch do NOT share a correlation id here: cut where a graph "
               "node repeats in start order instead\n");
    }
  qsort (rounds, (size_t) nr, sizeof *rounds, round_by_start);

  /* the forward is the graph with the most kernel time; others (the PDL probe's) get one line each */
  uint32_t main_graph = 0;
  double main_us = -1;
  fprintf (out, "graphs:");
  for (long r = 0; r < nr;)
    {
      long s = r;
      double us = 0;
      for (; s < nr && rounds[s].graph == rounds[r].graph; s++)
        for (size_t i = rounds[s].first; i < rounds[s].first + rounds[s].count; i++)
          us += (double) (g[i].end_ns - g[i].start_ns) * 1e-3;
      fprintf (out, "%s id %u: %ld launch%s x %zu kernels", r ? ";" : "", rounds[r].graph, s - r, s - r == 1 ? "" : "es",
               rounds[r].count);
      if (us > main_us)
        {
          main_us = us;
          main_graph = rounds[r].graph;
        }
      r = s;
    }
  fprintf (out, "\n");

  long first = 0, count = 0;
  for (long r = 0; r < nr; r++)
    if (rounds[r].graph == main_graph)
      {
        if (count == 0)
          first = r;
        count++;
      }
  long use = count > 1 ? count - 1 : count;
  const char *env = getenv ("DDPM_TRACE_ROUNDS");
  if (env != NULL && *env != '\0')
    {
      char *end;
      long v = strtol (env, &end, 10);
      if (*end == '\0' && v > 0)
        use = v < count ? v : count;
    }
  const Round *used = rounds + first + (count - use);
  fprintf (out, "rounds used: graph %u, the last %ld of %ld launches (DDPM_TRACE_ROUNDS)\n", main_graph, use, count);

  for (long r = 0; r < use; r++)
    order[r] = (size_t) r;
  sort_rounds = used;
  qsort (order, (size_t) use, sizeof *order, span_order);
  const Round *med = &used[order[use / 2]];
  double busy_mean = 0;
  for (long r = 0; r < use; r++)
    for (size_t i = used[r].first; i < used[r].first + used[r].count; i++)
      busy_mean += (double) (g[i].end_ns - g[i].start_ns) * 1e-3 / (double) use;
  fprintf (out, "span per round (us, first start to last end): min %.1f median %.1f max %.1f; kernel time per round "
           "(mean, us): %.1f\n", round_span_us (&used[order[0]]), round_span_us (med),
           round_span_us (&used[order[use - 1]]), busy_mean);

  /* the median round: its sums, then its first kernels one by one */
  double dur_sum = 0, idle = 0, overlap = 0;
  long n_idle = 0, n_overlap = 0;
  uint64_t latest = med->t0_ns;
  for (size_t i = med->first; i < med->first + med->count; i++)
    {
      double gap = gap_us (&g[i], &latest);     /* 0 for the first: it starts at t0 */
      dur_sum += (double) (g[i].end_ns - g[i].start_ns) * 1e-3;
      if (gap > 0)
        idle += gap, n_idle++;
      else if (gap < 0)
        overlap += gap, n_overlap++;
    }
  fprintf (out, "median round (launch %ld of %ld): %zu kernels, span %.1f us, sum of kernel times %.1f us, gaps %+.1f us "
           "(idle %.1f us in %ld gaps, overlap %.1f us in %ld)\n", (long) (med - used) + count - use + 1, count, med->count,
           round_span_us (med), dur_sum, idle + overlap, idle, n_idle, overlap, n_overlap);

  /* per kernel name over the rounds used */
  for (int i = 0; i < n_names; i++)
    stats[i] = (Stat) { .name = i, .min_us = 1e300 };
  double all_us = 0, all_own_us = 0;
  for (long r = 0; r < use; r++)
    {
      uint64_t lat = used[r].t0_ns;
      for (size_t i = used[r].first; i < used[r].first + used[r].count; i++)
        {
          Stat *st = &stats[g[i].name];
          double us = (double) (g[i].end_ns - g[i].start_ns) * 1e-3;
          st->calls++;
          st->sum_us += us;
          st->min_us = us < st->min_us ? us : st->min_us;
          st->max_us = us > st->max_us ? us : st->max_us;
          all_us += us;
          const double own = own_us (&g[i], lat);
          st->own_sum_us += own;
          all_own_us += own;
          double gap = gap_us (&g[i], &lat);
          if (i > used[r].first)
            {
              st->gap_sum_us += gap;
              st->gaps++;
            }
        }
    }
  qsort (stats, (size_t) n_names, sizeof *stats, stat_by_time);
  fprintf (out, "# per kernel name over %ld rounds, by own time (us; own: what it adds to the span, past the latest "
           "end before it; gap: from that end to its start, negative = overlap)\n", use);
  fprintf (out, "%9s %9s %6s %9s %8s %8s %8s %8s  %s\n", "calls/rnd", "own/rnd", "own%", "us/rnd", "mean", "min",
           "max", "gap", "kernel");
  for (int i = 0; i < n_names && stats[i].calls > 0; i++)
    fprintf (out, "%9.2f %9.1f %5.1f%% %9.1f %8.2f %8.2f %8.2f %8.2f  %s\n", (double) stats[i].calls / (double) use,
             stats[i].own_sum_us / (double) use, all_own_us > 0 ? 100 * stats[i].own_sum_us / all_own_us : 0,
             stats[i].sum_us / (double) use,
             stats[i].sum_us / (double) stats[i].calls, stats[i].min_us, stats[i].max_us,
             stats[i].gaps ? stats[i].gap_sum_us / (double) stats[i].gaps : 0, names[stats[i].name].pretty);

  fprintf (out, "# timeline of the median round (%zu of its %zu kernels; at: us from the round's first start)\n",
           med->count < TRACE_TIMELINE ? med->count : (size_t) TRACE_TIMELINE, med->count);
  fprintf (out, "%4s %9s %8s %8s %8s %16s %14s %4s %6s  %s\n", "#", "at", "us", "own", "gap", "grid", "block",
           "regs", "smemKB", "kernel");
  latest = med->t0_ns;
  for (size_t i = med->first; i < med->first + med->count && i < med->first + TRACE_TIMELINE; i++)
    {
      const double own = own_us (&g[i], latest);
      double gap = gap_us (&g[i], &latest);     /* 0 for the first: it starts at t0 */
      char grid[40], block[40];
      snprintf (grid, sizeof grid, "%d,%d,%d", g[i].grid[0], g[i].grid[1], g[i].grid[2]);
      snprintf (block, sizeof block, "%d,%d,%d", g[i].block[0], g[i].block[1], g[i].block[2]);
      fprintf (out, "%4zu %9.2f %8.2f %8.2f %8.2f %16s %14s %4u %6.1f  %s\n", i - med->first,
               (double) (g[i].start_ns - med->t0_ns) * 1e-3, (double) (g[i].end_ns - g[i].start_ns) * 1e-3, own, gap,
               grid, block, (unsigned) g[i].regs, g[i].smem_bytes / 1024.0, names[g[i].name].pretty);
    }

done:
  free (rounds);
  free (stats);
  free (order);
}

static void
report_eager (FILE *out, const Kernel *e, size_t n)
{
  Stat *stats = calloc ((size_t) (n_names ? n_names : 1), sizeof *stats);
  if (stats == NULL)
    {
      fprintf (out, "kernel_trace: out of memory for the report\n");
      return;
    }
  for (int i = 0; i < n_names; i++)
    stats[i].name = i;
  for (size_t i = 0; i < n; i++)
    {
      stats[e[i].name].calls++;
      stats[e[i].name].sum_us += (double) (e[i].end_ns - e[i].start_ns) * 1e-3;
    }
  qsort (stats, (size_t) n_names, sizeof *stats, stat_by_time);
  fprintf (out, "# eager kernels (outside graphs)\n");
  fprintf (out, "%7s %9s %10s  %s\n", "count", "mean us", "total us", "kernel");
  for (int i = 0; i < n_names && i < TRACE_EAGER_ROWS && stats[i].calls > 0; i++)
    fprintf (out, "%7ld %9.2f %10.1f  %s\n", stats[i].calls, stats[i].sum_us / (double) stats[i].calls,
             stats[i].sum_us, names[stats[i].name].pretty);
  free (stats);
}

static void
write_report (bool flushed)
{
  pthread_mutex_lock (&lock);
  active = false;
  FILE *out = stderr;
  const char *path = getenv ("DDPM_TRACE_OUT");
  if (path != NULL && *path != '\0' && (out = fopen (path, "a")) == NULL)
    {
      fprintf (stderr, "kernel_trace: cannot open %s: the report goes to stderr\n", path);
      out = stderr;
    }
  /* graph kernels first, eager ones after them */
  size_t n_graph = 0;
  for (size_t i = 0; i < n_kernels; i++)
    if (kernels[i].graph != 0)
      {
        Kernel k = kernels[i];
        kernels[i] = kernels[n_graph];
        kernels[n_graph++] = k;
      }
  fprintf (out, "== kernel_trace (pid %ld): CUPTI %u (built with %u); %zu kernel records, %zu in graphs, %zu eager; "
           "dropped %llu, not kept %llu, without times %llu\n", (long) getpid (), cupti_version,
           (unsigned) CUPTI_API_VERSION, n_kernels, n_graph, n_kernels - n_graph, (unsigned long long) dropped,
           (unsigned long long) lost, (unsigned long long) untimed);
  if (cupti_version / 100 != CUPTI_API_VERSION / 100)
    fprintf (out, "kernel_trace: libcupti %u is not the %u this was built with: the records may be misread\n",
             cupti_version, (unsigned) CUPTI_API_VERSION);
  if (!flushed)
    fprintf (out, "kernel_trace: cuptiActivityFlushAll failed: the last records may be missing\n");
  if (n_graph > 0)
    report_graphs (out, kernels, n_graph);
  else
    fprintf (out, "graph rounds: none (no kernel ran inside a CUDA graph)\n");
  if (n_kernels > n_graph)
    report_eager (out, kernels + n_graph, n_kernels - n_graph);
  if (out != stderr)
    fclose (out);
  else
    fflush (out);
  pthread_mutex_unlock (&lock);
}

/* at exit: deliver every buffer, complete or not (the program is ending, and `ddpm bench` has waited for
 * its GPU work), then write the report */
static void
report (void)
{
  write_report (ok (cuptiActivityFlushAll (CUPTI_ACTIVITY_FLAG_FLUSH_FORCED), "cuptiActivityFlushAll"));
}

/* Called by the CUDA driver at cuInit when $CUDA_INJECTION64_PATH names this library. Returns 1 whether or
 * not tracing could start, so that the host program runs on either way. */
__attribute__ ((visibility ("default"))) int InitializeInjection (void);

int
InitializeInjection (void)
{
  static bool initialized;
  if (initialized)
    return 1;
  initialized = true;
  if (!ok (cuptiGetVersion (&cupti_version), "cuptiGetVersion")
      || !ok (cuptiActivityRegisterCallbacks (buffer_requested, buffer_completed), "cuptiActivityRegisterCallbacks"))
    return 1;
  pthread_mutex_lock (&lock);
  active = true;
  pthread_mutex_unlock (&lock);
  if (!ok (cuptiActivityEnable (CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "cuptiActivityEnable(CONCURRENT_KERNEL)"))
    {
      pthread_mutex_lock (&lock);
      active = false;
      pthread_mutex_unlock (&lock);
      return 1;
    }
  if (atexit (report) != 0)
    {
      fprintf (stderr, "kernel_trace: atexit failed: tracing off\n");
      ok (cuptiActivityDisable (CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "cuptiActivityDisable");
      pthread_mutex_lock (&lock);
      active = false;
      pthread_mutex_unlock (&lock);
    }
  return 1;
}
