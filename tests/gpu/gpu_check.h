/* gpu_check.h: the harness of the GPU test program (test_cuda.c): guarded device buffers, precision
 * conversions done on the host, comparisons against the CPU backend, and one report line per check.
 *
 * Every device output buffer has GUARD elements of a sentinel byte pattern on each side (checked after the
 * op: an out-of-bounds write fails the check) and its body is poisoned with NaN bytes before the op (an
 * element the op forgot to write compares as NaN and fails). */
#pragma once

#include "backend.h"

#include <stdio.h>

#define GUARD 256                       /* elements each side: keeps 256-byte alignment at 2 and 4 bytes */

typedef struct {
  DdpmBackend *cpu;                     /* reference */
  DdpmBackend *gpu;                     /* under test, at `precision` */
  DdpmPrecision precision;
  gboolean quick;                       /* small shapes (the CPU emulator) */
  gboolean timing;                      /* time each GPU op */
  const char *only;                     /* run checks whose label contains this */
  const char *variant;                  /* backend variant under test ("conv=gemm", ...) or NULL */
  int checks, failures;
  FILE *log;                            /* a copy of every report line (or NULL) */
} GpuEnv;

typedef struct {
  DdpmBackend *be;
  void *base, *ptr;                     /* allocation; body = base + GUARD elements */
  size_t n, es;                         /* body elements; bytes per element */
  gboolean act;                         /* activation-typed (converted on the host), else float32 */
} Buf;

const char *precision_name (DdpmPrecision p);
/* Bytes per activation element of a backend. */
size_t act_bytes (const DdpmBackend *be);
/* v rounded to the activation type of precision p (fp16 / bf16: round to nearest even), as a float. */
float round_act (DdpmPrecision p, float v);
void round_act_array (DdpmPrecision p, float *v, size_t n);
/* Seeded N(0, 1) * scale + offset, then rounded to precision p (so both backends get the same values). */
float *random_host (size_t n, uint64_t seed, float scale, float offset, DdpmPrecision p);

/* Allocates a guarded buffer; FALSE (check failed, reported) on error. */
gboolean buf_new (GpuEnv *env, Buf *b, DdpmBackend *be, size_t n, gboolean act, const char *label);
void buf_free (Buf *b);
/* Writes guards and poisons the body. */
void buf_poison (Buf *b);
void buf_upload (Buf *b, const float *host);
void buf_download (Buf *b, float *host);
/* Number of guard bytes changed (0 = fine). */
size_t buf_guard_damage (Buf *b);

/* Whether a check with this label runs (--only). */
gboolean check_selected (GpuEnv *env, const char *label);

/* Compares got (GPU) with want (CPU reference): the worst |got - want| relative to max |want|. Reports one
 * line "PASS/FAIL label precision rel-err bound ms", counts the check, returns TRUE when it passed.
 * guard_damage > 0 or a non-finite got where want is finite fails it. ms < 0: not timed. */
gboolean report_check (GpuEnv *env, const char *op, const char *label, const float *got, const float *want, size_t n,
                       double bound, size_t guard_damage, double ms);
/* A line on stdout and in the log (what the report functions print; also a failed check's diagnosis). */
void report_line (GpuEnv *env, const char *line);
/* A check with no numbers (setup failures, error paths). */
void report_plain (GpuEnv *env, gboolean ok, const char *op, const char *label, const char *detail);

/* ms = milliseconds per execution of stmt on the GPU backend, or -1 when the environment does not time. After
 * 3 warm-ups (planning, first loads), TIME_GRAPH_OPS executions are captured as one graph and replayed
 * TIME_GRAPH_LAUNCHES times (after one untimed replay): the GPU's own time per op, as in a forward's graph,
 * without the host's launch cost, which eager launches of a small op measure instead (~10-20 us per op on the
 * H200 of e465425, more than many of the kernels). Where capture fails, TIME_ITERS eager executions. */
#define TIME_ITERS 20
#define TIME_GRAPH_OPS 10
#define TIME_GRAPH_LAUNCHES 4
#define TIME_GPU(env, ms, stmt)                                                 \
  do {                                                                          \
    (ms) = -1.0;                                                                \
    if ((env)->timing)                                                          \
      {                                                                         \
        DdpmBackend *tg_ = (env)->gpu;                                          \
        for (int w_ = 0; w_ < 3; w_++)                                          \
          { stmt; }                                                             \
        tg_->ops->synchronize (tg_);                                            \
        gboolean graph_ = tg_->ops->graph_begin != NULL                         \
                          && tg_->ops->graph_begin (tg_, NULL);                 \
        if (graph_)                                                             \
          {                                                                     \
            for (int i_ = 0; i_ < TIME_GRAPH_OPS; i_++)                         \
              { stmt; }                                                         \
            graph_ = tg_->ops->graph_end (tg_, NULL)                            \
                     && tg_->ops->graph_launch (tg_, NULL);                     \
            tg_->ops->synchronize (tg_);                                        \
          }                                                                     \
        gint64 t0_ = g_get_monotonic_time ();                                   \
        int n_ = 0;                                                             \
        if (graph_)                                                             \
          for (; n_ < TIME_GRAPH_LAUNCHES * TIME_GRAPH_OPS; n_ += TIME_GRAPH_OPS) \
            tg_->ops->graph_launch (tg_, NULL);                                 \
        else                                                                    \
          for (; n_ < TIME_ITERS; n_++)                                         \
            { stmt; }                                                           \
        tg_->ops->synchronize (tg_);                                            \
        (ms) = (g_get_monotonic_time () - t0_) / 1000.0 / n_;                   \
        if (tg_->ops->graph_reset != NULL)                                      \
          tg_->ops->graph_reset (tg_);                                          \
      }                                                                         \
  } while (0)

/* Per-precision bound of the op checks (see test_cuda.c for the reasoning). */
double op_bound (DdpmPrecision p);

/* The op checks (ops_checks.c) and the whole-model checks (model_checks.c). */
enum { OPS_ELEMENTWISE = 1, OPS_SAMPLER = 2, OPS_LINEAR = 4, OPS_NORM = 8, OPS_CONV = 16, OPS_ATTENTION = 32,
       OPS_ALL = 63,
       OPS_NORM_CONV = 64 };          /* only OPS_CONV's GroupNorm -> conv cases (their norms are channels last) */
void run_op_checks (GpuEnv *env, unsigned which);
/* One-hot convolutions whose outputs say where they came from (conv_layout_checks.c; part of OPS_CONV). */
void run_conv_layout_checks (GpuEnv *env);
void run_model_checks (GpuEnv *env);
