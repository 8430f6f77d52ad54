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
#include <string.h>

/* Floats of one score chunk (queries x HW). */
#define SCORE_FLOATS (4 * 1024 * 1024)

typedef struct {
  int qc;                          /* queries per chunk */
  size_t q_off, k_off, v_off, o_off, s_off, total;   /* floats */
} AttnPlan;

static void
attn_plan (AttnPlan *p, int C, int HW)
{
  size_t chw = cpu_round_floats ((size_t) C * HW);
  int qc = (int) (SCORE_FLOATS / (size_t) HW);
  p->qc = qc < 1 ? 1 : qc > HW ? HW : qc;
  p->q_off = 0;
  p->k_off = chw;
  p->v_off = 2 * chw;
  p->o_off = 3 * chw;
  p->s_off = 4 * chw;
  p->total = p->s_off + (size_t) p->qc * HW;
}

size_t
cpu_attention_scratch (DdpmBackend *be, int B, int C, int HW, int heads)
{
  AttnPlan p;
  attn_plan (&p, C, HW);
  return p.total * sizeof (float);
}

/* out (C, HW) = W (C, C) in (C, HW) + bias, for one image. */
static void
project (const DdpmLinearW *w, const float *in, float *out, int C, int HW)
{
  const float *bias = w->bias;
  for (int c = 0; c < C; c++)
    {
      float v = bias ? bias[c] : 0.0f;
      float *row = out + (size_t) c * HW;
      for (int i = 0; i < HW; i++)
        row[i] = v;
    }
  cpu_sgemm (FALSE, FALSE, C, HW, C, w->weight, C, in, HW, 1.0f, out, HW);
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

static void
softmax_rows (float *s, int n, int HW, float scale)
{
#pragma omp parallel for schedule (static) if ((size_t) n * HW >= 16384)
  for (int q = 0; q < n; q++)
    softmax_row (s + (size_t) q * HW, HW, scale);
}

void
cpu_attention (DdpmBackend *be, const DdpmAttentionW *w, const void *normed_, const void *residual_, void *y_,
               int B, int C, int HW, int heads, float scale)
{
  CpuBackend *cpu = cpu_backend (be);
  const float *normed = normed_, *residual = residual_;
  float *y = y_;
  AttnPlan p;
  attn_plan (&p, C, HW);
  g_assert (p.total * sizeof (float) <= cpu->scratch_bytes);
  float *Q = cpu->scratch + p.q_off, *K = cpu->scratch + p.k_off, *V = cpu->scratch + p.v_off;
  float *O = cpu->scratch + p.o_off, *S = cpu->scratch + p.s_off;
  int d = C / heads;
  float inv_sqrt_d = 1.0f / sqrtf ((float) d);
  size_t chw = (size_t) C * HW;
  for (int b = 0; b < B; b++)
    {
      const float *n = normed + b * chw;
      project (&w->to_q, n, Q, C, HW);
      project (&w->to_k, n, K, C, HW);
      project (&w->to_v, n, V, C, HW);
      for (int h = 0; h < heads; h++)
        {
          const float *Qh = Q + (size_t) h * d * HW, *Kh = K + (size_t) h * d * HW, *Vh = V + (size_t) h * d * HW;
          float *Oh = O + (size_t) h * d * HW;
          for (int q0 = 0; q0 < HW; q0 += p.qc)
            {
              int nq = HW - q0 < p.qc ? HW - q0 : p.qc;
              /* S (nq, HW) = Q_h[:, q0:q0+nq]^T K_h */
              cpu_sgemm (TRUE, FALSE, nq, HW, d, Qh + q0, HW, Kh, HW, 0.0f, S, HW);
              softmax_rows (S, nq, HW, inv_sqrt_d);
              /* O_h[:, q0:q0+nq] (d, nq) = V_h (d, HW) S^T */
              cpu_sgemm (FALSE, TRUE, d, nq, HW, Vh, HW, S, HW, 0.0f, Oh + q0, HW);
            }
        }
      /* to_out into Q (free now), then the residual; y may alias residual. */
      project (&w->to_out, O, Q, C, HW);
      const float *res = residual + b * chw;
      float *yb = y + b * chw;
#pragma omp parallel for simd schedule (static) if (chw >= 32768)
      for (size_t i = 0; i < chw; i++)
        yb[i] = (Q[i] + res[i]) * scale;
    }
}
