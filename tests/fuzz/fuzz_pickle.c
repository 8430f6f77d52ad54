/* fuzz_pickle.c: libFuzzer target, see fuzz_parsers.h (fuzz_pickle) and tools/fuzz.sh. */
#include "fuzz_parsers.h"
#include "fuzz_target.h"

FUZZ_TARGET (fuzz_pickle)
