/* fuzz_safetensors.c: libFuzzer target, see fuzz_parsers.h (fuzz_safetensors) and tools/fuzz.sh. */
#include "fuzz_parsers.h"
#include "fuzz_target.h"

FUZZ_TARGET (fuzz_safetensors)
