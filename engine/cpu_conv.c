/* cpu_conv.c: not yet written. */
#include "ddpm.h"
