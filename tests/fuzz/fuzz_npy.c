/* fuzz_npy.c: libFuzzer target, see fuzz_parsers.h (fuzz_npy) and tools/fuzz.sh. */
#include "fuzz_parsers.h"
#include "fuzz_target.h"

FUZZ_TARGET (fuzz_npy)
