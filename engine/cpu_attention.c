/* cpu_attention.c: not yet written. */
#include "ddpm.h"
