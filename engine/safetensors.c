/* safetensors.c: not yet written. */
#include "ddpm.h"
