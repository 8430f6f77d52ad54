/* backend_cpu.c: not yet written. */
#include "ddpm.h"
