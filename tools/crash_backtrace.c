/* crash_backtrace.c: an LD_PRELOAD library that prints a backtrace on SIGSEGV / SIGBUS / SIGFPE / SIGABRT.
 *
 * Why: the lent GPU machine has no gdb and no core files come back from it; a crash there is otherwise
 * one "exit 139". Each frame is printed as module(symbol+offset) [address] by glibc's
 * backtrace_symbols_fd; frames in static functions show module(+offset), which `addr2line -f -e MODULE
 * OFFSET` resolves here against the same build. Then the signal's default action runs (the exit status
 * stays 128 + signal). Built by tools/gpu_prepare.sh into build-gpu/carry/lib; used by tests/gpu/run.sh
 * only when a step crashes (rerun with LD_PRELOAD). */
#define _GNU_SOURCE
#include <execinfo.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static char alt_stack[1 << 16];

static void
on_crash (int sig, siginfo_t *info, void *ucontext)
{
  (void) ucontext;
  char line[96];
  static const char hex[] = "0123456789abcdef";
  const char *name = sig == SIGSEGV ? "SIGSEGV" : sig == SIGBUS ? "SIGBUS" : sig == SIGFPE ? "SIGFPE" : "SIGABRT";
  size_t n = 0;
  for (const char *s = "crash_backtrace: "; *s; s++)
    line[n++] = *s;
  for (const char *s = name; *s; s++)
    line[n++] = *s;
  for (const char *s = " at address 0x"; *s; s++)
    line[n++] = *s;
  unsigned long a = (unsigned long) info->si_addr;
  for (int shift = 60; shift >= 0; shift -= 4)
    line[n++] = hex[(a >> shift) & 15];
  line[n++] = '\n';
  if (write (STDERR_FILENO, line, n) < 0)
    return;
  void *frames[64];
  int depth = backtrace (frames, 64);
  backtrace_symbols_fd (frames, depth, STDERR_FILENO);
  signal (sig, SIG_DFL);
  raise (sig);
}

__attribute__ ((constructor)) static void
install (void)
{
  void *warm[1];
  backtrace (warm, 1);                  /* loads libgcc_s now, not inside the handler */
  stack_t ss = { .ss_sp = alt_stack, .ss_size = sizeof alt_stack, .ss_flags = 0 };
  sigaltstack (&ss, NULL);
  struct sigaction sa;
  memset (&sa, 0, sizeof sa);
  sa.sa_sigaction = on_crash;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset (&sa.sa_mask);
  const int sigs[] = { SIGSEGV, SIGBUS, SIGFPE, SIGABRT };
  for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
    sigaction (sigs[i], &sa, NULL);
}
