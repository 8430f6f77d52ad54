/* cpu_attention.c: the attention block after its GroupNorm, as diffusers' Attention with AttnProcessor:
 * y = (to_out(MHA(to_q(n), to_k(n), to_v(n))) + residual) * scale.
 *
 * Everything stays channel-major, (C, HW) per image, so no transposes are needed: Q = Wq N + bq (C, HW);
 * head h is rows [h*d, (h+1)*d) (channel c = h*d + i, as diffusers splits heads); scores
 * S (queries, keys) = Q_h^T K_h; softmax over keys of S / sqrt(d) in float32 (max subtracted);
 * O_h (d, queries) = V_h S^T; y = (Wo O + bo + residual) * scale. Queries are processed in chunks so the
 * score matrix fits a fixed budget whatever the token count. */
#include "cpu_ops.h"

#include <math.h>
#include <omp.h>
#include <string.h>

/* Floats of the score chunks of all threads together (queries x HW each). */
#define SCORE_FLOATS (4 * 1024 * 1024)

typedef struct {
  int qc;                          /* queries per score chunk */
  size_t q_off, k_off, v_off, o_off, s_off, s_per_thread, total;   /* floats */
} AttnPlan;

static void
attn_plan (AttnPlan *p, int C, int HW, int n_threads)
{
  size_t chw = cpu_round_floats ((size_t) C * HW);
  int per_thread = (HW + n_threads - 1) / n_threads;      /* queries of one thread */
  int qc = (int) (SCORE_FLOATS / ((size_t) HW * n_threads));
  p->qc = qc < 1 ? 1 : qc > per_thread ? per_thread : qc;
  p->q_off = 0;
  p->k_off = chw;
  p->v_off = 2 * chw;
  p->o_off = 3 * chw;
  p->s_off = 4 * chw;
  p->s_per_thread = cpu_round_floats ((size_t) p->qc * HW);
  p->total = p->s_off + (size_t) n_threads * p->s_per_thread;
}

size_t
cpu_attention_scratch (DdpmBackend *be, int B, int C, int HW, int heads)
{
  AttnPlan p;
  attn_plan (&p, C, HW, cpu_backend (be)->n_threads);
  return p.total * sizeof (float);
}

/* Columns [n0, n1) of out (C, HW) = W (C, C) in (C, HW) + bias, for one image. */
static void
project_columns (const DdpmLinearW *w, const float *in, float *out, int C, int HW, int n0, int n1)
{
  if (n1 <= n0)
    return;
  const float *bias = w->bias;
  for (int c = 0; c < C; c++)
    {
      float v = bias ? bias[c] : 0.0f;
      float *row = out + (size_t) c * HW;
      for (int i = n0; i < n1; i++)
        row[i] = v;
    }
  cpu_sgemm (FALSE, FALSE, C, n1 - n0, C, w->weight, C, in + n0, HW, 1.0f, out + n0, HW);
}

/* row (HW) <- softmax(row * scale), numerically stable (the max is subtracted first). */
CPU_MULTIVERSION static void
softmax_row (float *row, int HW, float scale)
{
  float mx = row[0];
  for (int i = 1; i < HW; i++)
    mx = row[i] > mx ? row[i] : mx;
  float sum = 0.0f;
#pragma omp simd reduction (+ : sum)
  for (int i = 0; i < HW; i++)
    {
      float e = cpu_expf ((row[i] - mx) * scale);
      row[i] = e;
      sum += e;
    }
  float inv = 1.0f / sum;
#pragma omp simd
  for (int i = 0; i < HW; i++)
    row[i] *= inv;
}

/* One parallel region per image: (1) the q, k, v projections as 3 x n_threads column slices; (2) each
 * thread takes its own queries, all heads: scores, softmax and its columns of O, with no barrier between
 * them; (3) each thread projects its columns of O through to_out and adds the residual. Two barriers. */
void
cpu_attention (DdpmBackend *be, const DdpmAttentionW *w, const void *normed_, const void *residual_, void *y_,
               int B, int C, int HW, int heads, float scale)
{
  CpuBackend *cpu = cpu_backend (be);
  const float *normed = normed_, *residual = residual_;
  float *y = y_;
  AttnPlan p;
  attn_plan (&p, C, HW, cpu->n_threads);
  g_assert (p.total * sizeof (float) <= cpu->scratch_bytes);
  float *Q = cpu->scratch + p.q_off, *K = cpu->scratch + p.k_off, *V = cpu->scratch + p.v_off;
  float *O = cpu->scratch + p.o_off;
  const DdpmLinearW *proj[3] = { &w->to_q, &w->to_k, &w->to_v };
  float *dst[3] = { Q, K, V };
  int d = C / heads;
  float inv_sqrt_d = 1.0f / sqrtf ((float) d);
  size_t chw = (size_t) C * HW;
  for (int b = 0; b < B; b++)
    {
      const float *n = normed + b * chw, *res = residual + b * chw;
      float *yb = y + b * chw;
#pragma omp parallel num_threads (cpu->n_threads)
      {
        int nt = omp_get_num_threads (), id = omp_get_thread_num ();
#pragma omp for schedule (static)
        for (int task = 0; task < 3 * nt; task++)
          {
            int which = task / nt, slice = task % nt;
            project_columns (proj[which], n, dst[which], C, HW, (int) ((int64_t) HW * slice / nt),
                             (int) ((int64_t) HW * (slice + 1) / nt));
          }
        /* This thread's queries [q_lo, q_hi), and columns of the output projection (the same split). */
        int q_lo = (int) ((int64_t) HW * id / nt), q_hi = (int) ((int64_t) HW * (id + 1) / nt);
        float *S = cpu->scratch + p.s_off + (size_t) id * p.s_per_thread;
        for (int h = 0; h < heads; h++)
          {
            const float *Qh = Q + (size_t) h * d * HW, *Kh = K + (size_t) h * d * HW, *Vh = V + (size_t) h * d * HW;
            float *Oh = O + (size_t) h * d * HW;
            for (int q0 = q_lo; q0 < q_hi; q0 += p.qc)
              {
                int nq = q_hi - q0 < p.qc ? q_hi - q0 : p.qc;
                /* S (nq, HW) = Q_h[:, q0:q0+nq]^T K_h */
                cpu_sgemm (TRUE, FALSE, nq, HW, d, Qh + q0, HW, Kh, HW, 0.0f, S, HW);
                for (int q = 0; q < nq; q++)
                  softmax_row (S + (size_t) q * HW, HW, inv_sqrt_d);
                /* O_h[:, q0:q0+nq] (d, nq) = V_h (d, HW) S^T */
                cpu_sgemm (FALSE, TRUE, d, nq, HW, Vh, HW, S, HW, 0.0f, Oh + q0, HW);
              }
          }
#pragma omp barrier
        /* to_out into Q's columns (Q is no longer read), then the residual; y may alias residual. */
        project_columns (&w->to_out, O, Q, C, HW, q_lo, q_hi);
        for (int c = 0; c < C; c++)
          {
            const float *src = Q + (size_t) c * HW, *r = res + (size_t) c * HW;
            float *dstrow = yb + (size_t) c * HW;
            for (int i = q_lo; i < q_hi; i++)
              dstrow[i] = (src[i] + r[i]) * scale;
          }
      }
    }
}
