/* fuzz_target.h: the libFuzzer entry points around one fuzz_<target> function of fuzz_parsers.h.
 *
 * A run fails (abort: libFuzzer keeps the input) when the parser crashes, trips a sanitizer, leaks, hangs,
 * logs a GLib critical or warning (g_return_if_fail on input means a missed check), or refuses the input
 * without a GError of the DDPM_ERROR domain. */
#pragma once

#include <glib.h>
#include <stdint.h>
#include <stdlib.h>

#define FUZZ_TARGET(fn)                                                                                  \
  int LLVMFuzzerInitialize (int *argc, char ***argv);                                                    \
  int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);                                         \
  int LLVMFuzzerInitialize (int *argc, char ***argv)                                                     \
  {                                                                                                      \
    g_log_set_always_fatal (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING);             \
    return 0;                                                                                            \
  }                                                                                                      \
  int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)                                          \
  {                                                                                                      \
    GError *error = NULL;                                                                                \
    gboolean ok = fn (data, size, &error);                                                               \
    if (ok != (error == NULL) || (error != NULL && error->domain != DDPM_ERROR)) {                       \
      g_printerr ("fuzz: %s returned %d with error %s\n", #fn, ok, error ? error->message : "(none)");    \
      abort ();                                                                                          \
    }                                                                                                    \
    g_clear_error (&error);                                                                              \
    return 0;                                                                                            \
  }
