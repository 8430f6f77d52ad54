/* torch_zip.c: not yet written. */
#include "ddpm.h"
