/* cuda_emu.cc: the CPU emulation behind cuda_emu.h (tests only; see there for what it is and is not).
 *
 * Scheduling: a block's threads are fibers run one at a time until each reaches a barrier or ends. Warp
 * by warp, a warp's lanes run until all of them wait at a warp barrier (shuffles, ldmatrix, mma), which
 * releases them, or at __syncthreads; when every live thread of the block waits at __syncthreads, all of
 * them go on. So between two __syncthreads one warp runs its whole stretch before the next starts, and odd
 * rounds reverse the order of warps and of lanes: code that reads shared memory another warp or thread
 * writes without a barrier in between sees stale or early data in one of the orders.
 *
 * Memory: "device" memory is host memory; $DDPM_CUDA_EMU_MEM_LIMIT (bytes) makes cudaMalloc fail past a
 * total, to test out-of-memory paths. */
#include "cuda_emu.h"

#include <time.h>

#include <sys/mman.h>
#include <immintrin.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <array>
#include <vector>

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

/* Switching fibers: glibc's swapcontext makes a signal-mask system call per switch (~2 us in our sandboxes,
 * which made a UNet forward take a minute); on x86-64 a switch is only the callee-saved registers and the
 * stack pointer. emu_ctx_switch (from, to): pushes them, stores rsp in *from, loads `to`, pops, returns. */
#if defined(__x86_64__)
extern "C" __attribute__ ((visibility ("hidden"))) void emu_ctx_switch (void **from_sp, void *to_sp);
asm (".text\n"
     ".globl emu_ctx_switch\n"
     ".hidden emu_ctx_switch\n"            /* called directly, not through the PLT */
     ".type emu_ctx_switch, @function\n"
     "emu_ctx_switch:\n"
     "  pushq %rbp\n"
     "  pushq %rbx\n"
     "  pushq %r12\n"
     "  pushq %r13\n"
     "  pushq %r14\n"
     "  pushq %r15\n"
     "  movq %rsp, (%rdi)\n"
     "  movq %rsi, %rsp\n"
     "  popq %r15\n"
     "  popq %r14\n"
     "  popq %r13\n"
     "  popq %r12\n"
     "  popq %rbx\n"
     "  popq %rbp\n"
     "  ret\n"
     ".size emu_ctx_switch, .-emu_ctx_switch\n");
#else
#error "the CUDA emulator's fiber switch is written for x86-64"
#endif

/* Under AddressSanitizer (an emulator built with -Db_sanitize=address: tools/sanitize.sh asan-emu, a memory
 * check of every kernel's indexing, as compute-sanitizer is on a GPU) each switch tells ASan which stack runs
 * next, and a fiber stack's shadow is cleared before reuse (frames left by switching away are never popped). */
#if defined(__SANITIZE_ADDRESS__)
#include <pthread.h>
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

namespace {

enum FiberState { FIBER_RUN, FIBER_AT_BLOCK, FIBER_AT_WARP, FIBER_AT_CLUSTER, FIBER_DONE };

struct Fiber {
  void *sp;                        /* saved stack pointer while switched out */
  FiberState state;
  uint3 tid;                       /* its threadIdx, set at each switch to it (divisions once per block) */
  int bank;                        /* lane slot bank of its next warp exchange (emu_exchange_bank) */
  void *stack;
  bool dependency_waited;          /* grid_dependency_wait () called (cuda_compat.cuh) */
};

const size_t kStackBytes = 256 * 1024;

std::vector<Fiber> fibers;                                /* block r of a cluster: [r n, (r + 1) n) */
std::vector<std::array<uint8_t, 64>> lane_slots;          /* what a lane hands its warp: 2 banks of 32 bytes */
void *scheduler_sp;
int current_fiber;                                        /* index in fibers (the cluster's blocks together) */
const std::function<void ()> *current_body;
unsigned long launches;
bool in_kernel;

/* cp.async copies of one thread: committed groups (oldest first) and the open one; used in "late" mode */
struct AsyncCopy {
  void *dst;
  const void *src;
  size_t size, zfill;
};
struct ThreadCopies {
  std::vector<std::vector<AsyncCopy>> committed;
  std::vector<AsyncCopy> open;
};
std::vector<ThreadCopies> thread_copies;     /* per fiber, emptied at every block start */

/* A thread's open group of asynchronous operations (cp.async copies, wgmma) joins its committed ones. */
template <typename Groups>
void
commit_open_group (Groups &t)
{
  t.committed.push_back (std::move (t.open));
  t.open.clear ();
}

/* wgmma.mma_async operations of one thread: committed groups (oldest first) and the open one */
struct WgmmaOp {
  float *d;
  uint64_t desc_a, desc_b;
  int n;                           /* N: 128 or 256 (columns of D, rows of B) */
  int scale_d;
  bool bf16;
  float at_issue[128];             /* A B^T for this thread's n / 2 accumulators, computed at issue */
};
struct ThreadWgmma {
  std::vector<std::vector<WgmmaOp>> committed;
  std::vector<WgmmaOp> open;
  long issued;                     /* wgmma count of this thread, for the warpgroup uniformity check */
};
std::vector<ThreadWgmma> thread_wgmma;       /* per fiber, emptied at every block start */
/* (first fiber of the warpgroup, k-th wgmma) -> the first thread's descriptors, scale and N */
std::map<std::pair<int, long>, std::array<uint64_t, 4>> wgmma_issued;

/* Who last wrote each 4-byte word of the cluster's dynamic shared memory by cp.async (fiber, -1: nobody since
 * the block start) and that fiber's fence.proxy.async count then: wgmma reads through the async proxy, so a
 * word whose writer has not fenced since is stale to it on a GPU (plain stores are not seen here). Words, not
 * bytes: a cp.async copies 4, 8 or 16 bytes to an address aligned to its size, so a word has one writer, and
 * the record is a quarter the size (per byte, wgmma's operand reads missed the cache on it). Reset at a
 * block start only when a cp.async wrote it since the last reset. */
struct AsyncWrite {
  int fiber;
  unsigned fences;
};
std::vector<AsyncWrite> smem_writes;
bool smem_writes_dirty;
std::vector<unsigned> proxy_fences;          /* per fiber: fence.proxy.async calls since its block start */

bool
copies_late (void)
{
  static int late = -1;
  if (late < 0)
    {
      const char *s = getenv ("DDPM_CUDA_EMU_CP_ASYNC");
      late = s != nullptr && strcmp (s, "late") == 0;
    }
  return late == 1;
}

void note_async_write (const void *dst, size_t n);

void
do_copy (const AsyncCopy &c)
{
  note_async_write (c.dst, c.size);
  memcpy (c.dst, c.src, c.size - c.zfill);
  memset ((char *) c.dst + (c.size - c.zfill), 0, c.zfill);
}

/* Lands every committed group of the current thread but the newest `keep`. */
void
land_groups (size_t keep)
{
  ThreadCopies &t = thread_copies[(size_t) current_fiber];
  while (t.committed.size () > keep)
    {
      for (const AsyncCopy &c : t.committed.front ())
        do_copy (c);
      t.committed.erase (t.committed.begin ());
    }
}

struct EmuStream {
  bool capturing = false;
  std::vector<std::function<void ()>> recorded;
};

struct EmuGraph {
  std::vector<std::function<void ()>> ops;
};

EmuStream default_stream;
cudaError_t last_error = cudaSuccess;

/* The maps are never destroyed: at exit, LeakSanitizer (a sanitized program loading this module) runs after the
 * module's static destructors and would see every block they held as leaked. */
std::map<void *, size_t> &allocations = *new std::map<void *, size_t>;
size_t allocated_bytes;
/* Freed blocks (by size, 256-byte multiples) kept for the next cudaMalloc of that size, up to kFreeCacheBytes:
 * fresh pages from the system fault on cudaMalloc's 0xFF fill, which was 6 % of test_cuda --quick's time. */
std::multimap<size_t, void *> &free_blocks = *new std::multimap<size_t, void *>;
size_t free_block_bytes;
const size_t kFreeCacheBytes = (size_t) 1 << 30;

/* What an allocation of `bytes` takes: whole 256-byte units (cudaMalloc's alignment) */
size_t
allocation_size (size_t bytes)
{
  return (bytes + 255) & ~(size_t) 255;
}

size_t
memory_limit (void)
{
  const char *s = getenv ("DDPM_CUDA_EMU_MEM_LIMIT");
  return s != nullptr ? (size_t) strtoull (s, nullptr, 10) : (size_t) 8 << 30;
}

EmuStream *
stream_of (cudaStream_t s)
{
  return s == nullptr ? &default_stream : reinterpret_cast<EmuStream *> (s);
}

uint3
thread_index (int linear)
{
  uint3 t;
  t.x = linear % blockDim.x;
  t.y = (linear / blockDim.x) % blockDim.y;
  t.z = linear / (blockDim.x * blockDim.y);
  return t;
}

void emu_abort_missing_wait (void);
[[noreturn]] void emu_abort (const char *what);

/* The scheduler's pass over one warp's lanes (run_block): the fibers [lo, lo + lanes) of the block at
 * `f` (fiber index base), in order or reversed, j visited so far. A lane that reaches a barrier or its end
 * switches straight to the next runnable lane of the pass, and the last one back to the scheduler: one
 * switch per lane, where a round trip through the scheduler took two. */
struct LanePass {
  Fiber *f;
  int base, lo, lanes, j;
  bool reverse;
};
LanePass lane_pass;

/* The next lane of the pass still to run (its state is only its own to change, so it is read here, at its
 * turn, as a loop in the scheduler would), or -1. */
int
next_in_pass (void)
{
  LanePass &p = lane_pass;
  while (p.j < p.lanes)
    {
      const int k = p.j++, i = p.reverse ? p.lo + p.lanes - 1 - k : p.lo + k;
      if (p.f[i].state == FIBER_RUN)
        return i;
    }
  return -1;
}

#if EMU_ASAN
/* The stack of the thread that runs the scheduler (the launching thread's own). */
void
scheduler_stack (const void **bottom, size_t *size)
{
  static thread_local const void *b;
  static thread_local size_t n;
  if (b == nullptr)
    {
      pthread_attr_t attr;
      void *addr = nullptr;
      if (pthread_getattr_np (pthread_self (), &attr) == 0)
        {
          pthread_attr_getstack (&attr, &addr, &n);
          pthread_attr_destroy (&attr);
        }
      b = addr;
    }
  *bottom = b;
  *size = n;
}
#endif

/* emu_ctx_switch to the scheduler (fiber NULL) or a fiber; `ending`: the caller's fiber has ended (it never
 * resumes). Under ASan: announced with the target's stack, and the switch back acknowledged. */
void
switch_to (void **from, void *to_sp, const Fiber *fiber, bool ending)
{
#if EMU_ASAN
  const void *bottom = fiber != nullptr ? fiber->stack : nullptr;
  size_t size = kStackBytes;
  if (fiber == nullptr)
    scheduler_stack (&bottom, &size);
  void *fake_stack = nullptr;
  __sanitizer_start_switch_fiber (ending ? nullptr : &fake_stack, bottom, size);
  emu_ctx_switch (from, to_sp);
  __sanitizer_finish_switch_fiber (fake_stack, nullptr, nullptr);
#else
  (void) fiber;
  (void) ending;
  emu_ctx_switch (from, to_sp);
#endif
}

/* Switches to the pass's next lane, or back to the scheduler when none is left, saving the caller's stack
 * pointer in *from: a fiber's, or &scheduler_sp when the scheduler starts the pass (then, with no lane to
 * run, it just returns). ending: the calling fiber has ended. */
void
run_next_in_pass (void **from, bool ending = false)
{
  const int i = next_in_pass ();
  if (i < 0)
    {
      if (from != &scheduler_sp)
        switch_to (from, scheduler_sp, nullptr, ending);
      return;
    }
  current_fiber = lane_pass.base + i;
  threadIdx = lane_pass.f[i].tid;
  switch_to (from, lane_pass.f[i].sp, &lane_pass.f[i], ending);
}

[[noreturn]] void
fiber_main (void)
{
#if EMU_ASAN
  __sanitizer_finish_switch_fiber (nullptr, nullptr, nullptr);   /* the first entry of this fiber's stack */
#endif
  (*current_body) ();
  if (!fibers[current_fiber].dependency_waited)
    emu_abort_missing_wait ();
  /* copies still in flight at the thread's end land then (committed ones, then the open group) */
  land_groups (0);
  for (const AsyncCopy &c : thread_copies[(size_t) current_fiber].open)
    do_copy (c);
  thread_copies[(size_t) current_fiber].open.clear ();
  const ThreadWgmma &w = thread_wgmma[(size_t) current_fiber];
  if (!w.open.empty () || !w.committed.empty ())
    emu_abort ("a thread ended with wgmma operations not waited for (wgmma.wait_group)");
  Fiber &f = fibers[current_fiber];
  f.state = FIBER_DONE;
  run_next_in_pass (&f.sp, true);
  __builtin_unreachable ();
}

/* A fresh fiber's stack as emu_ctx_switch expects it: six register slots, then fiber_main as the return
 * address, then a null "return address" of fiber_main itself, which is entered with rsp = 8 mod 16 as
 * after a call. */
void
fiber_init (Fiber &f)
{
#if EMU_ASAN
  ASAN_UNPOISON_MEMORY_REGION (f.stack, kStackBytes);
#endif
  uintptr_t top = ((uintptr_t) f.stack + kStackBytes) & ~(uintptr_t) 15;
  void **p = reinterpret_cast<void **> (top);
  p[-1] = nullptr;
  p[-2] = reinterpret_cast<void *> (&fiber_main);
  for (int i = 3; i <= 8; i++)
    p[-i] = nullptr;
  f.sp = &p[-8];
}

[[noreturn]] void
emu_abort (const char *what)
{
  fprintf (stderr, "cuda-emu: %s (block %u,%u,%u of grid %u,%u,%u; block dim %u,%u,%u)\n", what, blockIdx.x,
           blockIdx.y, blockIdx.z, gridDim.x, gridDim.y, gridDim.z, blockDim.x, blockDim.y, blockDim.z);
  abort ();
}

void
yield_to_scheduler (FiberState state)
{
  if (!in_kernel)
    emu_abort ("barrier outside a kernel");
  Fiber &f = fibers[current_fiber];
  if (!f.dependency_waited)
    emu_abort_missing_wait ();
  f.state = state;
  run_next_in_pass (&f.sp);
}

/* Every kernel must call grid_dependency_wait () before anything else: with programmatic dependent launch
 * on a GPU, one that does not may read its inputs before the kernel that writes them has finished. */
void
emu_abort_missing_wait (void)
{
  emu_abort ("a kernel thread reached a barrier or its end without calling grid_dependency_wait () first");
}

/* Fresh fibers [base, base + n) for a block of n threads. */
void
start_block (int base, int n)
{
  const int total = base + n;
  if ((int) fibers.size () < total)
    {
      size_t old = fibers.size ();
      fibers.resize (total);
      for (size_t i = old; i < (size_t) total; i++)
        {
          fibers[i].stack = mmap (nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
          if (fibers[i].stack == MAP_FAILED)
            emu_abort ("cannot map a fiber stack");
        }
    }
  if (lane_slots.size () < (((size_t) n + 31) & ~(size_t) 31))
    lane_slots.resize (((size_t) n + 31) & ~(size_t) 31);
  if ((int) thread_copies.size () < total)
    thread_copies.resize (total);
  if ((int) thread_wgmma.size () < total)
    thread_wgmma.resize (total);
  if ((int) proxy_fences.size () < total)
    proxy_fences.resize (total);
  if (base == 0)
    wgmma_issued.clear ();
  for (int i = base; i < total; i++)
    {
      fiber_init (fibers[i]);
      fibers[i].state = FIBER_RUN;
      fibers[i].tid = thread_index (i - base);
      fibers[i].bank = 0;
      fibers[i].dependency_waited = false;
      thread_copies[i].committed.clear ();
      thread_copies[i].open.clear ();
      thread_wgmma[i].committed.clear ();
      thread_wgmma[i].open.clear ();
      thread_wgmma[i].issued = 0;
      proxy_fences[i] = 0;
    }
}

/* Runs the block whose n fibers are [base, base + n) (blockIdx set) until every thread has ended or waits at
 * the cluster barrier; true when all have ended. */
bool
run_block (int base, int n)
{
  /* Between two __syncthreads each warp in turn runs its whole stretch (its shuffles released as its lanes
   * meet), so one warp's writes to shared memory (plain or cp.async) all land before the next warp reads:
   * a missing barrier between a warp refilling a buffer and another still reading it shows. Odd rounds
   * reverse the warp order; the lane order alternates at each of a warp's own barriers too. */
  Fiber *const f = &fibers[base];
  const int nw = (n + 31) / 32;
  for (int round = 0;; round++)
    {
      for (int jw = 0; jw < nw; jw++)
        {
          const int w = (round & 1) ? nw - 1 - jw : jw, lo = 32 * w, lanes = n - lo < 32 ? n - lo : 32;
          for (int pass = 0;; pass++)
            {
              /* the lanes run one after another, each switching to the next (run_next_in_pass) */
              lane_pass = LanePass { f, base, lo, lanes, 0, ((round + pass) & 1) != 0 };
              run_next_in_pass (&scheduler_sp);
              int waiting = 0, done = 0;
              for (int l = 0; l < lanes; l++)
                {
                  waiting += f[lo + l].state == FIBER_AT_WARP;
                  done += f[lo + l].state == FIBER_DONE;
                }
              if (waiting == 0 || waiting + done != lanes)
                break;                  /* at __syncthreads or done (or stuck: checked below) */
              if (done > 0)
                emu_abort ("warp shuffle while some lanes of the warp have exited");
              for (int l = 0; l < lanes; l++)
                f[lo + l].state = FIBER_RUN;
            }
        }
      int live = 0, at_block = 0, at_cluster = 0;
      for (int i = 0; i < n; i++)
        {
          live += f[i].state != FIBER_DONE;
          at_block += f[i].state == FIBER_AT_BLOCK;
          at_cluster += f[i].state == FIBER_AT_CLUSTER;
        }
      if (live == 0)
        return true;
      if (at_cluster == live)
        return false;
      if (at_block == live)
        {
          for (int i = 0; i < n; i++)
            if (f[i].state == FIBER_AT_BLOCK)
              f[i].state = FIBER_RUN;
          continue;
        }
      emu_abort ("threads of one block wait at different barriers (divergent __syncthreads, cluster barrier or "
                 "shuffle)");
    }
}

/* The launch's dynamic shared memory (extern __shared__ on a GPU): one buffer per block of a cluster (one
 * without clusters), as the cluster's blocks run one after another, filled with 0xff bytes (NaN in fp16, bf16
 * and float) at every block start and again at its end, so a kernel that reads what no thread of its block
 * wrote, or the shared memory of a cluster's block that has ended, gets NaN here, not stale values. */
std::vector<unsigned char> dynamic_smem_store;
unsigned char *dynamic_smem_first;     /* block rank 0's, 128-byte aligned */
size_t dynamic_smem_stride;            /* bytes from one rank's buffer to the next (a multiple of 128) */
size_t dynamic_smem_bytes;
unsigned cluster_size = 1, current_rank;

unsigned char *
rank_smem (unsigned rank)
{
  return dynamic_smem_first + rank * dynamic_smem_stride;
}

/* Blocks run cluster by cluster (clusters of cluster_z blocks along z, in grid order). Inside a cluster,
 * each block runs until all its threads wait at the cluster barrier (or have ended), in rank order, reversed
 * at odd phases; when every thread of the cluster waits there, all go on (a block that ends while the others
 * wait aborts: a GPU would hang). So a block that reads another's shared memory without a cluster barrier in
 * between sees it unwritten (NaN) or, after that block ended, poisoned (NaN) again. */
void
run_kernel (dim3 grid, dim3 block, size_t smem, unsigned cluster_z, const std::function<void ()> &body)
{
  dynamic_smem_stride = (smem + 127) / 128 * 128;
  dynamic_smem_store.resize (cluster_z * dynamic_smem_stride + 128);
  dynamic_smem_first = dynamic_smem_store.data () + (128 - (uintptr_t) dynamic_smem_store.data () % 128) % 128;
  dynamic_smem_bytes = smem;
  cluster_size = cluster_z;
  gridDim = grid;
  blockDim = block;
  current_body = &body;
  const int n = (int) (block.x * block.y * block.z);
  in_kernel = true;
  for (unsigned z0 = 0; z0 < grid.z; z0 += cluster_z)
    for (unsigned y = 0; y < grid.y; y++)
      for (unsigned x = 0; x < grid.x; x++)
        {
          std::vector<bool> ended (cluster_z, false);
          if (smem_writes_dirty || smem_writes.size () != cluster_z * dynamic_smem_stride / 4)
            smem_writes.assign (cluster_z * dynamic_smem_stride / 4, AsyncWrite { -1, 0 });
          smem_writes_dirty = false;
          for (unsigned r = 0; r < cluster_z; r++)
            {
              memset (rank_smem (r), 0xff, dynamic_smem_bytes);
              start_block ((int) r * n, n);
            }
          for (int phase = 0;; phase++)
            {
              unsigned live = 0;
              for (unsigned j = 0; j < cluster_z; j++)
                {
                  const unsigned r = (phase & 1) ? cluster_z - 1 - j : j;
                  if (ended[r])
                    continue;
                  blockIdx.x = x;
                  blockIdx.y = y;
                  blockIdx.z = z0 + r;
                  current_rank = r;
                  ended[r] = run_block ((int) r * n, n);
                  if (ended[r])
                    memset (rank_smem (r), 0xff, dynamic_smem_bytes);
                  else
                    live++;
                }
              if (live == 0)
                break;
              if (live < cluster_z)     /* on a GPU the barrier would wait for the block that left */
                emu_abort ("a block of a cluster ended while others wait at a cluster barrier");
              /* every thread of the cluster waits at the cluster barrier: release them */
              for (int i = 0; i < (int) cluster_z * n; i++)
                if (fibers[i].state == FIBER_AT_CLUSTER)
                  fibers[i].state = FIBER_RUN;
            }
        }
  in_kernel = false;
  cluster_size = 1;
}

} /* namespace */

unsigned char *
emu_dynamic_smem (void)
{
  if (!in_kernel)
    emu_abort ("dynamic shared memory outside a kernel");
  return rank_smem (current_rank);
}

/* ---- wgmma ---- */

namespace {

void
note_async_write (const void *dst, size_t n)
{
  const unsigned char *p = static_cast<const unsigned char *> (dst);
  if (p < dynamic_smem_first || p + n > dynamic_smem_first + 4 * smem_writes.size ())
    return;                              /* not dynamic shared memory */
  smem_writes_dirty = true;
  for (size_t i = 0, at = (size_t) (p - dynamic_smem_first) / 4; i < n / 4; i++)   /* p % 4 == 0, n % 4 == 0 */
    smem_writes[at + i] = AsyncWrite { current_fiber, proxy_fences[(size_t) current_fiber] };
}

const uint32_t kSmemWindowBase = 128;       /* shared address of the dynamic shared memory's first byte */

/* Element k (0..15) of row r (0..63 of A, 0..N-1 of B) of a K-major operand with 128-byte swizzle: rows of
 * 128 bytes, 8-row groups sbo bytes apart, 16-byte chunk c of an address stored at chunk c ^ (address bits
 * 7..9), as the hardware applies the swizzle to the shared address itself. */
/* The `bytes` bytes of an operand at shared-window address phys, where the async proxy sees them: inside the
 * block's dynamic shared memory (else abort), and every cp.async that wrote one of their words fenced since
 * (else abort). */
const unsigned char *
wgmma_operand_bytes (uint32_t phys, uint32_t bytes)
{
  if (phys < kSmemWindowBase || phys + bytes > kSmemWindowBase + dynamic_smem_bytes)
    emu_abort ("wgmma: an operand element lies outside the block's dynamic shared memory");
  const unsigned char *p = rank_smem (current_rank) + (phys - kSmemWindowBase);
  const size_t first = (size_t) (p - dynamic_smem_first) / 4, last = (size_t) (p + bytes - 1 - dynamic_smem_first) / 4;
  for (size_t i = first; i <= last; i++)
    if (smem_writes[i].fiber >= 0 && proxy_fences[(size_t) smem_writes[i].fiber] == smem_writes[i].fences)
      emu_abort ("wgmma: an operand written by cp.async whose thread has not run fence.proxy.async since");
  return p;
}

/* An fp16 or bf16 operand's bits as float (exact). */
float
operand_float (uint16_t bits, bool bf16)
{
  if (bf16)
    {
      __nv_bfloat16_raw h;
      h.x = bits;
      return __bfloat162float (__nv_bfloat16 (h));
    }
  __half_raw h;
  h.x = bits;
  return __half2float (__half (h));
}

float
wgmma_element (uint64_t desc, int r, int k, bool bf16)
{
  const uint32_t start = (uint32_t) (desc & 0x3fff) << 4, sbo = (uint32_t) ((desc >> 32) & 0x3fff) << 4;
  if ((desc >> 62) != 1 || ((desc >> 49) & 7) != 0)
    emu_abort ("wgmma: only 128-byte-swizzle descriptors with base offset 0 are emulated");
  const uint32_t addr = start + (uint32_t) (r >> 3) * sbo + (uint32_t) (r & 7) * 128 + (uint32_t) k * 2;
  uint16_t bits;
  memcpy (&bits, wgmma_operand_bytes (addr ^ (((addr >> 7) & 7) << 4), 2), 2);
  return operand_float (bits, bf16);
}

/* 8 fp16 values to float: with F16C in one instruction (exact, as every fp16 value is a float), else one by one
 * through cuda_fp16.h's integer code. */
__attribute__ ((target ("avx,f16c"))) void
halves_to_floats_f16c (const uint16_t *v, float *out)
{
  _mm256_storeu_ps (out, _mm256_cvtph_ps (_mm_loadu_si128 (reinterpret_cast<const __m128i *> (v))));
}

void
halves_to_floats (const uint16_t *v, float *out)
{
  static const bool f16c = __builtin_cpu_supports ("f16c") && __builtin_cpu_supports ("avx");
  if (f16c)
    {
      halves_to_floats_f16c (v, out);
      return;
    }
  for (int e = 0; e < 8; e++)
    out[e] = operand_float (v[e], false);
}

/* Elements 0..15 of row r, as wgmma_element gives them one by one: a row's 16 elements are two 16-byte chunks
 * of one 128-byte line (its k = 0 address is 16-byte aligned), which the swizzle keeps whole, so the checks
 * and the address arithmetic are done per chunk (a row whose chunks straddle two lines goes element by
 * element). Half of the emulated wgmma's time went to wgmma_element's per-element work. */
void
wgmma_row (uint64_t desc, int r, bool bf16, float *out)
{
  const uint32_t start = (uint32_t) (desc & 0x3fff) << 4, sbo = (uint32_t) ((desc >> 32) & 0x3fff) << 4;
  const uint32_t addr = start + (uint32_t) (r >> 3) * sbo + (uint32_t) (r & 7) * 128;
  if ((desc >> 62) != 1 || ((desc >> 49) & 7) != 0 || (addr >> 7) != ((addr + 31) >> 7))
    {
      for (int k = 0; k < 16; k++)
        out[k] = wgmma_element (desc, r, k, bf16);
      return;
    }
  const uint32_t swizzle = ((addr >> 7) & 7) << 4;
  for (int c = 0; c < 2; c++)
    {
      uint16_t v[8];
      memcpy (v, wgmma_operand_bytes ((addr + 16 * (uint32_t) c) ^ swizzle, 16), 16);
      if (!bf16)
        halves_to_floats (v, out + 8 * c);
      else
        for (int e = 0; e < 8; e++)
          out[8 * c + e] = operand_float (v[e], true);
    }
}

/* $DDPM_CUDA_EMU_FAULT=wgmma-n256 (tests): m64n256k16 reads B's rows in pairs swapped, as a wrong fragment
 * layout of that shape on some GPU would, so tests can show that such a tile is caught (conv_pick.cu). */
bool
wgmma_n256_fault (void)
{
  static const char *const what = getenv ("DDPM_CUDA_EMU_FAULT");
  static const bool fault = what != nullptr && strcmp (what, "wgmma-n256") == 0;
  return fault;
}

/* This thread's n / 2 elements of A (64 x 16) B^T (B: n x 16), in the accumulator fragment layout. */
void
wgmma_products (const WgmmaOp &op, float *out)
{
  const int wt = emu_linear_thread () % 128, w = wt / 32, lane = wt % 32, g = lane / 4, t = lane % 4;
  /* this thread's operands, each element read once: A rows 16 w + g (+ 8), B rows 8 j + 2 t (+ 1) */
  float a[2][16], b[64][16];
  for (int h = 0; h < 2; h++)
    wgmma_row (op.desc_a, 16 * w + g + 8 * h, op.bf16, a[h]);
  const int swap = op.n == 256 && wgmma_n256_fault () ? 1 : 0;
  for (int cj = 0; cj < op.n / 4; cj++)
    wgmma_row (op.desc_b, 8 * (cj / 2) + 2 * t + ((cj & 1) ^ swap), op.bf16, b[cj]);
  for (int i = 0; i < op.n / 2; i++)
    {
      const int j = i / 4, e = i % 4;
      const float *ar = a[e >= 2 ? 1 : 0], *bc = b[2 * j + (e & 1)];
      float sum = 0.0f;
      for (int k = 0; k < 16; k++)
        sum += ar[k] * bc[k];
      out[i] = sum;
    }
}

} /* namespace */

uint32_t
emu_smem_address (const void *p)
{
  const unsigned char *c = static_cast<const unsigned char *> (p), *mine = rank_smem (current_rank);
  if (!in_kernel || c < mine || c >= mine + dynamic_smem_bytes)
    emu_abort ("a shared address of something outside the block's dynamic shared memory");
  return kSmemWindowBase + (uint32_t) (c - mine);
}

void
emu_wgmma_m64nNk16 (float *d, int n, uint64_t desc_a, uint64_t desc_b, int scale_d, bool bf16)
{
  if (n != 128 && n != 256)
    emu_abort ("wgmma: only m64n128k16 and m64n256k16 are emulated");
  if (!in_kernel || blockDim.x * blockDim.y * blockDim.z % 128 != 0)
    emu_abort ("wgmma: outside a kernel, or a block that is not whole warpgroups");
  ThreadWgmma &tw = thread_wgmma[(size_t) current_fiber];
  const std::pair<int, long> key (current_fiber - emu_linear_thread () % 128, tw.issued++);
  const std::array<uint64_t, 4> mine = { desc_a, desc_b, (uint64_t) (scale_d != 0), (uint64_t) n };
  auto it = wgmma_issued.find (key);
  if (it == wgmma_issued.end ())
    wgmma_issued.emplace (key, mine);
  else if (it->second != mine)
    emu_abort ("wgmma: threads of one warpgroup gave different descriptors, scale-d or shapes");
  WgmmaOp op = { d, desc_a, desc_b, n, scale_d, bf16, {} };
  wgmma_products (op, op.at_issue);
  tw.open.push_back (op);
}

void
emu_fence_proxy_async (void)
{
  proxy_fences[(size_t) current_fiber]++;
}

void
emu_wgmma_commit (void)
{
  commit_open_group (thread_wgmma[(size_t) current_fiber]);
}

void
emu_wgmma_wait (int keep)
{
  ThreadWgmma &tw = thread_wgmma[(size_t) current_fiber];
  while ((int) tw.committed.size () > keep)
    {
      for (const WgmmaOp &op : tw.committed.front ())
        {
          float now[128];
          wgmma_products (op, now);
          if (memcmp (now, op.at_issue, (size_t) op.n / 2 * sizeof (float)) != 0)
            emu_abort ("wgmma: a shared-memory operand changed between wgmma.mma_async and its wgmma.wait_group");
          for (int i = 0; i < op.n / 2; i++)
            op.d[i] = (op.scale_d ? op.d[i] : 0.0f) + now[i];
        }
      tw.committed.erase (tw.committed.begin ());
    }
}

void
emu_cluster_sync (void)
{
  yield_to_scheduler (FIBER_AT_CLUSTER);
}

void *
emu_cluster_map (const void *p, unsigned rank)
{
  const unsigned char *c = static_cast<const unsigned char *> (p), *mine = rank_smem (current_rank);
  if (!in_kernel || rank >= cluster_size || c < mine || c >= mine + dynamic_smem_bytes)
    emu_abort ("cluster_map_shared: not an address in this block's dynamic shared memory, or no such rank");
  return rank_smem (rank) + (c - mine);
}

void
grid_dependency_wait (void)
{
  if (!in_kernel)
    emu_abort ("grid_dependency_wait outside a kernel");
  fibers[current_fiber].dependency_waited = true;   /* blocks run in launch order: nothing to wait for */
}

void
__syncthreads (void)
{
  yield_to_scheduler (FIBER_AT_BLOCK);
}

void
emu_warp_barrier (void)
{
  yield_to_scheduler (FIBER_AT_WARP);
}

void
__pipeline_memcpy_async (void *dst, const void *src, size_t size, size_t zfill)
{
  if (!in_kernel)
    emu_abort ("__pipeline_memcpy_async outside a kernel");
  if ((size != 4 && size != 8 && size != 16) || ((uintptr_t) dst % size) != 0 || ((uintptr_t) src % size) != 0
      || zfill > size)
    emu_abort ("__pipeline_memcpy_async: size not 4, 8 or 16, a misaligned address, or zfill > size");
  const AsyncCopy c = { dst, src, size, zfill };
  if (copies_late ())
    thread_copies[(size_t) current_fiber].open.push_back (c);
  else
    do_copy (c);
}

void
__pipeline_commit (void)
{
  commit_open_group (thread_copies[(size_t) current_fiber]);
}

void
__pipeline_wait_prior (size_t prior)
{
  land_groups (prior);
}

int
emu_exchange_bank (void)
{
  Fiber &f = fibers[current_fiber];
  f.bank ^= 1;
  return f.bank ^ 1;
}

uint8_t *
emu_lane_slot (int linear_thread, int bank)
{
  return lane_slots[(size_t) linear_thread].data () + 32 * bank;
}

int
emu_lane (void)
{
  return (int) (threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) & 31;
}

void
emu_check_failed (const char *what)
{
  emu_abort (what);
}

unsigned long
emu_launch_count (void)
{
  return launches;
}

/* $DDPM_CUDA_EMU_LAUNCHES=1: the number of kernel runs (graph replays included) on stderr at exit, to compare
 * the launches per forward of two settings. */
struct LaunchReport {
  ~LaunchReport ()
  {
    if (getenv ("DDPM_CUDA_EMU_LAUNCHES") != NULL)
      fprintf (stderr, "cuda emulator: %lu kernel runs\n", launches);
  }
} launch_report;

void
emu_enqueue (cudaStream_t stream, std::function<void ()> work)
{
  EmuStream *s = stream_of (stream);
  if (s->capturing)
    s->recorded.push_back (std::move (work));
  else
    work ();
}

/* What cudaFuncSetAttribute (MaxDynamicSharedMemorySize) allowed each kernel (default 48 KiB), and which
 * kernels may have clusters of more than 8 blocks (NonPortableClusterSizeAllowed). */
std::map<const void *, int> max_dynamic_smem;
std::map<const void *, int> nonportable_cluster;

/* Cluster sizes a launch may have: up to 8 blocks, 16 where the kernel allows non-portable sizes (H100). */
unsigned
max_cluster_size (const void *kernel)
{
  const auto np = nonportable_cluster.find (kernel);
  return np != nonportable_cluster.end () && np->second != 0 ? 16 : 8;
}

void
emu_launch (const void *kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
            std::function<void ()> body, unsigned cluster_z)
{
  const auto allowed = max_dynamic_smem.find (kernel);
  if (smem > (allowed != max_dynamic_smem.end () ? (size_t) allowed->second : (size_t) 48 * 1024))
    {
      last_error = cudaErrorInvalidValue;
      return;
    }
  const unsigned long threads = (unsigned long) block.x * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0
      || grid.y > 65535 || grid.z > 65535 || grid.x > 2147483647u || smem > 232448)
    {
      last_error = cudaErrorInvalidConfiguration;
      return;
    }
  if (cluster_z == 0 || cluster_z > max_cluster_size (kernel) || grid.z % cluster_z != 0)
    {
      last_error = cudaErrorInvalidClusterSize;
      return;
    }
  emu_enqueue (stream, [grid, block, smem, cluster_z, body] () {
    launches++;
    run_kernel (grid, block, smem, cluster_z, body);
  });
}

/* ---- runtime API subset ---- */

cudaError_t
cudaFuncSetAttribute (const void *func, enum cudaFuncAttribute attr, int value)
{
  if (attr == cudaFuncAttributeNonPortableClusterSizeAllowed && (value == 0 || value == 1))
    {
      nonportable_cluster[func] = value;
      return cudaSuccess;
    }
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > 232448)
    return cudaErrorInvalidValue;
  max_dynamic_smem[func] = value;
  return cudaSuccess;
}

cudaError_t
cudaOccupancyMaxActiveClusters (int *clusters, const void *func, const cudaLaunchConfig_t *config)
{
  unsigned cz = 1;
  for (unsigned i = 0; i < config->numAttrs; i++)
    if (config->attrs[i].id == cudaLaunchAttributeClusterDimension)
      {
        if (config->attrs[i].val.clusterDim.x != 1 || config->attrs[i].val.clusterDim.y != 1)
          return cudaErrorInvalidValue;   /* clusters along z only here */
        cz = config->attrs[i].val.clusterDim.z;
      }
  *clusters = cz >= 1 && cz <= max_cluster_size (func) ? 1 : 0;
  return cz > 16 ? cudaErrorInvalidClusterSize : cudaSuccess;
}

cudaError_t
cudaGetDeviceCount (int *count)
{
  *count = 1;
  return cudaSuccess;
}

cudaError_t
cudaSetDevice (int device)
{
  return device == 0 ? cudaSuccess : cudaErrorInvalidDevice;
}

cudaError_t
cudaGetDevice (int *device)
{
  *device = 0;
  return cudaSuccess;
}

cudaError_t
cudaGetDeviceProperties (struct cudaDeviceProp *prop, int device)
{
  memset (prop, 0, sizeof *prop);
  snprintf (prop->name, sizeof prop->name, "CUDA emulator on the CPU");
  prop->major = 9;
  prop->minor = 0;
  /* 4 SMs: small test shapes still split K and fill waves; $DDPM_CUDA_EMU_SMS=132 plans as an H100 does (launch
   * counts of a real-size forward) */
  const char *sms = getenv ("DDPM_CUDA_EMU_SMS");
  prop->multiProcessorCount = sms != NULL && atoi (sms) > 0 ? atoi (sms) : 4;
  prop->totalGlobalMem = memory_limit ();
  prop->sharedMemPerBlock = 48 * 1024;
  prop->sharedMemPerBlockOptin = 227 * 1024;
  prop->l2CacheSize = 1 << 20;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  return device == 0 ? cudaSuccess : cudaErrorInvalidDevice;
}

cudaError_t
cudaDriverGetVersion (int *v)
{
  *v = 13000;
  return cudaSuccess;
}

cudaError_t
cudaRuntimeGetVersion (int *v)
{
  *v = 13000;
  return cudaSuccess;
}

cudaError_t
cudaMalloc (void **p, size_t bytes)
{
  *p = nullptr;
  if (allocated_bytes + bytes > memory_limit ())
    return cudaErrorMemoryAllocation;
  const size_t rounded = allocation_size (bytes);
  void *m;
  const auto kept = free_blocks.find (rounded);
  if (kept != free_blocks.end ())
    {
      m = kept->second;
      free_blocks.erase (kept);
      free_block_bytes -= rounded;
    }
  else if ((m = aligned_alloc (256, rounded)) == nullptr)
    return cudaErrorMemoryAllocation;
  /* Fresh device memory holds garbage: make reads of unwritten memory visible. */
  memset (m, 0xFF, bytes);
  allocations[m] = bytes;
  allocated_bytes += bytes;
  *p = m;
  return cudaSuccess;
}

cudaError_t
cudaFree (void *p)
{
  if (p == nullptr)
    return cudaSuccess;
  auto it = allocations.find (p);
  if (it == allocations.end ())
    return cudaErrorInvalidValue;
  allocated_bytes -= it->second;
  const size_t rounded = allocation_size (it->second);
  allocations.erase (it);
  if (free_block_bytes + rounded <= kFreeCacheBytes)
    {
      free_blocks.emplace (rounded, p);
      free_block_bytes += rounded;
    }
  else
    free (p);
  return cudaSuccess;
}

cudaError_t
cudaMallocHost (void **p, size_t bytes)
{
  *p = aligned_alloc (256, allocation_size (bytes));
  return *p != nullptr ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t
cudaFreeHost (void *p)
{
  free (p);
  return cudaSuccess;
}

cudaError_t
cudaMemGetInfo (size_t *free_bytes, size_t *total)
{
  *total = memory_limit ();
  *free_bytes = *total - allocated_bytes;
  return cudaSuccess;
}

cudaError_t
cudaMemcpy (void *dst, const void *src, size_t n, enum cudaMemcpyKind kind)
{
  (void) kind;
  memcpy (dst, src, n);
  return cudaSuccess;
}

cudaError_t
cudaMemcpyAsync (void *dst, const void *src, size_t n, enum cudaMemcpyKind kind, cudaStream_t stream)
{
  (void) kind;
  emu_enqueue (stream, [dst, src, n] () { memcpy (dst, src, n); });
  return cudaSuccess;
}

cudaError_t
cudaMemset (void *dst, int value, size_t n)
{
  memset (dst, value, n);
  return cudaSuccess;
}

cudaError_t
cudaMemsetAsync (void *dst, int value, size_t n, cudaStream_t stream)
{
  emu_enqueue (stream, [dst, value, n] () { memset (dst, value, n); });
  return cudaSuccess;
}

cudaError_t
cudaStreamCreateWithFlags (cudaStream_t *stream, unsigned int flags)
{
  (void) flags;
  *stream = reinterpret_cast<cudaStream_t> (new EmuStream);
  return cudaSuccess;
}

cudaError_t
cudaStreamDestroy (cudaStream_t stream)
{
  delete stream_of (stream);
  return cudaSuccess;
}

cudaError_t
cudaStreamSynchronize (cudaStream_t stream)
{
  return stream_of (stream)->capturing ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}

cudaError_t
cudaDeviceSynchronize (void)
{
  return cudaSuccess;
}

cudaError_t
cudaStreamBeginCapture (cudaStream_t stream, enum cudaStreamCaptureMode mode)
{
  (void) mode;
  EmuStream *s = stream_of (stream);
  if (s->capturing)
    return cudaErrorIllegalState;
  s->capturing = true;
  s->recorded.clear ();
  return cudaSuccess;
}

cudaError_t
cudaStreamEndCapture (cudaStream_t stream, cudaGraph_t *graph)
{
  EmuStream *s = stream_of (stream);
  if (!s->capturing)
    return cudaErrorIllegalState;
  s->capturing = false;
  EmuGraph *g = new EmuGraph;
  g->ops.swap (s->recorded);
  *graph = reinterpret_cast<cudaGraph_t> (g);
  return cudaSuccess;
}

cudaError_t
cudaStreamIsCapturing (cudaStream_t stream, enum cudaStreamCaptureStatus *status)
{
  *status = stream_of (stream)->capturing ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}

cudaError_t
cudaGraphInstantiate (cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags)
{
  (void) flags;
  EmuGraph *copy = new EmuGraph (*reinterpret_cast<EmuGraph *> (graph));
  *exec = reinterpret_cast<cudaGraphExec_t> (copy);
  return cudaSuccess;
}

cudaError_t
cudaGraphLaunch (cudaGraphExec_t exec, cudaStream_t stream)
{
  EmuGraph *g = reinterpret_cast<EmuGraph *> (exec);
  for (auto &op : g->ops)
    emu_enqueue (stream, op);
  return cudaSuccess;
}

cudaError_t
cudaGraphExecDestroy (cudaGraphExec_t exec)
{
  delete reinterpret_cast<EmuGraph *> (exec);
  return cudaSuccess;
}

cudaError_t
cudaGraphDestroy (cudaGraph_t graph)
{
  delete reinterpret_cast<EmuGraph *> (graph);
  return cudaSuccess;
}

/* An event is the host time (ms) at which the stream reached it: the emulator runs work in order, so
 * cudaEventElapsedTime gives emulated (CPU) times. */
cudaError_t
cudaEventCreateWithFlags (cudaEvent_t *event, unsigned int flags)
{
  (void) flags;
  *event = reinterpret_cast<cudaEvent_t> (new double (0.0));
  return cudaSuccess;
}

cudaError_t
cudaEventDestroy (cudaEvent_t event)
{
  delete reinterpret_cast<double *> (event);
  return cudaSuccess;
}

cudaError_t
cudaEventRecord (cudaEvent_t event, cudaStream_t stream)
{
  double *when = reinterpret_cast<double *> (event);
  emu_enqueue (stream, [when] () {
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    *when = ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
  });
  return cudaSuccess;
}

cudaError_t
cudaEventElapsedTime (float *ms, cudaEvent_t start, cudaEvent_t end)
{
  *ms = (float) (*reinterpret_cast<double *> (end) - *reinterpret_cast<double *> (start));
  return cudaSuccess;
}

cudaError_t
cudaEventSynchronize (cudaEvent_t event)
{
  (void) event;
  return cudaSuccess;
}

cudaError_t
cudaEventQuery (cudaEvent_t event)
{
  (void) event;
  return cudaSuccess;
}

cudaError_t
cudaGetLastError (void)
{
  cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}

cudaError_t
cudaPeekAtLastError (void)
{
  return last_error;
}

const char *
cudaGetErrorString (cudaError_t error)
{
  switch (error)
    {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorIllegalState: return "illegal state";
    default: return "emulated CUDA error";
    }
}

const char *
cudaGetErrorName (cudaError_t error)
{
  switch (error)
    {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    default: return "cudaErrorUnknown";
    }
}
