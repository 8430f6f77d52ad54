/* fuzz_torch_zip.c: libFuzzer target, see fuzz_parsers.h (fuzz_torch_zip) and tools/fuzz.sh. */
#include "fuzz_parsers.h"
#include "fuzz_target.h"

FUZZ_TARGET (fuzz_torch_zip)
