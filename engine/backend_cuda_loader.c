/* backend_cuda_loader.c: not yet written. */
#include "ddpm.h"
