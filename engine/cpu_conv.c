/* cpu_conv.c: 2-D convolution on the CPU, y (B, Cout, Ho, Wo) = conv(x (B, Cin, H, W)) + bias.
 *
 * 3x3 kernels (all but the 1x1 shortcuts in a UNet2DModel) are stored as Winograd F(2x2,3x3) weights
 * U = G g G^T, laid out (Cout, 16, Cin) so that component xi is the matrix U_xi (Cout, Cin) with leading
 * dimension 16 * Cin. Two algorithms read them:
 *
 * - WINOGRAD (stride 1): each 2x2 output tile comes from a 4x4 input tile d: V = B^T d B (16 values per
 *   input channel), M_xi = U_xi V_xi (16 GEMMs, Cout x Cin x tiles), y = A^T M A. 2.25x fewer multiplies
 *   than direct convolution; every transform is additions only, so float32 error stays at the level of
 *   a direct convolution (see tests/test_cpu_ops.c).
 * - DIRECT9 (any stride): the top-left output of F(2x2,3x3), y = sum over the 9 components xi = (r, c),
 *   r, c < 3, of U_xi V_xi, only involves the 3x3 window, so it is an ordinary convolution in a transformed
 *   basis: a column matrix of the 9 transformed values per pixel (like im2col) and one GEMM with
 *   K = 9 * Cin against the first 9 components, which are stored first for that reason. This serves the
 *   stride-2 downsamplers without keeping a second copy of the weights.
 *
 * Other kernel sizes (1x1 shortcuts) keep PyTorch's layout (Cout, Cin * k * k) and run as GEMM, with an
 * im2col column matrix unless the convolution is 1x1, stride 1, unpadded.
 *
 * Work is cut into blocks (tile rows or output rows) whose temporaries fit a fixed budget, so scratch does
 * not grow with the image; within a block every phase is an OpenMP loop (see cpu_ops.h). The plan
 * (algorithm, block size, buffer offsets) is computed by one function for both conv2d_scratch and conv2d. */
#include "cpu_ops.h"

#include <omp.h>
#include <string.h>

/* Component index of Winograd position (r, c): the 9 with r, c < 3 first (DIRECT9 uses only those). */
static const int XI[4][4] = {
  { 0, 1, 2, 9 },
  { 3, 4, 5, 10 },
  { 6, 7, 8, 11 },
  { 12, 13, 14, 15 },
};

/* Temporaries per block (transformed input + GEMM output, or the column matrix), in floats. */
#define BLOCK_FLOATS (2 * 1024 * 1024)

typedef enum { CONV_WINOGRAD, CONV_DIRECT9, CONV_GEMM } ConvAlgo;

typedef struct {
  ConvAlgo algo;
  int B, Cin, H, W, Cout, k, stride, top, left, Ho, Wo;
  int n_threads;
  /* WINOGRAD: th x tw tiles per image; a block is rows_per_block tile rows of the B * th in the batch. */
  int th, tw, rows_per_block, tb;
  /* DIRECT9 / GEMM: a block is rows_per_block output rows of one image, pb = rows_per_block * Wo pixels;
   * the column matrix has kk rows (9 * Cin, or Cin * k * k). direct_1x1: x is the column matrix. */
  int kk, pb;
  gboolean direct_1x1;
  /* Scratch layout in floats: [v | m | row buffers of n_threads * rowbuf]. */
  size_t v_off, m_off, rowbuf_off, rowbuf, total;
} ConvPlan;

static int
imin (int a, int b)
{
  return a < b ? a : b;
}

static int
imax (int a, int b)
{
  return a > b ? a : b;
}

static void
conv_plan (ConvPlan *p, int n_threads, int B, int Cin, int H, int W, int Cout, int k, int stride, const int pad[4])
{
  memset (p, 0, sizeof *p);
  p->B = B, p->Cin = Cin, p->H = H, p->W = W, p->Cout = Cout, p->k = k, p->stride = stride;
  p->top = pad[0], p->left = pad[1];
  p->Ho = (H + pad[0] + pad[2] - k) / stride + 1;
  p->Wo = (W + pad[1] + pad[3] - k) / stride + 1;
  p->n_threads = n_threads;
  if (k == 3 && stride == 1)
    {
      p->algo = CONV_WINOGRAD;
      p->th = (p->Ho + 1) / 2, p->tw = (p->Wo + 1) / 2;
      size_t per_row = (size_t) 16 * (Cin + Cout) * p->tw;
      p->rows_per_block = imin (B * p->th, imax (1, (int) (BLOCK_FLOATS / per_row)));
      p->tb = p->rows_per_block * p->tw;
      p->v_off = 0;
      p->m_off = cpu_round_floats ((size_t) 16 * Cin * p->tb);
      p->rowbuf_off = p->m_off + cpu_round_floats ((size_t) 16 * Cout * p->tb);
      /* The input rows of a segment (at most rows_per_block tile rows), columns -left .. 2 tw + 1 - left,
       * zero padded. */
      p->rowbuf = cpu_round_floats ((size_t) (2 * p->rows_per_block + 2) * (2 * p->tw + 2));
    }
  else
    {
      p->algo = k == 3 ? CONV_DIRECT9 : CONV_GEMM;
      p->kk = k == 3 ? 9 * Cin : Cin * k * k;
      p->direct_1x1 = k == 1 && stride == 1 && pad[0] == 0 && pad[1] == 0 && pad[2] == 0 && pad[3] == 0;
      size_t per_row = (size_t) p->kk * p->Wo;
      p->rows_per_block = p->direct_1x1 ? p->Ho : imin (p->Ho, imax (1, (int) (BLOCK_FLOATS / per_row)));
      p->pb = p->rows_per_block * p->Wo;
      p->v_off = 0;
      p->rowbuf_off = p->direct_1x1 ? 0 : cpu_round_floats ((size_t) p->kk * p->pb);
      /* k input rows spanning the output row's receptive field, zero padded. */
      p->rowbuf = p->direct_1x1 ? 0 : cpu_round_floats ((size_t) k * ((p->Wo - 1) * stride + k));
    }
  p->total = p->rowbuf_off + (size_t) n_threads * p->rowbuf;
}

/* ---- weights ---- */

size_t
cpu_conv_pack_floats (int out, int in, int k)
{
  return (size_t) out * in * (k == 3 ? 16 : (size_t) k * k);
}

void
cpu_conv_pack_weight (const float *w, int out, int in, int k, float *u)
{
  size_t n = cpu_conv_pack_floats (out, in, k);
  if (k != 3)
    {
      memcpy (u, w, n * sizeof (float));
      return;
    }
  /* U = G g G^T with G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1], in double then rounded. */
  static const double G[4][3] = { { 1, 0, 0 }, { 0.5, 0.5, 0.5 }, { 0.5, -0.5, 0.5 }, { 0, 0, 1 } };
  for (int co = 0; co < out; co++)
    for (int ci = 0; ci < in; ci++)
      {
        const float *g = w + ((size_t) co * in + ci) * 9;
        double gg[4][3];                   /* G g */
        for (int r = 0; r < 4; r++)
          for (int c = 0; c < 3; c++)
            gg[r][c] = G[r][0] * g[c] + G[r][1] * g[3 + c] + G[r][2] * g[6 + c];
        for (int r = 0; r < 4; r++)
          for (int c = 0; c < 4; c++)
            {
              double v = gg[r][0] * G[c][0] + gg[r][1] * G[c][1] + gg[r][2] * G[c][2];
              u[((size_t) co * 16 + XI[r][c]) * in + ci] = (float) v;
            }
      }
}

/* ---- shared helpers ---- */

/* dst[0 .. len) = row `iy` of plane, columns starting at ix0, zero outside [0, H) x [0, W). The zero
 * edges are a few floats: plain loops, not memset calls. */
static void
load_row (float *dst, const float *plane, int H, int W, int iy, int ix0, int len)
{
  int a = 0, b = 0;                        /* dst[a, b) comes from the image */
  if (iy >= 0 && iy < H)
    {
      a = imin (len, imax (0, -ix0));
      b = imax (a, imin (len, W - ix0));
    }
  for (int u = 0; u < a; u++)
    dst[u] = 0.0f;
  if (b > a)
    memcpy (dst + a, plane + (size_t) iy * W + ix0 + a, (size_t) (b - a) * sizeof (float));
  for (int u = b; u < len; u++)
    dst[u] = 0.0f;
}

/* Fills rows of y (Cout, pixels [p0, p0 + n)) of one image with the bias, for GEMMs with beta = 1. */
static void
fill_bias_rows (float *y_img, const float *bias, int Cout, size_t plane, size_t p0, size_t n)
{
  for (int co = 0; co < Cout; co++)
    {
      float *dst = y_img + co * plane + p0;
      float v = bias ? bias[co] : 0.0f;
      for (size_t i = 0; i < n; i++)
        dst[i] = v;
    }
}

/* ---- WINOGRAD ---- */

/* Component values (B^T d B) of one 4x4 input tile d (float[4][4]), stored at column j of the 16 component
 * rows o (float *[16]). A macro, not a function: GCC vectorises the loops around it only when the
 * pointer array is not passed by address. */
#define WINO_TILE_IN(d, o, j)                                                                                      \
  do                                                                                                               \
    {                                                                                                              \
      float t_[4][4]; /* B^T d */                                                                                  \
      for (int c_ = 0; c_ < 4; c_++)                                                                               \
        {                                                                                                          \
          t_[0][c_] = d[0][c_] - d[2][c_];                                                                         \
          t_[1][c_] = d[1][c_] + d[2][c_];                                                                         \
          t_[2][c_] = d[2][c_] - d[1][c_];                                                                         \
          t_[3][c_] = d[1][c_] - d[3][c_];                                                                         \
        }                                                                                                          \
      for (int r_ = 0; r_ < 4; r_++) /* (B^T d) B */                                                               \
        {                                                                                                          \
          o[XI[r_][0]][j] = t_[r_][0] - t_[r_][2];                                                                 \
          o[XI[r_][1]][j] = t_[r_][1] + t_[r_][2];                                                                 \
          o[XI[r_][2]][j] = t_[r_][2] - t_[r_][1];                                                                 \
          o[XI[r_][3]][j] = t_[r_][1] - t_[r_][3];                                                                 \
        }                                                                                                          \
    }                                                                                                              \
  while (0)

/* A block's tile rows that lie in one image: tile rows [i0, i1) of image b, at block column jt. */
typedef struct {
  int b, i0, i1, jt;
} Segment;

/* Segment s of the block of tile rows [r0, r0 + nr) (flattened over the batch); returns FALSE past the end. */
static gboolean
block_segment (const ConvPlan *p, int r0, int nr, int s, Segment *seg)
{
  int b = r0 / p->th + s;
  int first = imax (r0, b * p->th), last = imin (r0 + nr, (b + 1) * p->th);
  if (first >= last)
    return FALSE;
  seg->b = b, seg->i0 = first - b * p->th, seg->i1 = last - b * p->th, seg->jt = (first - r0) * p->tw;
  return TRUE;
}

/* V (16 components of Cin rows of tb) for channel ci of a segment. Tile (i, j) reads input rows
 * 2i - top .. +3 and columns 2j - left .. +3. The segment's input rows are first copied into rb with their
 * zero padding (each row once, though two tile rows read it), so the transform loop runs over all tw tiles
 * with no edge cases (a loop over only the interior tw - 2 tiles leaves AVX-512 lanes idle: 1.5x slower). */
static inline __attribute__ ((always_inline)) void
wino_input_segment_impl (const ConvPlan *p, const float *x, float *v, float *rb, int ci, const Segment *seg)
{
  int tw = p->tw, len = 2 * tw + 2;
  const float *plane = x + ((size_t) seg->b * p->Cin + ci) * p->H * p->W;
  int n_rows = 2 * (seg->i1 - seg->i0) + 2;
  for (int r = 0; r < n_rows; r++)
    load_row (rb + (size_t) r * len, plane, p->H, p->W, 2 * seg->i0 - p->top + r, -p->left, len);
  for (int i = seg->i0; i < seg->i1; i++)
    {
      const float *r0 = rb + (size_t) (2 * (i - seg->i0)) * len, *r1 = r0 + len, *r2 = r1 + len, *r3 = r2 + len;
      float *o[16];
      for (int xi = 0; xi < 16; xi++)
        o[xi] = v + ((size_t) xi * p->Cin + ci) * p->tb + seg->jt + (i - seg->i0) * tw;
#pragma omp simd
      for (int j = 0; j < tw; j++)
        {
          int u = 2 * j;
          float d[4][4] = {
            { r0[u], r0[u + 1], r0[u + 2], r0[u + 3] },
            { r1[u], r1[u + 1], r1[u + 2], r1[u + 3] },
            { r2[u], r2[u + 1], r2[u + 2], r2[u + 3] },
            { r3[u], r3[u + 1], r3[u + 2], r3[u + 3] },
          };
          WINO_TILE_IN (d, o, j);
        }
    }
}

/* Output tile y (float[2][2]) of column j from the 16 GEMM output rows in (float *[16]): A^T M A + bias. */
#define WINO_TILE_OUT(in, j, bias, y)                                                                              \
  do                                                                                                               \
    {                                                                                                              \
      float s_[2][4]; /* A^T M */                                                                                  \
      for (int c_ = 0; c_ < 4; c_++)                                                                               \
        {                                                                                                          \
          float m0_ = in[XI[0][c_]][j], m1_ = in[XI[1][c_]][j], m2_ = in[XI[2][c_]][j], m3_ = in[XI[3][c_]][j];    \
          s_[0][c_] = m0_ + m1_ + m2_;                                                                             \
          s_[1][c_] = m1_ - m2_ - m3_;                                                                             \
        }                                                                                                          \
      for (int r_ = 0; r_ < 2; r_++)                                                                               \
        {                                                                                                          \
          y[r_][0] = s_[r_][0] + s_[r_][1] + s_[r_][2] + (bias);                                                   \
          y[r_][1] = s_[r_][1] - s_[r_][2] - s_[r_][3] + (bias);                                                   \
        }                                                                                                          \
    }                                                                                                              \
  while (0)

/* y of channel co for a segment, from the GEMM outputs M: rows 2i, 2i+1 (those < Ho) per tile row i. */
static inline __attribute__ ((always_inline)) void
wino_output_segment_impl (const ConvPlan *p, const float *m, float *y, const float *bias, int co,
                          const Segment *seg)
{
  int Wo = p->Wo, full = Wo / 2;           /* tiles whose two columns are both inside */
  float bv = bias ? bias[co] : 0.0f;
  for (int i = seg->i0; i < seg->i1; i++)
    {
      const float *in[16];
      for (int xi = 0; xi < 16; xi++)
        in[xi] = m + ((size_t) xi * p->Cout + co) * p->tb + seg->jt + (i - seg->i0) * p->tw;
      float *y0 = y + ((size_t) seg->b * p->Cout + co) * p->Ho * Wo + (size_t) (2 * i) * Wo;
      float *y1 = y0 + Wo;
      gboolean two_rows = 2 * i + 1 < p->Ho;
      if (two_rows)
        {
#pragma omp simd
          for (int j = 0; j < full; j++)
            {
              float t[2][2];
              WINO_TILE_OUT (in, j, bv, t);
              y0[2 * j] = t[0][0], y0[2 * j + 1] = t[0][1];
              y1[2 * j] = t[1][0], y1[2 * j + 1] = t[1][1];
            }
        }
      else
        {
#pragma omp simd
          for (int j = 0; j < full; j++)
            {
              float t[2][2];
              WINO_TILE_OUT (in, j, bv, t);
              y0[2 * j] = t[0][0], y0[2 * j + 1] = t[0][1];
            }
        }
      if (Wo % 2)                          /* last tile: its left column only */
        {
          float t[2][2];
          WINO_TILE_OUT (in, full, bv, t);
          y0[2 * full] = t[0][0];
          if (two_rows)
            y1[2 * full] = t[1][0];
        }
    }
}

/* The tile loops vectorise across the tw tiles of a row. With AVX-512's 16 lanes, small images (8x8: tw = 4)
 * would run them scalar, so narrow rows use the baseline build (4 lanes) instead of the wide clones. */
#define NARROW_TW 8

CPU_MULTIVERSION static void
wino_input_segment_wide (const ConvPlan *p, const float *x, float *v, float *rb, int ci, const Segment *seg)
{
  wino_input_segment_impl (p, x, v, rb, ci, seg);
}

static void
wino_input_segment_narrow (const ConvPlan *p, const float *x, float *v, float *rb, int ci, const Segment *seg)
{
  wino_input_segment_impl (p, x, v, rb, ci, seg);
}

CPU_MULTIVERSION static void
wino_output_segment_wide (const ConvPlan *p, const float *m, float *y, const float *bias, int co, const Segment *seg)
{
  wino_output_segment_impl (p, m, y, bias, co, seg);
}

static void
wino_output_segment_narrow (const ConvPlan *p, const float *m, float *y, const float *bias, int co,
                            const Segment *seg)
{
  wino_output_segment_impl (p, m, y, bias, co, seg);
}

static void
conv_winograd (const ConvPlan *p, const float *U, const float *bias, const float *x, float *y, float *scratch)
{
  float *v = scratch + p->v_off, *m = scratch + p->m_off;
  int total_rows = p->B * p->th;
#pragma omp parallel num_threads (p->n_threads)
  {
    float *rb = scratch + p->rowbuf_off + (size_t) omp_get_thread_num () * p->rowbuf;
    for (int r0 = 0; r0 < total_rows; r0 += p->rows_per_block)
      {
        int nr = imin (p->rows_per_block, total_rows - r0);
        int n = nr * p->tw;                /* tiles in this block */
        int n_seg = (r0 + nr - 1) / p->th - r0 / p->th + 1;  /* images the block touches */
#pragma omp for collapse (2) schedule (static)
        for (int ci = 0; ci < p->Cin; ci++)
          for (int sg = 0; sg < n_seg; sg++)
            {
              Segment seg;
              if (block_segment (p, r0, nr, sg, &seg))
                {
                  if (p->tw < NARROW_TW)
                    wino_input_segment_narrow (p, x, v, rb, ci, &seg);
                  else
                    wino_input_segment_wide (p, x, v, rb, ci, &seg);
                }
            }
#pragma omp for schedule (static)
        for (int xi = 0; xi < 16; xi++)
          cpu_sgemm (FALSE, FALSE, p->Cout, n, p->Cin, U + (size_t) xi * p->Cin, 16 * p->Cin,
                     v + (size_t) xi * p->Cin * p->tb, p->tb, 0.0f, m + (size_t) xi * p->Cout * p->tb, p->tb);
#pragma omp for collapse (2) schedule (static)
        for (int co = 0; co < p->Cout; co++)
          for (int sg = 0; sg < n_seg; sg++)
            {
              Segment seg;
              if (block_segment (p, r0, nr, sg, &seg))
                {
                  if (p->tw < NARROW_TW)
                    wino_output_segment_narrow (p, m, y, bias, co, &seg);
                  else
                    wino_output_segment_wide (p, m, y, bias, co, &seg);
                }
            }
      }
  }
}

/* ---- DIRECT9 and GEMM: column matrix (kk, pixels of the block) times the weights ---- */

/* Column rows for channel ci, output row oy of image b, at block column pc: DIRECT9 stores the 9
 * transformed values (B^T d B)[r][c], r, c < 3, of each 3x3 window; GEMM stores the window itself. */
CPU_MULTIVERSION static void
column_row (const ConvPlan *p, const float *x, float *col, float *rb, int ci, int b, int oy, int pc)
{
  int k = p->k, s = p->stride, Wo = p->Wo, len = (Wo - 1) * s + k;
  const float *plane = x + ((size_t) b * p->Cin + ci) * p->H * p->W;
  for (int r = 0; r < k; r++)
    load_row (rb + r * len, plane, p->H, p->W, oy * s - p->top + r, -p->left, len);
  if (p->algo == CONV_GEMM)
    {
      for (int r = 0; r < k; r++)
        for (int c = 0; c < k; c++)
          {
            float *dst = col + ((size_t) ci * k * k + r * k + c) * p->pb + pc;
            const float *src = rb + r * len + c;
            for (int ox = 0; ox < Wo; ox++)
              dst[ox] = src[ox * s];
          }
      return;
    }
  const float *r0 = rb, *r1 = rb + len, *r2 = rb + 2 * len;
  float *o[9];
  for (int xi = 0; xi < 9; xi++)
    o[xi] = col + ((size_t) xi * p->Cin + ci) * p->pb + pc;
#pragma omp simd
  for (int ox = 0; ox < Wo; ox++)
    {
      int u = ox * s;
      float d[3][3] = {
        { r0[u], r0[u + 1], r0[u + 2] },
        { r1[u], r1[u + 1], r1[u + 2] },
        { r2[u], r2[u + 1], r2[u + 2] },
      };
      float t[3][3];                       /* rows 0..2 of B^T d */
      for (int c = 0; c < 3; c++)
        {
          t[0][c] = d[0][c] - d[2][c];
          t[1][c] = d[1][c] + d[2][c];
          t[2][c] = d[2][c] - d[1][c];
        }
      for (int r = 0; r < 3; r++)
        {
          o[XI[r][0]][ox] = t[r][0] - t[r][2];
          o[XI[r][1]][ox] = t[r][1] + t[r][2];
          o[XI[r][2]][ox] = t[r][2] - t[r][1];
        }
    }
}

/* One parallel region for the whole convolution; per block: column matrix (omp for), bias rows (omp for),
 * then each thread its part of the GEMM (cpu_sgemm_part), and a barrier before the next block reuses the
 * column matrix. */
static void
conv_columns (const ConvPlan *p, const float *Wt, const float *bias, const float *x, float *y, float *scratch)
{
  size_t plane = (size_t) p->Ho * p->Wo;
  /* DIRECT9 reads the first 9 of the 16 Winograd components of each output channel's row. */
  int lda = p->algo == CONV_DIRECT9 ? 16 * p->Cin : p->kk;
  float *cm = scratch + p->v_off;
#pragma omp parallel num_threads (p->n_threads)
  {
    int id = omp_get_thread_num (), nt = omp_get_num_threads ();
    float *rb = scratch + p->rowbuf_off + (size_t) id * p->rowbuf;
    for (int b = 0; b < p->B; b++)
      {
        const float *xb = x + (size_t) b * p->Cin * p->H * p->W;
        float *yb = y + (size_t) b * p->Cout * plane;
        for (int oy0 = 0; oy0 < p->Ho; oy0 += p->rows_per_block)
          {
            int nr = imin (p->rows_per_block, p->Ho - oy0);
            size_t p0 = (size_t) oy0 * p->Wo, n = (size_t) nr * p->Wo;
            const float *col = xb + p0;    /* direct_1x1: x (Cin, HW) is the column matrix */
            int ldb = (int) plane;
            if (!p->direct_1x1)
              {
#pragma omp for collapse (2) schedule (static) nowait
                for (int ci = 0; ci < p->Cin; ci++)
                  for (int r = 0; r < nr; r++)
                    column_row (p, x, cm, rb, ci, b, oy0 + r, r * p->Wo);
                col = cm;
                ldb = p->pb;
              }
#pragma omp for schedule (static)
            for (int co = 0; co < p->Cout; co++)
              fill_bias_rows (yb + co * plane, bias ? bias + co : NULL, 1, plane, p0, n);
            cpu_sgemm_part (id, nt, FALSE, FALSE, p->Cout, (int) n, p->kk, Wt, lda, col, ldb, 1.0f, yb + p0,
                            (int) plane);
            if (!p->direct_1x1)
              {
#pragma omp barrier
              }
          }
      }
  }
}

/* ---- backend entry points ---- */

size_t
cpu_conv2d_scratch (DdpmBackend *be, int B, int Cin, int H, int W, int Cout, int k, int stride, const int pad[4])
{
  ConvPlan p;
  conv_plan (&p, cpu_backend (be)->n_threads, B, Cin, H, W, Cout, k, stride, pad);
  return p.total * sizeof (float);
}

void
cpu_conv2d (DdpmBackend *be, const DdpmLinearW *w, const void *x, void *y, int B, int H, int W, int stride,
            const int pad[4], const DdpmConvEpilogue *epi)
{
  CpuBackend *cpu = cpu_backend (be);
  ConvPlan p;
  conv_plan (&p, cpu->n_threads, B, w->in, H, W, w->out, w->k, stride, pad);
  g_assert (p.total * sizeof (float) <= cpu->scratch_bytes);
  if (p.algo == CONV_WINOGRAD)
    conv_winograd (&p, w->weight, w->bias, x, y, cpu->scratch);
  else
    conv_columns (&p, w->weight, w->bias, x, y, cpu->scratch);
  /* the epilogue as separate passes: the same float operations, in the same order, as the fused CUDA one */
  if (epi == NULL)
    return;
  const int HWo = p.Ho * p.Wo, C = w->out;
  if (epi->channel_bias != NULL)
    cpu_add_channel_bias_strided (y, epi->channel_bias, B, C, HWo, ddpm_conv_epilogue_stride (epi, C));
  if (epi->residual != NULL)
    {
      g_return_if_fail (epi->residual != y);
      cpu_add_scaled (be, epi->residual, y, y, (size_t) B * C * HWo, epi->residual_scale);
    }
}
