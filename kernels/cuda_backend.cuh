/* cuda_backend.cuh: the CUDA backend's state and the helpers its op files share.
 *
 * One CudaBackend per context: one device, one non-default stream on which every op is queued (so a whole
 * forward + scheduler step can be captured into one CUDA graph), one scratch arena, and a sticky error:
 * ops cannot return errors (backend.h), so the first failure is kept, warned about, and reported by the
 * next call that can return one (check_error, graph_end, graph_launch, reserve_scratch). */
#pragma once

#include "cuda_compat.cuh"
#include "cublas_dl.h"

#include "backend.h"

#include <utility>

/* Element types of GEMM operands. */
enum CudaType { CT_F32, CT_F16, CT_BF16 };

/* How conv2d runs in fp16/bf16 ($DDPM_CUDA_CONV): the fused implicit-GEMM tensor-core kernel on a
 * channels-last copy of the input where the shape allows (conv2d_nhwc.cu; the default, or "nhwc"), else on
 * NCHW (conv2d.cu; "implicit" forces it everywhere), or im2col + cuBLAS GEMM + bias ("gemm"); "mma": as the
 * default, but the 128 x 128 mma.sync tile wherever it fills a wave without a K split; "wgmma": the same with
 * conv2d_wgmma.cu's 128 x 128 wgmma tile (sm_90a, Cin % 64 == 0; 128 x 256 with $DDPM_CUDA_WGMMA_BN=256;
 * candidates until a GPU run times them). fp32
 * always takes the GEMM path (exact reference mode). */
enum CudaConvAlgo { CONV_AUTO, CONV_IMPLICIT, CONV_NHWC, CONV_GEMM, CONV_MMA, CONV_WGMMA };
/* Implicit-GEMM conv tiles (output channels x output pixels): 64 x 64, 128 x 64, and the 128 x 128
 * mma.sync tile, the 128 x 128 (or 128 x 256) wgmma tile; $DDPM_CUDA_CONV_TILE=small|large|mma|wgmma forces one wherever it
 * fits (tests), TILE_AUTO lets conv2d.cu pick. TILE_WGMMA_WIDE: the 128 x 256 wgmma tile whatever
 * $DDPM_CUDA_WGMMA_BN says (a shape's timed pick, conv_pick.cu; no switch names it). */
enum CudaConvTile { TILE_AUTO = -1, TILE_SMALL, TILE_LARGE, TILE_MMA, TILE_WGMMA, TILE_WGMMA_WIDE };
/* Who sums a conv's split-K partial tiles ($DDPM_CUDA_CONV_REDUCE): a second launch ("kernel", the default:
 * fastest on the H100), the blocks of the tile's thread-block cluster, each a share of the tile read from the
 * others' shared memory ("cluster", where the creation probe launches one: sm_90+), or the last block of each
 * tile to finish, through float32 partials in scratch and a counter ("last-block"). */
enum CudaConvReduce { REDUCE_CLUSTER, REDUCE_KERNEL, REDUCE_LAST_BLOCK };
/* The switches a convolution's plan reads (conv2d.cu): the backend's ($DDPM_CUDA_CONV, _CONV_TILE, _CONV_SPLITK),
 * or with $DDPM_CUDA_CONV_PICK=timed the fastest of the plans they can make, timed for that shape (conv_pick.cu). */
struct ConvPick {
  CudaConvAlgo algo;
  CudaConvTile tile;
  int splitk;
};
/* $DDPM_CUDA_CONV_PICK: off (the default), "timed" (each shape's fastest candidate), "slowest" (tests: the
 * candidate machinery on plans the defaults never make). */
enum CudaConvPickMode { PICK_OFF, PICK_TIMED, PICK_SLOWEST };
/* GroupNorm ($DDPM_CUDA_GN): one block per group, or statistics split over several blocks. */
enum CudaGnMode { GN_AUTO, GN_FUSED, GN_SPLIT, GN_CLUSTER };
/* attention core: flash_attention.cu's mma.sync kernel or the WMMA one where they fit (attention.cu), or the cuBLAS
 * score / softmax / PV path */
enum CudaAttnMode { ATTN_AUTO, ATTN_MMA, ATTN_SPLIT, ATTN_CLUSTER, ATTN_WMMA, ATTN_CUBLAS };

#define CUDA_STAGING_SLOTS 64
#define CUDA_STAGING_SLOT_BYTES (64 * 1024)
#define CUDA_GN_STATS_ENTRIES (256 * 1024)   /* (mean, M2, count) partials for GroupNorm */
#define CUDA_BLAS_WORKSPACE_BYTES ((size_t) 32 << 20)
#define CUDA_CONV_COUNTERS 65536             /* split-K tile counters (conv2d.cu), zero between launches */

/* Weights are carved from large device chunks: consecutive uploads of one kind land next to each other
 * (attention.cu fuses to_q / to_k / to_v into one GEMM when they do), and a model is a few allocations
 * rather than hundreds. Chunks live until the backend is destroyed; free() of a weight is a no-op. */
#define CUDA_ARENA_CHUNK_BYTES ((size_t) 64 << 20)
#define CUDA_ARENA_MAX_CHUNKS 256

struct CudaArena {
  char *chunk[CUDA_ARENA_MAX_CHUNKS];
  size_t size[CUDA_ARENA_MAX_CHUNKS];
  int n;
  size_t used;                     /* bytes used in chunk[n - 1] */
};

struct CudaProfile;                /* profile.cu */

/* A split convolution's second launch (the sum of its float partials through its epilogue into y), held
 * back with $DDPM_CUDA_DEFER_REDUCE=1 (conv2d.cu): a GroupNorm that reads y next sums the partials itself
 * (group_norm.cu gn_regs_launch: one launch fewer); anything else the stream runs first launches it as it was
 * (cuda_flush_reduce, from launch_status and the stream's other entry points). */
struct CudaPendingReduce {
  const float *partial;                 /* [tile][split][bm * IG_BN] */
  const float *bias;                    /* the conv's (Cout) or NULL */
  void *y;                              /* (B, Cout, HoWo) act */
  int splits, Cout, HoWo, bm, bn, gx;   /* a tile: bm channels x bn pixels; gx tiles along the pixels */
  long long P;                          /* B * HoWo */
  const void *channel_bias, *residual;  /* the ConvEpi's, act */
  int cb_stride;
  float scale;
};

struct CudaBackend {
  DdpmBackend base;                /* first member: the engine holds a DdpmBackend * */
  int device;
  int sm_count, cc_major, cc_minor;
  size_t act_size;                 /* bytes per activation element: 4 or 2 */
  CudaType act_type;
  cudaStream_t stream;
  gboolean capturing;
  cudaGraph_t graph;
  cudaGraphExec_t graph_exec;

  CudaArena matrices, vectors;     /* conv / linear weights (act type), biases and norms (float32) */
  void *scratch;                   /* reserve_scratch's arena */
  size_t scratch_bytes;
  float *gn_stats;                 /* CUDA_GN_STATS_ENTRIES * 3 floats */
  unsigned long long *counter;     /* count_nonfinite's result */
  int *conv_counters;              /* CUDA_CONV_COUNTERS, zeroed once; each split-K launch leaves them 0 */

  /* Pinned host slots for small host->device copies (write_params, to_device), so the host never waits
   * for the GPU to copy them; an event per slot says when it may be reused. */
  uint8_t *staging;
  cudaEvent_t staging_events[CUDA_STAGING_SLOTS];
  int staging_next;

  DdpmCublas blas;
  gboolean have_blas;
  cublasHandle_t blas_handle;
  void *blas_workspace;

  CudaConvAlgo conv_algo;
  CudaConvTile conv_tile;          /* $DDPM_CUDA_CONV_TILE (tests); TILE_MMA: wherever the channels-last kernel runs */
  int conv_splitk;                 /* $DDPM_CUDA_CONV_SPLITK: 0 auto, else forced K splits (tests) */
  CudaConvReduce conv_reduce;      /* who sums split-K partials ($DDPM_CUDA_CONV_REDUCE) */
  int conv_cluster_max;            /* blocks a conv's cluster may have: 16, 8, or 0 (no clusters here) */
  gboolean conv_wgmma_ready;       /* conv2d_wgmma.cu's kernel may run: asked for ($DDPM_CUDA_CONV=wgmma or
                                    * _TILE=wgmma), a cc 9.0 device, and its sm_90a code there (cuda_conv_wgmma_prepare) */
  gboolean wgmma_overlap;          /* $DDPM_CUDA_WGMMA_OVERLAP=1: its 4-stage pipeline with one wgmma group in flight */
  int wgmma_bn;                    /* its pixels per tile: 128, or 256 with $DDPM_CUDA_WGMMA_BN=256 (m64n256k16) */
  gboolean conv_wgmma_wide_ready;  /* the 128 x 256 pipeline may run too (its shared memory allowed): picks may name
                                    * TILE_WGMMA_WIDE whatever wgmma_bn is */
  gboolean wgmma_split;            /* K split where the tile alone would not fill a wave (conv_plan; not with
                                    * $DDPM_CUDA_WGMMA_SPLIT=0) */
  CudaConvPickMode conv_pick;      /* $DDPM_CUDA_CONV_PICK */
  gboolean conv_pick_log;          /* $DDPM_CUDA_CONV_PICK_LOG=1: each shape's times and pick on stderr */
  GHashTable *conv_picks;          /* shape key -> ConvPick timed at planning (conv_pick.cu), or given by
                                    * $DDPM_CUDA_CONV_PICKS; emptied whenever the switches are read again */
  gboolean conv_picks_malformed;   /* CONV_PICKS had an entry that is not "KEY:ALGO.TILE.SPLITK" */
  char *variant_frozen;            /* the last cuda_variant_frozen answer */
  gboolean conv_pointwise;         /* 1x1 convs on conv2d_pointwise.cu's kernel ($DDPM_CUDA_CONV_PW=0: conv2d.cu's) */
  long long proj_conv_pixels;      /* attention's projections on that kernel too up to this many pixels (B * HW):
                                    * batch-1 sampling then never touches cuBLAS, whose first use cost ~90-165 ms
                                    * on the H100 (2026-11-27); above it cuBLAS is faster (b128: 3.5 %).
                                    * $DDPM_CUDA_PROJ=conv: always, =cublas: never */
  int conv_split_blocks_per_sm;    /* $DDPM_CUDA_CONV_SPLIT_BLOCKS_PER_SM: split K until this many blocks per SM (2) */
  int conv_split_min_slices;       /* $DDPM_CUDA_CONV_SPLIT_MIN_SLICES: at least this many K slices per split (2) */
  CudaGnMode gn_mode;              /* $DDPM_CUDA_GN: =fused, =split, =cluster (groups split over a thread-block
                                    * cluster where few groups would leave SMs idle; opt-in until a GPU times it) */
  int gn_cluster;                  /* $DDPM_CUDA_GN_CLUSTER: that cluster's size (2 to 16) wherever it fits (tests;
                                    * 0: its own rule) */
  int gn_cluster_max;              /* GroupNorm clusters of up to 16 or 8 blocks can run here, or 0 (sm_90+, asked
                                    * for; cuda_gn_cluster_prepare) */
  gboolean upsample_conv_fuse;     /* upsample_conv2d samples x at half resolution ($DDPM_CUDA_UPSAMPLE_CONV=0: the
                                    * two ops) */
  CudaAttnMode attn_mode;          /* $DDPM_CUDA_ATTN: =mma flash_attention.cu's core only, =split flash_split.cu's
                                    * wherever it applies, =cluster flash_cluster.cu's wherever it applies (default:
                                    * cluster, else split, where blocks are few), =wmma the WMMA core, =cublas none
                                    * of them */
  int fa_cluster;                  /* $DDPM_CUDA_FA_CLUSTER: flash_cluster.cu's cluster size (2, 4, 8; 0: its own
                                    * rule; -1 with =0: that core off) */
  gboolean flash_cluster_ready;    /* its kernels may use the shared memory and clusters of 4 fit (sm_90+) */
  int fa_warps;                    /* warps per WMMA attention block: 8, or 4 with $DDPM_CUDA_FA_WARPS=4 */
  size_t smem_per_block_optin;     /* dynamic shared memory a block may have (bytes; $DDPM_CUDA_SMEM_LIMIT lowers it) */
  gboolean flash_mma_ready;        /* the mma attention kernels may use that much (cuda_flash_mma_prepare) */
  int fa_kw;                       /* $DDPM_CUDA_FA_KW: keys per warp of the split core (0: its own rule) */
  gboolean proj_split;             /* attention's projections as convs split K like other convs, partials in
                                    * the attention's scratch ($DDPM_CUDA_PROJ_SPLIT=0: unsplit) */
  gboolean defer_reduce;           /* split-K sums may wait for the next GroupNorm ($DDPM_CUDA_DEFER_REDUCE=1) */
  gboolean reduce_pending;         /* `pending` holds one not launched yet */
  CudaPendingReduce pending;
  gboolean rider_pending;          /* `rider` holds a second one: a split conv launched while `pending` waited that
                                    * neither reads nor writes what it does (a resnet's shortcut after conv1), its
                                    * partials after pending's; the GroupNorm taking `pending` sums it too where it
                                    * has the same shape (conv2d.cu conv_may_pass_pending, rider_partials_at) */
  CudaPendingReduce rider;
  gboolean hold_pending;           /* set around the launch of a conv that may pass `pending` (unsplit, or the
                                    * rider): launch_status must not flush it */
  gboolean conv_prefetch;          /* the cp.async conv kernels copy their first weight slices before the wait on
                                    * the previous kernel ($DDPM_CUDA_CONV_PREFETCH=0: after it) */
  int direct_warps;                /* $DDPM_CUDA_DIRECT_WARPS: at most this many warps per direct conv block (0:
                                    * 128 / its output channels per thread) */
  int fa_ds, fa_qt;                /* $DDPM_CUDA_FA_DS / _FA_QT: the mma attention plan's dims per warp (16..256)
                                    * and query tiles per block (0: its own rule) */
  gboolean attn_out_fuse;          /* the mma attention core also does the out projection (one head;
                                    * $DDPM_CUDA_ATTN_OUT=0: cuBLAS + bias / residual pass) */
  gboolean gn_conv_fuse;           /* group_norm_conv2d writes the channels-last conv input directly
                                    * ($DDPM_CUDA_GN_CONV=0: no) */
  gboolean pdl;                    /* kernels launched with programmatic dependent launch (sm_90+, unless
                                    * $DDPM_CUDA_PDL=0 or profiling; cuda_compat.cuh grid_dependency_wait) */
  char **variants;                 /* the settings the tuner may try (cuda_switches.cu); [0] "" the defaults */
  char *variant_settings;          /* the current settings (cuda_set_variant), "" for the defaults */
  char **variant_tokens;           /* their NAME=value tokens */
  char device_name[256];           /* the device's own name, for the description */
  char blas_note[96];              /* "cuBLAS", or why not */
  GError *error;                   /* first asynchronous failure, until reported */
  CudaProfile *profile;            /* $DDPM_CUDA_PROFILE: per-kernel event times, else NULL */
};

static inline CudaBackend *
cuda_backend (DdpmBackend *be)
{
  return reinterpret_cast<CudaBackend *> (be);
}

/* cuda_switches.cu: $DDPM_CUDA_<name>, else the current variant's setting of name, else NULL. */
const char *cuda_switch (const CudaBackend *cb, const char *name);
/* Reads every switch into cb (probing what asks for probes: GroupNorm and convolution clusters, wgmma) and
 * writes the description; outside graph captures. */
void cuda_switches_read (CudaBackend *cb);
/* Why a switch asked for cannot take effect here, or NULL. */
const char *cuda_switches_unmet (const CudaBackend *cb);
/* Whether settings are NAME=value tokens (NAME in capitals, digits and '_'; value not empty) between blanks. */
gboolean cuda_settings_well_formed (const char *settings);
/* cb->variants from the built-in list or $DDPM_CUDA_VARIANTS, less those not well formed or setting a switch the
 * environment sets. */
void cuda_variants_init (CudaBackend *cb);

/* conv_pick.cu: forgets the timed picks (the switches they were timed under changed), frees them when destroy. */
void cuda_conv_picks_clear (CudaBackend *cb, gboolean destroy);
/* conv_pick.cu: the picks "KEY:ALGO.TILE.SPLITK,..." ($DDPM_CUDA_CONV_PICKS, as cuda_conv_picks_text writes
 * them) into the table; FALSE where an entry is malformed (the well-formed ones are taken). */
gboolean cuda_conv_picks_parse (CudaBackend *cb, const char *text);
/* conv_pick.cu: the table as that text (sorted by key), NULL when it is empty; free it. */
char *cuda_conv_picks_text (const CudaBackend *cb);
/* profile.cu: a kernel that keeps the GPU busy for about ns nanoseconds, so the host queues what follows before the
 * GPU reaches it and events time the kernels, not the launches (the emulator returns at once). */
void cuda_spin (CudaBackend *cb, long long ns);

/* Keeps the first failure (code DDPM_ERROR_DEVICE unless given) and warns once. */
void cuda_fail (CudaBackend *cb, int code, const char *format, ...) G_GNUC_PRINTF (3, 4);
/* FALSE (and cuda_fail) when e is an error; `what` names the call. */
gboolean cuda_ok (CudaBackend *cb, cudaError_t e, const char *what);
/* The fallback for an allocation failure: NOMEM with sizes and the advice users need. */
void cuda_set_nomem (CudaBackend *cb, GError **error, size_t bytes, const char *what);

/* profile.cu: with $DDPM_CUDA_PROFILE set, events around every kernel (begin/end), one round's times
 * collected after each host wait (flush), a table on stderr at destroy. */
void cuda_profile_init (CudaBackend *cb);
void cuda_profile_begin (CudaBackend *cb, const char *name);
void cuda_profile_end (CudaBackend *cb);
void cuda_profile_flush (CudaBackend *cb);
void cuda_profile_report_and_free (CudaBackend *cb);

#ifndef DDPM_CUDA_EMU
/* A launch on cb->stream with programmatic dependent launch allowed: the kernel may start before the
 * previous one in the stream ends, and waits for it in grid_dependency_wait. attr: storage for the
 * attribute, alive until the launch. */
static inline cudaLaunchConfig_t
pdl_config (const CudaBackend *cb, dim3 grid, dim3 block, size_t smem, cudaLaunchAttribute *attr)
{
  attr->id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr->val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = cb->stream;
  config.attrs = attr;
  config.numAttrs = 1;
  return config;
}
#endif

/* Lets each of n kernels launch with clusters of more than 8 blocks (H100: up to 16). Done once, at creation
 * (cuda_conv_cluster_probe), not inside a graph capture; a launch above 8 without it fails. */
static inline bool
allow_large_clusters (const void *const *kernels, int n)
{
  for (int i = 0; i < n; i++)
    if (cudaFuncSetAttribute (kernels[i], cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess)
      return false;
  return true;
}

/* Whether at least one cluster of cluster_z blocks (threads each, smem bytes of dynamic shared memory) of
 * kernel can be resident here (cudaOccupancyMaxActiveClusters): the creation probes of the cluster kernels. */
static inline bool
clusters_fit (const void *kernel, unsigned cluster_z, unsigned threads, size_t smem)
{
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = 1;
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = cluster_z;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3 (1, 1, cluster_z);
  config.blockDim = dim3 (threads);
  config.dynamicSmemBytes = smem;
  config.attrs = &attr;
  config.numAttrs = 1;
  int clusters = 0;
  return cudaOccupancyMaxActiveClusters (&clusters, kernel, &config) == cudaSuccess && clusters >= 1;
}

/* Whether [a, a + an) and [b, b + bn) share a byte (NULL or empty: no): the held-back sums' hazard checks. */
static inline bool
bytes_overlap (const void *a, size_t an, const void *b, size_t bn)
{
  const char *ca = (const char *) a, *cb_ = (const char *) b;
  return a != NULL && b != NULL && an > 0 && bn > 0 && ca < cb_ + bn && cb_ < ca + an;
}

/* conv2d.cu: launches the held-back split-K sums, if any (before anything else touches the stream). */
void cuda_flush_reduce (CudaBackend *cb);
/* conv2d.cu: bytes of a held-back sum's float partials */
size_t pending_partial_bytes (const CudaPendingReduce &r);

/* Launches kernel<<<grid, block, smem, cb->stream>>>(args) (or runs it in the emulator) and returns the
 * launch's status (no cuda_fail). cluster_z > 1: in thread-block clusters of that many blocks along z (grid.z
 * a multiple of it; only where cb->conv_cluster_max allows, probed at creation). With programmatic dependent
 * launch when cb->pdl. Arguments are converted to the kernel's parameter types. */
template <typename... KArgs, typename... Args>
static inline cudaError_t
launch_status (CudaBackend *cb, dim3 grid, dim3 block, size_t smem, unsigned cluster_z, void (*kernel) (KArgs...),
               Args... args)
{
  static_assert (sizeof... (KArgs) == sizeof... (Args), "kernel argument count");
  if (G_UNLIKELY ((cb->reduce_pending || cb->rider_pending) && !cb->hold_pending))
    cuda_flush_reduce (cb);             /* it comes first (it writes what this kernel may read) */
#ifdef DDPM_CUDA_EMU
  emu_launch ((const void *) kernel, grid, block, smem, cb->stream, [=] () { kernel (((KArgs) args)...); },
              cluster_z);
  return cudaGetLastError ();
#else
  if (!cb->pdl && cluster_z <= 1)
    {
      kernel<<<grid, block, smem, cb->stream>>> (((KArgs) args)...);
      return cudaGetLastError ();
    }
  cudaLaunchAttribute attrs[2];
  cudaLaunchConfig_t config = pdl_config (cb, grid, block, smem, &attrs[0]);
  config.numAttrs = cb->pdl ? 1 : 0;
  if (cluster_z > 1)
    {
      cudaLaunchAttribute *c = &attrs[config.numAttrs++];
      c->id = cudaLaunchAttributeClusterDimension;
      c->val.clusterDim.x = 1;
      c->val.clusterDim.y = 1;
      c->val.clusterDim.z = cluster_z;
    }
  return cudaLaunchKernelEx (&config, kernel, ((KArgs) args)...);
#endif
}

/* launch_status without clusters, a failure kept (cuda_ok). */
template <typename... KArgs, typename... Args>
static inline void
launch_raw (CudaBackend *cb, const char *name, dim3 grid, dim3 block, size_t smem, void (*kernel) (KArgs...),
            Args... args)
{
  const cudaError_t e = launch_status (cb, grid, block, smem, 1, kernel, args...);
  if (e != cudaSuccess)
    cuda_ok (cb, e, name);
}

/* launch_status, a failure kept, timed when profiling; `name` (a string literal) labels the kernel in the
 * profile. */
template <typename... KArgs, typename... Args>
static inline void
launch_cluster (CudaBackend *cb, const char *name, dim3 grid, dim3 block, size_t smem, unsigned cluster_z,
                void (*kernel) (KArgs...), Args... args)
{
  if (G_UNLIKELY (cb->profile != NULL))
    cuda_profile_begin (cb, name);
  const cudaError_t e = launch_status (cb, grid, block, smem, cluster_z, kernel, args...);
  if (e != cudaSuccess)
    cuda_ok (cb, e, name);
  if (G_UNLIKELY (cb->profile != NULL))
    cuda_profile_end (cb);
}

/* launch_cluster without clusters: the launch of every kernel but the split convolutions'. */
template <typename... KArgs, typename... Args>
static inline void
launch (CudaBackend *cb, const char *name, dim3 grid, dim3 block, size_t smem, void (*kernel) (KArgs...),
        Args... args)
{
  launch_cluster (cb, name, grid, block, smem, 1, kernel, args...);
}

/* Blocks for a grid-stride elementwise kernel of n elements with `threads` per block. */
static inline unsigned
elementwise_blocks (const CudaBackend *cb, size_t n, int threads)
{
  size_t want = (n + (size_t) threads - 1) / (size_t) threads;
  size_t cap = (size_t) cb->sm_count * 32;
  if (want > cap)
    want = cap;
  return want == 0 ? 1u : (unsigned) want;
}

/* Runs body with T = the activation type of cb. */
#define DISPATCH_ACT(cb, T, ...)                                     \
  do {                                                               \
    switch ((cb)->act_type)                                          \
      {                                                              \
      case CT_F32: { typedef float T; __VA_ARGS__; } break;          \
      case CT_F16: { typedef __half T; __VA_ARGS__; } break;         \
      case CT_BF16: { typedef __nv_bfloat16 T; __VA_ARGS__; } break; \
      }                                                              \
  } while (0)

/* Row stride (elements) of an uploaded conv / linear weight: in * k * k rounded up to 8, zero padded, so
 * every row starts 16-byte aligned for vector loads and tensor-core GEMMs. */
static inline int
weight_ld (const DdpmLinearW *w)
{
  int kk = w->k > 0 ? w->k * w->k : 1;
  return (w->in * kk + 7) & ~7;
}

/* Row-major GEMM: C (M x N, ldc) = alpha op(A) op(B) + beta C, op(A) (M x K), op(B) (K x N); ta: A is
 * stored (K x M, lda) and transposed; tb likewise. Batched over `batch` with element strides sA, sB, sC
 * (0 broadcasts). A and B of type ab, C of type c, fp32 accumulation. cuBLAS when loaded, else gemm.cu's
 * kernel. */
void cuda_gemm_rm (CudaBackend *cb, bool ta, bool tb, int M, int N, int K, float alpha, const void *A, int lda,
                   long long sA, const void *B, int ldb, long long sB, float beta, void *C, int ldc, long long sC,
                   int batch, CudaType ab, CudaType c);

/* y (B, C, HW) += bias (C) (float32), in place on act y. */
void cuda_add_bias (CudaBackend *cb, void *y, const float *bias, int B, int C, int HW);
/* h (B, C, HW) += v[b * stride + c] (act) */
void cuda_add_channel_bias_strided (CudaBackend *cb, void *h, const void *v, int B, int C, int HW, int stride);

/* group_norm.cu: cuda_group_norm's result written channels last, xh (B, HW, C), for a convolution that reads
 * it (the register kernel where a group fits it, else statistics kernel + a normalising transpose). FALSE
 * (nothing launched) for shapes it does not take. */
bool cuda_group_norm_nhwc (CudaBackend *cb, const DdpmNormW *w, const void *x, void *xh, int B, int C, int HW, int G,
                           float eps, const void *scale_shift, bool silu);

/* ---- ops (one file per operation) ---- */
void cuda_cast_in (DdpmBackend *be, const float *x, void *y, size_t n);
void cuda_cast_out (DdpmBackend *be, const void *x, float *y, size_t n);
void cuda_gather_rows (DdpmBackend *be, const void *table, const float *row_of, int n, const float *index, void *y,
                       int B, int row_elems);
void cuda_timestep_embedding (DdpmBackend *be, const float *t, void *y, int B, int dim, gboolean flip,
                              float freq_shift);
void cuda_linear (DdpmBackend *be, const DdpmLinearW *w, const void *x, void *y, int M, gboolean silu_in);
size_t cuda_conv2d_scratch (DdpmBackend *be, int B, int Cin, int H, int W, int Cout, int k, int stride,
                            const int pad[4]);
void cuda_conv2d (DdpmBackend *be, const DdpmLinearW *w, const void *x, void *y, int B, int H, int W, int stride,
                  const int pad[4], const DdpmConvEpilogue *epi);
gboolean cuda_conv2d_f32_ends (DdpmBackend *be, const DdpmLinearW *w, const void *x, gboolean x_f32, void *y,
                               gboolean y_f32, int B, int H, int W, int stride, const int pad[4],
                               const DdpmConvEpilogue *epi);
/* conv2d.cu: y_b (Cout x HW) = W x_b (Cin x HW) for every image b, no bias: attention's projections as a 1x1
 * convolution (attention's operands fill the scratch): conv2d_direct.cu's kernel where the plan takes it
 * (K <= 32), else conv2d_pointwise.cu's, its K split with float partials in `partials` (the caller's region of
 * scratch, partial_bytes long, at least cuda_projection_scratch's size) or unsplit where they do not fit
 * ($DDPM_CUDA_PROJ_SPLIT=0: always unsplit). FALSE (nothing launched) where neither kernel takes it (fp32,
 * $DDPM_CUDA_CONV=gemm / implicit / nhwc, $DDPM_CUDA_CONV_PW=0, shapes, alignment) or B * HW exceeds
 * cb->proj_conv_pixels: the caller uses cuBLAS. */
bool cuda_projection (CudaBackend *cb, const DdpmLinearW *w, const void *x, void *y, int B, int HW, void *partials,
                      size_t partial_bytes);
size_t cuda_projection_scratch (const CudaBackend *cb, int out, int in, int B, int HW);
/* conv2d_nhwc.cu, once at creation (after PDL is decided), for $DDPM_CUDA_CONV_REDUCE=cluster: the largest
 * cluster (16 or 8 blocks) the conv kernels can launch with here, as a captured graph runs it, or 0 (below
 * sm_90, or any failure; no error kept). For 16 it lets every cluster kernel of the three conv files launch
 * above 8 first. */
int cuda_conv_cluster_probe (CudaBackend *cb);
/* conv2d_wgmma.cu, once at creation: whether its kernel may run here (fp16/bf16 on a cc 9.0 device whose code
 * has wgmma, asked by a probe kernel; its shared memory allowed). */
bool cuda_conv_wgmma_prepare (CudaBackend *cb);
void cuda_group_norm (DdpmBackend *be, const DdpmNormW *w, const void *x, void *y, int B, int C, int HW, int G,
                      float eps, const void *scale_shift, gboolean silu);
void cuda_group_norm_conv2d (DdpmBackend *be, const DdpmNormW *w_norm, int G, float eps, const void *scale_shift,
                             gboolean silu, const DdpmLinearW *w, const void *x, void *normed, void *y, int B, int H,
                             int W, int stride, const int pad[4], const DdpmConvEpilogue *epi);
void cuda_upsample_conv2d (DdpmBackend *be, const DdpmLinearW *w, const void *x, void *upsampled, void *y, int B, int H,
                           int W, const int pad[4], const DdpmConvEpilogue *epi);
void cuda_add_channel_bias (DdpmBackend *be, void *h, const void *v, int B, int C, int HW);
void cuda_add_scaled (DdpmBackend *be, const void *a, const void *b, void *y, size_t n, float scale);
void cuda_concat_channels (DdpmBackend *be, const void *a, int Ca, const void *b, int Cb, void *y, int B, int HW);
void cuda_upsample_nearest2x (DdpmBackend *be, const void *x, void *y, int B, int C, int H, int W);
size_t cuda_attention_scratch (DdpmBackend *be, int B, int C, int HW, int heads);
/* flash_attention.cu: whether the mma.sync attention core takes (B * heads, HW, d) on this device (out: with the
 * out projection), and that core: O (B, C, HW) = softmax((Q + bq)^T (K + bk) / sqrt(d)) (V + bv)^T per head,
 * Q, K, V per b * heads + h at multiples of stride, biases float (C) or NULL (bk is not needed); with out (one
 * head only), y = (Wo O + bo + residual) * scale instead of O. FALSE (nothing launched) where it does not fit. */
struct CudaFlashOut {
  const void *weight;                   /* Wo (C x C), row stride ldw, act type */
  int ldw;
  const float *bias;                    /* bo (C) or NULL */
  const void *residual;                 /* (B, C, HW); may be y */
  void *y;
  float scale;
};
void cuda_flash_mma_prepare (CudaBackend *cb);   /* once, at creation: sets flash_mma_ready */
bool cuda_flash_mma_fits (const CudaBackend *cb, int BH, int HW, int d, bool out);
/* flash_split.cu: the core with the keys of one query tile split across its warps (few blocks) */
bool cuda_flash_split_fits (const CudaBackend *cb, int BH, int HW, int d, bool out);
bool cuda_flash_split_allow_smem (const CudaBackend *cb);
bool cuda_flash_attention_split (CudaBackend *cb, const void *Q, const void *K, const void *V, void *O, const float *bq,
                                 const float *bv, int B, int heads, int C, int HW, long long stride,
                                 const CudaFlashOut *out);
/* group_norm.cu, once at creation where $DDPM_CUDA_GN=cluster: the largest cluster (16 or 8 blocks) its kernels
 * can launch with here (sm_90+; above 8 it lets each of them), or 0. */
int cuda_gn_cluster_prepare (const CudaBackend *cb);

/* flash_cluster.cu: the one-head block (core + out projection) with the keys of a query tile split across a
 * thread-block cluster (few blocks, sm_90+) */
bool cuda_flash_cluster_prepare (const CudaBackend *cb);
bool cuda_flash_cluster_fits (const CudaBackend *cb, int BH, int HW, int d);
bool cuda_flash_attention_cluster (CudaBackend *cb, const void *Q, const void *K, const void *V, const float *bq,
                                   const float *bv, int B, int heads, int C, int HW, long long stride,
                                   const CudaFlashOut *out);
bool cuda_flash_attention_mma (CudaBackend *cb, const void *Q, const void *K, const void *V, void *O, const float *bq,
                               const float *bv, int B, int heads, int C, int HW, long long stride,
                               const CudaFlashOut *out);
void cuda_attention (DdpmBackend *be, const DdpmAttentionW *w, const void *normed, const void *residual, void *y,
                     int B, int C, int HW, int heads, float scale);
void cuda_scheduler_step (DdpmBackend *be, const void *params_dev, float *x, const float *model_out,
                          const float *noise, float *x0_out, size_t n_per_image, int batch);
void cuda_randn (DdpmBackend *be, float *y, uint64_t seed, uint64_t stream, size_t n_per_image, int batch);
size_t cuda_count_nonfinite (DdpmBackend *be, const float *x, size_t n);
